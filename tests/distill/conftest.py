"""The API fixture the route tests share with tests/api."""

from tests.api.conftest import recording_server  # noqa: F401

"""The API fixture the es route tests share with tests/api."""

from tests.api.conftest import recording_server  # noqa: F401

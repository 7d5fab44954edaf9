"""Property-based tests of the API from its own OpenAPI document: no input makes it answer 500,
and every response matches what the document declares (schemathesis's checks).

One check is left out: "schema-valid data is accepted". Some rules are not expressible in the
schema (an llm proposer needs an endpoint configured on the server; a webhook URL must resolve to a
public address), so a schema-valid run can rightly be refused with 422.

The API under test is idle: its jobs go to a broker no worker reads, so a generated run (even `preset: paper`)
is recorded and never trained. Generated webhook hosts are pointed at loopback before the request is sent: the
test resolves no name through DNS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.settings import Settings
from tests.api.conftest import ApiServer, serve
from tests.conftest import PrivateRedis


@pytest.fixture
def idle_api(postgres_database: Callable[[], str], suite_redis: PrivateRedis, cache_dir: Path) -> Iterator[ApiServer]:
    """The API with Celery on a broker no worker reads: every run it accepts waits, none trains."""
    suite_redis.client().flushdb()
    yield from serve(Settings(database_url=postgres_database(), broker_url=suite_redis.url, cache_dir=cache_dir,
                              webhook_allowed_hosts="127.0.0.1"))
    suite_redis.client().flushdb()


def loopback_webhook(body: object) -> None:
    """Point a generated run's webhook at loopback (its path and query kept), so no host name is resolved."""
    webhook = body.get("webhook") if isinstance(body, dict) else None
    url = webhook.get("url") if isinstance(webhook, dict) else None
    if isinstance(url, str):
        try:
            parts = urlsplit(url)
            webhook["url"] = urlunsplit((parts.scheme, "127.0.0.1:9", parts.path, parts.query, ""))
        except ValueError:  # not even a URL: the API refuses it without resolving anything
            pass


def test_no_generated_request_makes_the_api_fail(idle_api: ApiServer) -> None:
    api = idle_api
    key = api.new_key("schemathesis")
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    tried = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/events"):
            continue  # an endless stream by design

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            loopback_webhook(case.body)
            case.call_and_validate(headers={"Authorization": f"Bearer {key}"},
                                   excluded_checks=[positive_data_acceptance])

        check()
        tried.append(f"{operation.method.upper()} {operation.path}")
    assert len(tried) >= 10, tried

"""A live worker keeps its job (the heartbeat renews the lease past its length; only a dead worker's job is taken
over), and /readyz answers 503 naming what is down."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.api.app import create_app
from service.db import make_engine, make_session_factory, session_scope, upgrade_database
from service.db.models import Job
from service.runs.jobs import claim
from service.runtime import build_runtime
from service.settings import Settings
from tests.conftest import free_port
from tests.db.test_db_jobs import add_job

LEASE = 0.9  # seconds: the heartbeat beats every LEASE / 3


def test_a_live_workers_long_job_is_never_claimed_twice(session_factory: sessionmaker[Session],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claim, "LEASE_SECONDS", LEASE)
    job_id = add_job(session_factory)
    assert claim.claim_batch(session_factory, job_id, "worker-a", 1) is not None
    with claim.Heartbeat(session_factory, [job_id], "worker-a"):
        deadline = time.monotonic() + 4 * LEASE  # the job runs four lease lengths
        while time.monotonic() < deadline:
            assert claim.claim_batch(session_factory, job_id, "worker-b", 1) is None, "a live worker lost its job"
            time.sleep(LEASE / 5)
    with session_scope(session_factory) as session:
        job = session.get(Job, job_id)
        assert (job.lease_owner, job.attempts) == ("worker-a", 1)
    time.sleep(LEASE * 1.2)  # no heartbeat any more: the lease lapses as a dead worker's would
    assert claim.claim_batch(session_factory, job_id, "worker-b", 1) is not None


def test_readyz_answers_503_naming_what_is_down(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'ready.db'}", broker_url=None, cache_dir=tmp_path)
    upgrade_database(settings.database_url)
    runtime = build_runtime(settings, local_workers=1)
    try:
        with TestClient(create_app(runtime)) as client:
            up = client.get("/readyz")
        down = replace(
            runtime, settings=settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"}),
            factory=make_session_factory(make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")))
        with TestClient(create_app(down)) as client:
            unready = client.get("/readyz")
    finally:
        runtime.executor.close()
    assert (up.status_code, up.json()["checks"]) == (200, {"database": "ok"})
    assert unready.status_code == 503
    assert unready.json() == {"status": "unavailable", "checks": {"database": "unreachable: OperationalError",
                                                                  "broker": "unreachable: ConnectionError"}}

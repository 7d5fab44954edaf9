"""Claiming a job: a conditional UPDATE gives it to exactly one of several concurrent workers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from service.db import claim_job, make_session_factory, session_scope, utcnow
from service.db.models import Job, Run
from workers.vocabulary import JobKind, JobStatus


def add_job(factory: sessionmaker[Session]) -> str:
    with session_scope(factory) as session:
        run = Run(target="lpo", profile="smoke", seeds_per_eval=1)
        session.add(run)
        session.flush()
        job = Job(run_id=run.id, kind=JobKind.PROPOSE, dedupe_key=f"propose:{run.id}:0")
        session.add(job)
        session.flush()
        return job.id


def test_claim_once_then_again_after_the_lease_expires(session_factory: sessionmaker[Session]) -> None:
    job_id = add_job(session_factory)
    with session_scope(session_factory) as session:
        assert claim_job(session, job_id, "worker-a", lease_seconds=60)
    with session_scope(session_factory) as session:
        assert not claim_job(session, job_id, "worker-b", lease_seconds=60)
        job = session.get(Job, job_id)
        assert (job.status, job.lease_owner, job.attempts) == (JobStatus.CLAIMED, "worker-a", 1)
        job.lease_until = utcnow() - timedelta(seconds=1)  # worker-a died
    with session_scope(session_factory) as session:
        assert claim_job(session, job_id, "worker-b", lease_seconds=60)
        job = session.get(Job, job_id)
        assert (job.lease_owner, job.attempts) == ("worker-b", 2)
        job.status = JobStatus.DONE
    with session_scope(session_factory) as session:
        assert not claim_job(session, job_id, "worker-c", lease_seconds=60)


def test_concurrent_claim_blocks_then_loses(postgres_engine: Engine) -> None:
    """The second UPDATE waits for the first one's row lock, then re-checks WHERE and matches nothing."""
    factory = make_session_factory(postgres_engine)
    job_id = add_job(factory)
    first = factory()
    try:
        assert claim_job(first, job_id, "worker-a", lease_seconds=60)  # holds the row lock, not committed
        second_result: list[bool] = []

        def second_worker() -> None:
            with session_scope(factory) as session:
                second_result.append(claim_job(session, job_id, "worker-b", lease_seconds=60))

        thread = threading.Thread(target=second_worker)
        thread.start()
        assert wait_until_blocked_on_lock(postgres_engine), "the second claim should wait for the row lock"
        assert second_result == []
        first.commit()
        thread.join(timeout=10)
        assert second_result == [False]
    finally:
        first.close()
    with session_scope(factory) as session:
        assert session.scalar(select(Job.lease_owner).where(Job.id == job_id)) == "worker-a"


def test_racing_claims_have_one_winner(db_engine: Engine) -> None:
    factory = make_session_factory(db_engine)
    workers = 4
    for _ in range(5):
        job_id = add_job(factory)
        barrier = threading.Barrier(workers)
        wins: list[str] = []

        def worker(
            name: str, job_id: str = job_id, barrier: threading.Barrier = barrier, wins: list[str] = wins
        ) -> None:
            barrier.wait()
            with session_scope(factory) as session:
                if claim_job(session, job_id, name, lease_seconds=60):
                    wins.append(name)

        threads = [threading.Thread(target=worker, args=(f"worker-{i}",)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(wins) == 1
        with session_scope(factory) as session:
            assert session.get(Job, job_id).lease_owner == wins[0]


def wait_until_blocked_on_lock(engine: Engine, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE 'UPDATE jobs%'"
    )
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.scalar(query):
                return True
        time.sleep(0.02)
    return False

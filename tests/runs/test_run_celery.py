"""Runs on PostgreSQL + Redis with real `discovery worker` processes: the happy path, a worker killed with
SIGKILL mid-evaluation, and Redis going away mid-run (a private `redis-server`, so that tests running beside
this one keep theirs). The test process plays the API: it starts the run and runs the sweeper (every 2 s); the
workers run the jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from service.db import session_scope, upgrade_database
from service.db.models import Candidate, Job
from service.runs.jobs.claim import LEASE_SECONDS
from service.runs.orchestrator import advance, cancel
from service.runs.runner import start_run
from service.runs.spec import RunSpec
from service.runtime import Runtime, build_runtime
from service.settings import Settings
from tests.conftest import PrivateRedis
from tests.runs.conftest import (
    WorkerProcess,
    assert_complete_and_consistent,
    read_report,
    run_status,
    wait_for,
    wait_for_final,
)


def small_spec(candidates: int = 2, test_envs: list[str] | None = None) -> RunSpec:
    return RunSpec.model_validate({
        "target": "lpo", "profile": "smoke", "seed": 0, "seeds_per_eval": 1, "metatest_seeds": 1, "concurrency": 1,
        "verification_seeds": 2,  # one short race
        "budget": {"candidates": candidates},
        "environments": {"train": ["CartPole-v1"], "test": test_envs or ["CartPole-v1"]},
    })


def celery_runtime_on(database_url: str, broker_url: str, cache_dir: Path) -> Iterator[Runtime]:
    upgrade_database(database_url)
    runtime = build_runtime(Settings(database_url=database_url, broker_url=broker_url, cache_dir=cache_dir),
                            sweep_interval=2)
    yield runtime
    runtime.executor.close()
    runtime.factory.kw["bind"].dispose()


@pytest.fixture
def celery_runtime(postgres_database: Callable[[], str], broker_url: str, cache_dir: Path) -> Iterator[Runtime]:
    yield from celery_runtime_on(postgres_database(), broker_url, cache_dir)


@pytest.fixture
def private_celery_runtime(postgres_database: Callable[[], str], private_redis: PrivateRedis,
                           cache_dir: Path) -> Iterator[Runtime]:
    yield from celery_runtime_on(postgres_database(), private_redis.url, cache_dir)


def claimed_evaluation(runtime: Runtime, run_id: str) -> tuple[str, int] | None:
    """(job id, attempts) of a proposal's evaluation a worker holds now, or None."""
    with session_scope(runtime.factory) as session:
        row = session.execute(
            select(Job.id, Job.attempts).join(Candidate, Candidate.id == Job.candidate_id)
            .where(Job.run_id == run_id, Job.kind == "evaluate", Job.status == "claimed",
                   Candidate.is_warm_start.is_(False))
        ).first()
        return (row[0], row[1]) if row else None


def job_attempts(runtime: Runtime, job_id: str) -> tuple[str, int]:
    with session_scope(runtime.factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status, job.attempts


def test_celery_run_completes_with_reevaluation_and_meta_test(
    celery_runtime: Runtime, celery_worker: Callable[[str], WorkerProcess],
) -> None:
    celery_worker(celery_runtime.settings.database_url)
    began = time.monotonic()
    run_id = start_run(celery_runtime, small_spec(candidates=2, test_envs=["CartPole-v1"]))
    status = wait_for_final(celery_runtime.factory, run_id, timeout=240)
    print(f"celery run took {time.monotonic() - began:.1f} s")
    report = read_report(celery_runtime.factory, run_id)
    assert status == "completed", report.describe()
    assert_complete_and_consistent(report, candidates=2)

    # assert_complete_and_consistent checked the races (every nominee raced on fresh seeds to a verdict, the best
    # the warm start exactly when no race ended better or inconclusive); here: the best's score is its verified one.
    warm = report.candidates[0]
    best = next(c for c in report.candidates if c.id == report.run.best_candidate_id)
    assert report.run.best_score == best.verified_score, report.describe()
    for finalist in {best.id, warm.id}:
        assert [e.env for e in report.evaluations_of(finalist, "test")] == ["CartPole-v1"], report.describe()


def test_worker_killed_mid_evaluation_recovers(
    celery_runtime: Runtime, celery_worker: Callable[[str], WorkerProcess],
) -> None:
    database_url = celery_runtime.settings.database_url
    first = celery_worker(database_url)
    run_id = start_run(celery_runtime, small_spec(candidates=1))

    # Polled often: with a warm trainer, a smoke evaluation can be over within half a second of its claim.
    wait_for(lambda: claimed_evaluation(celery_runtime, run_id) is not None, 180, "a proposal's evaluation",
             interval=0.02)
    held = claimed_evaluation(celery_runtime, run_id)
    assert held is not None
    job_id, attempts = held
    first.kill()
    assert job_attempts(celery_runtime, job_id) == ("claimed", attempts)  # killed mid-evaluation, not after it
    killed_at = time.monotonic()

    celery_worker(database_url)
    wait_for(lambda: job_attempts(celery_runtime, job_id)[1] > attempts, 90, "the job to be claimed again")
    recovery = time.monotonic() - killed_at
    print(f"recovery after kill -9: job claimed again {recovery:.1f} s after the kill "
          f"(lease {LEASE_SECONDS:.0f} s, sweep 2 s)")

    status = wait_for_final(celery_runtime.factory, run_id, timeout=180)
    report = read_report(celery_runtime.factory, run_id)
    assert status == "completed", report.describe()
    assert_complete_and_consistent(report, candidates=1)
    assert recovery < 30, f"recovery took {recovery:.1f} s"


def test_redis_down_mid_run_then_back(
    private_celery_runtime: Runtime, private_redis: PrivateRedis, celery_worker: Callable[..., WorkerProcess],
) -> None:
    celery_runtime = private_celery_runtime
    celery_worker(celery_runtime.settings.database_url, private_redis.url)
    # Two proposals: the second one's jobs must go through the broker after Redis is back.
    run_id = start_run(celery_runtime, small_spec(candidates=2))
    wait_for(lambda: claimed_evaluation(celery_runtime, run_id) is not None, 180, "a proposal's evaluation")

    private_redis.stop()
    try:
        with pytest.raises(redis.ConnectionError):
            private_redis.client().ping()
        down_at = time.monotonic()

        # Reads still work.
        assert run_status(celery_runtime.factory, run_id) == "running"
        assert read_report(celery_runtime.factory, run_id).candidates

        # Starting a run and advancing one neither raise nor hang; the new job stays unpublished.
        began = time.monotonic()
        other = start_run(celery_runtime, small_spec(candidates=1))
        advance(celery_runtime.factory, run_id, celery_runtime.publish)
        took = time.monotonic() - began
        print(f"start_run + advance with Redis down took {took:.1f} s")
        assert took < 10
        with session_scope(celery_runtime.factory) as session:
            published = session.scalars(select(Job.published_at).where(Job.run_id == other)).all()
        assert published == [None]
        assert cancel(celery_runtime.factory, other)

        # Let the in-flight evaluation finish while the broker is away (its follow-up cannot be published).
        time.sleep(max(0.0, 12 - (time.monotonic() - down_at)))
        assert run_status(celery_runtime.factory, run_id) == "running"  # stalled on the broker, not finished
    finally:
        private_redis.start()
    back_at = time.monotonic()
    status = wait_for_final(celery_runtime.factory, run_id, timeout=240)
    print(f"run finished {time.monotonic() - back_at:.1f} s after Redis came back")
    report = read_report(celery_runtime.factory, run_id)
    assert status == "completed", report.describe()
    assert_complete_and_consistent(report, candidates=2)
    assert run_status(celery_runtime.factory, other) == "cancelled"

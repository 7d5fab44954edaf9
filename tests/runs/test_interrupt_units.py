"""On both databases: the sweeper and job claiming leave an interrupted run's jobs alone and still take over a
crashed run's; interrupt and resume hand the jobs back and set the run going where it stopped."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from service.db import claim_job, session_scope, utcnow
from service.db.models import Job, Run
from service.executors.base import sweep
from service.runs.orchestrator import create_run, interrupt, resume
from service.runs.spec import RunSpec
from workers.vocabulary import Task


def stranded_run(factory: sessionmaker[Session]) -> tuple[str, str]:
    """A running run whose process died: its job claimed under a lease that ran out. (run id, job id)"""
    with session_scope(factory) as session:
        run, [job] = create_run(session, RunSpec(profile="smoke", budget={"candidates": 1}))
        run.status = "running"
        run.started_at = utcnow()
        job.status, job.lease_owner, job.lease_until = "claimed", "dead:1:1", utcnow() - timedelta(seconds=5)
        return run.id, job.id


def test_the_sweeper_and_claims_skip_an_interrupted_run_and_take_over_a_crashed_one(
        session_factory: sessionmaker[Session]) -> None:
    crashed, crashed_job = stranded_run(session_factory)
    stopped, stopped_job = stranded_run(session_factory)
    assert interrupt(session_factory, stopped) and not interrupt(session_factory, stopped)
    with session_scope(session_factory) as session:
        job = session.get(Job, stopped_job)
        assert (job.status, job.lease_owner, job.published_at) == ("pending", None, None)  # handed back
        assert session.get(Run, stopped).config["interrupted_at"]

    published: list[Task] = []
    sweep(session_factory, published.extend, republish_after=0.0)
    assert [task.id for task in published] == [crashed_job]
    with session_scope(session_factory) as session:
        assert not claim_job(session, stopped_job, "me", 20.0)
        assert claim_job(session, crashed_job, "me", 20.0)

    assert resume(session_factory, crashed) is not None  # only an interrupted run is resumed
    assert resume(session_factory, stopped) is None
    with session_scope(session_factory) as session:
        run = session.get(Run, stopped)
        assert run.status == "running" and "interrupted_at" not in run.config
        assert claim_job(session, stopped_job, "me", 20.0)

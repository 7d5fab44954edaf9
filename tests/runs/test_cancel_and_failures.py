"""A run cancelled while an evaluation trains stays cancelled and grows no further; a warm start the trainer cannot
evaluate fails the run with its reason, instead of leaving it running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from service.db import session_scope, upgrade_database
from service.db.models import Candidate, Job, Run
from service.runs.orchestrator import cancel
from service.runs.runner import start_run
from service.runs.spec import RunSpec
from service.runtime import Runtime, build_runtime
from service.settings import Settings
from tests.runs.conftest import count_rows, wait_for, wait_for_final
from workers.vocabulary import JobKind, JobStatus, RunStatus

SPEC = {"target": "lpo", "profile": "smoke", "environments": {"train": ["CartPole-v1"], "test": ["CartPole-v1"]},
        "proposer": {"kind": "evolution"}, "budget": {"candidates": 6}, "concurrency": 1, "seeds_per_eval": 1,
        "metatest_seeds": 1, "verification_seeds": 2}


def make_runtime(tmp_path: Path, cache_dir: Path, **settings: object) -> Runtime:
    url = f"sqlite:///{tmp_path / 'run.db'}"
    upgrade_database(url)
    return build_runtime(Settings(database_url=url, broker_url=None, cache_dir=cache_dir, **settings),
                         local_workers=1, sweep_interval=2)


@pytest.fixture
def runtime(tmp_path: Path, cache_dir: Path) -> Iterator[Runtime]:
    built = make_runtime(tmp_path, cache_dir)
    yield built
    built.executor.close()


def proposal_training(runtime: Runtime, run_id: str) -> bool:
    """Whether a proposal's (not the warm start's) evaluation is claimed by a worker right now."""
    with session_scope(runtime.factory) as session:
        return session.scalar(select(Job.id).join(Candidate, Candidate.id == Job.candidate_id).where(
            Job.run_id == run_id, Job.kind == JobKind.EVALUATE, Job.status == JobStatus.CLAIMED,
            Candidate.is_warm_start.is_(False))) is not None


def test_a_run_cancelled_mid_evaluation_stays_cancelled_and_grows_no_further(runtime: Runtime) -> None:
    run_id = start_run(runtime, RunSpec.model_validate(SPEC))
    wait_for(lambda: proposal_training(runtime, run_id), 300, "a proposal's evaluation to start")
    assert cancel(runtime.factory, run_id)
    candidates = count_rows(runtime.factory, Candidate, Candidate.run_id == run_id)
    wait_for(lambda: not proposal_training(runtime, run_id), 300, "the in-flight evaluation to end")
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        assert (run.status, run.finished_at is not None) == (RunStatus.CANCELLED, True)
        waiting = session.scalars(select(Job.kind).where(Job.run_id == run_id, Job.status == JobStatus.PENDING))
        assert list(waiting) == [], "a cancelled run still has work queued"
    assert count_rows(runtime.factory, Candidate, Candidate.run_id == run_id) == candidates
    assert cancel(runtime.factory, run_id) is False  # already ended: a second cancel changes nothing


def test_a_warm_start_the_trainer_cannot_evaluate_fails_the_run_with_its_reason(tmp_path: Path) -> None:
    # JAX cannot even start in 64 MB; a cache of its own, so no anchor computed by another test stands in.
    runtime = make_runtime(tmp_path, tmp_path / "cache", trainer_memory_mb=64)
    try:
        run_id = start_run(runtime, RunSpec.model_validate(SPEC))
        assert wait_for_final(runtime.factory, run_id, 300) == RunStatus.FAILED
        with session_scope(runtime.factory) as session:
            run = session.get(Run, run_id)
            assert run.error.startswith("the warm start failed on CartPole-v1"), run.error
            assert "the trainer died" in run.error, run.error
            assert count_rows(runtime.factory, Candidate, Candidate.run_id == run_id, Candidate.index > 0) == 0
    finally:
        runtime.executor.close()

"""Compatible evaluations waiting beside a claimed one train with it, in one program, and keep provenance."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from service.db import make_session_factory, session_scope
from service.db.models import Artifact, Candidate, Evaluation, Job
from service.runs.jobs import run_job
from service.runs.orchestrator import add_job, create_run
from service.runs.spec import RunSpec
from service.settings import Settings
from tests.trainer.conftest import NAN_IN_TRAINING_DRIFT, SMALL_DRIFT, USELESS_DRIFT
from workers.trainer.client import POOL
from workers.vocabulary import CandidateStatus, JobKind, JobStatus

# No drift at all (plain policy gradient): poor, but within every rule of the target.
PLAIN_GRADIENT_DRIFT = "def drift(ratio, advantage, epsilon):\n    return 0.0 * ratio\n"


def test_one_claim_trains_the_waiting_batch_and_records_each_artifact(sqlite_engine: Engine, cache_dir: Path,
                                                                        sqlite_url: str) -> None:
    factory = make_session_factory(sqlite_engine)
    settings = Settings(database_url=sqlite_url, cache_dir=cache_dir, evaluate_batch_size=8)
    codes = [SMALL_DRIFT, NAN_IN_TRAINING_DRIFT, USELESS_DRIFT, PLAIN_GRADIENT_DRIFT]
    with session_scope(factory) as session:
        run, [warm_job] = create_run(session, RunSpec.model_validate(
            {"environments": {"train": ["CartPole-v1"], "test": ["CartPole-v1"]}, "profile": "smoke",
             "seeds_per_eval": 1, "metatest_seeds": 1}))
        job_ids = []
        for index, code in enumerate(codes, start=1):
            candidate = Candidate(run_id=run.id, index=index, name=f"c{index}", code=code, parent_ids=[],
                                  ast_hash=f"hash-{index}")
            session.add(candidate)
            session.flush()
            job_ids.append(add_job(session, run, JobKind.EVALUATE, f"evaluate:{candidate.id}",
                                   candidate_id=candidate.id).id)
        warm_job_id, run_id = warm_job.id, run.id
    worker = threading.Thread(target=run_job, args=(factory, settings, job_ids[0], lambda jobs: None))
    worker.start()
    seen: set[str] = set()
    try:
        while worker.is_alive():  # what a user browsing the run sees meanwhile
            with session_scope(factory) as session:
                seen |= set(session.scalars(select(Candidate.status).where(Candidate.run_id == run_id,
                                                                          Candidate.index > 0)))
            time.sleep(0.2)
        worker.join()
    finally:
        POOL.close()
    assert CandidateStatus.EVALUATING in seen  # stored while the batch trains, not skipped

    with session_scope(factory) as session:
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.run_id == run_id))}
        batch = [warm_job_id, *job_ids]
        assert [jobs[i].status for i in batch] == [JobStatus.DONE] * 5  # one claim did all five
        assert len({jobs[i].lease_owner for i in batch}) == 1
        candidates = {c.index: c for c in session.scalars(select(Candidate).where(Candidate.run_id == run_id))}
        rows = {e.candidate_id: e for e in session.scalars(select(Evaluation))}
        warm, small, nan, useless, plain = (candidates[i] for i in (0, 1, 2, 3, 4))
        # The warm start's row is its anchor: its own artifact, traced like a candidate's, on the anchor's seeds.
        assert warm.score == pytest.approx(1.0) and rows[warm.id].artifact_sha256 is not None
        # The trainer judges a run's candidates by the target's rules on their artifacts, and trains the rest.
        assert (small.outcome, nan.outcome, useless.outcome, plain.outcome) == ("ok", "refused", "refused", "ok")
        assert (small.status, nan.status, useless.status) == ("evaluated", "failed", "failed")
        assert "gradient of the drift with respect to ratio should be zero" in nan.error
        assert "the drift should be non-negative" in useless.error
        assert rows[small.id].compile_seconds == rows[plain.id].compile_seconds  # one compiled program
        for candidate in (small, plain):
            assert candidate.artifact_sha256 and rows[candidate.id].artifact_sha256 == candidate.artifact_sha256
            assert session.get(Artifact, candidate.artifact_sha256) is not None

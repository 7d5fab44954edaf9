"""Fixtures for whole discovery runs: a shared cache, Celery workers as real processes, Redis control.

Every run test uses seed 0, profile "smoke", CartPole-v1 and one seed per evaluation, so the baseline
cache and JAX's compilation cache in the session's DISCOVERY_CACHE_DIR are filled once and reused.

The suite runs in parallel (pytest-xdist): each xdist worker has its own Redis database on the CI
Redis, and a test that takes Redis away does it to a private `redis-server` of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.db.models import Candidate, Evaluation, Event, Job, Run
from service.keys import create_key
from service.runs.runner import start_run
from service.runs.spec import RunSpec
from service.runtime import Runtime
from tests.conftest import process_env
from workers.targets import TARGETS
from workers.vocabulary import RUN_FINAL_STATUSES

REPO = Path(__file__).resolve().parents[2]




def worker_env(database_url: str, cache: Path, broker: str) -> dict[str, str]:
    env = process_env()
    env.update(DISCOVERY_DATABASE_URL=database_url, DISCOVERY_BROKER_URL=broker, DISCOVERY_CACHE_DIR=str(cache),
               PYTHONUNBUFFERED="1")
    return env


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: the main process, its pool and any sandbox children."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)
        # Sandboxes run in their own sessions, but bwrap --die-with-parent takes them down with the worker.


@pytest.fixture
def celery_worker(cache_dir: Path, tmp_path: Path, broker_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """A factory: start `discovery worker --concurrency 1` on a database; every worker is killed at the end."""
    started: list[WorkerProcess] = []

    def start(database_url: str, broker: str = broker_url) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "worker", "--concurrency", "1", "--loglevel", "info"],
                cwd=REPO, env=worker_env(database_url, cache_dir, broker), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(process, log)
        started.append(worker)
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        return worker

    yield start
    for worker in started:
        worker.kill()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> float:
    """Poll until `predicate()` is true; returns the seconds waited, fails the test after `timeout`."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - began


def run_status(factory: sessionmaker[Session], run_id: str) -> str:
    with session_scope(factory) as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run.status


def wait_for_final(factory: sessionmaker[Session], run_id: str, timeout: float) -> str:
    wait_for(lambda: run_status(factory, run_id) in RUN_FINAL_STATUSES, timeout, f"run {run_id} to finish")
    return run_status(factory, run_id)


@dataclass
class RunReport:
    """What a user sees of a finished run, read from the database."""

    run: Run
    candidates: list[Candidate]  # the warm start and the proposals, by index
    references: list[Candidate]  # the target's reference algorithms, meta-tested only
    evaluations: list[Evaluation]
    jobs: list[Job]
    events: list[Event]

    @property
    def event_types(self) -> list[str]:
        return [e.type for e in self.events]

    def evaluations_of(self, candidate_id: str, phase: str) -> list[Evaluation]:
        return [e for e in self.evaluations if e.candidate_id == candidate_id and e.phase == phase]

    def describe(self) -> str:
        lines = [f"run {self.run.id}: {self.run.status} best={self.run.best_score} error={self.run.error}"]
        lines += [f"  #{c.index} {c.status} {c.outcome} score={c.score} verified={c.verified_score} "
                  f"verdict={c.verdict} err={(c.error or '')[:120]!r}" for c in self.candidates]
        lines += [f"  job {j.kind} {j.dedupe_key} {j.status} attempts={j.attempts} err={j.error!r}" for j in self.jobs]
        return "\n".join(lines)


def read_report(factory: sessionmaker[Session], run_id: str) -> RunReport:
    with session_scope(factory) as session:
        run = session.get(Run, run_id)
        assert run is not None
        rows = list(session.scalars(select(Candidate).where(Candidate.run_id == run_id).order_by(Candidate.index)))
        evaluations = list(session.scalars(select(Evaluation).join(Candidate).where(Candidate.run_id == run_id)))
        jobs = list(session.scalars(select(Job).where(Job.run_id == run_id).order_by(Job.created_at)))
        events = list(session.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.id)))
        return RunReport(run, [c for c in rows if c.reference is None], [c for c in rows if c.reference is not None],
                         evaluations, jobs, events)


def run_as_new_key(runtime: Runtime, spec: RunSpec, timeout: float) -> tuple[str, str]:
    """Start `spec` as the run of a fresh API key and wait until it completes: (the key, the run id)."""
    with session_scope(runtime.factory) as session:
        key, row = create_key(session, "tester")
        owner = row.id
    run_id = start_run(runtime, spec, owner_key_id=owner)
    assert wait_for_final(runtime.factory, run_id, timeout=timeout) == "completed"
    return key, run_id


def cli(api_url: str, key: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`discovery ARGS` against the API at `api_url` as `key`, with nothing of the user's environment."""
    env = process_env()
    env.update(DISCOVERY_API_URL=api_url, DISCOVERY_API_KEY=key, DISCOVERY_CACHE_DIR=str(home))
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def count_rows(factory: sessionmaker[Session], model: type, *where: object) -> int:
    with session_scope(factory) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def assert_complete_and_consistent(report: RunReport, candidates: int) -> None:
    """The invariants every finished run keeps, whatever happened to its processes."""
    assert report.run.status == "completed", report.describe()
    # No candidate lost: the warm start plus one per proposal, indexes 0..n, each with an outcome.
    assert [c.index for c in report.candidates] == list(range(candidates + 1)), report.describe()
    assert all(c.outcome is not None and c.status in ("evaluated", "failed") for c in report.candidates), (
        report.describe())
    warm = report.candidates[0]
    assert warm.is_warm_start and warm.outcome == "ok" and warm.score == pytest.approx(1.0), report.describe()
    # No duplicated evaluations (the unique constraint guarantees it; this is what a user would count).
    keys = {(e.candidate_id, e.env, e.phase, e.round) for e in report.evaluations}
    assert len(keys) == len(report.evaluations), report.describe()
    assert not [j for j in report.jobs if j.status in ("pending", "claimed")], report.describe()
    # Provenance: every trained evaluation of a candidate names the one artifact the candidate was traced to.
    by_id = {c.id: c for c in report.candidates + report.references}
    for e in report.evaluations:
        candidate = by_id[e.candidate_id]
        if e.outcome == "ok":  # the warm start too: the anchor and its meta-test train its artifact, never native code
            assert e.artifact_sha256 is not None, report.describe()
            assert candidate.artifact_sha256 in (None, e.artifact_sha256), report.describe()
    # Verdicts are decided on fresh seeds only, and the best's verdict is the run's.
    for c in report.candidates:
        train_seeds = {s for e in report.evaluations_of(c.id, "train") for s in e.seeds}
        verification = report.evaluations_of(c.id, "reeval")
        assert not train_seeds & {s for e in verification for s in e.seeds}, report.describe()
        if c.verdict is not None:
            scores = [s for e in sorted(verification, key=lambda e: e.round) for s in e.stats["scores"]]
            assert c.verified_score == pytest.approx(sum(scores) / len(scores)), report.describe()
    # The search score only nominates: every candidate whose search score beat the warm start was raced, every
    # race ended with a verdict, and the best is the warm start exactly when no race ended better or inconclusive.
    raced = {j.candidate_id for j in report.jobs if j.kind == "reevaluate"}
    nominated = {c.id for c in report.candidates if not c.is_warm_start and not c.stopped_early
                 and c.score is not None and c.score > 1.0}
    assert nominated == raced, report.describe()
    assert all(c.verdict is not None for c in report.candidates if c.id in raced
               and all(e.outcome == "ok" for e in report.evaluations_of(c.id, "reeval"))), report.describe()
    best = next((c for c in report.candidates if c.id == report.run.best_candidate_id), None)
    assert best is not None and report.run.best_verdict == best.verdict, report.describe()
    contenders = [c for c in report.candidates if c.verdict in ("better", "inconclusive")]
    assert best.is_warm_start == (not contenders), report.describe()
    if any(c.verdict == "better" for c in contenders):
        assert best.verdict == "better", report.describe()
    assert report.run.best_verdict in (None, "better", "inconclusive"), report.describe()
    # Every reference algorithm of the target is meta-tested beside the warm start on every held-out environment.
    assert [c.reference for c in report.references] == [r.name for r in TARGETS[report.run.target].references][::-1]
    for reference in report.references:
        tests = report.evaluations_of(reference.id, "test")
        assert sorted(t.env for t in tests) == sorted(report.run.test_envs), report.describe()
        assert all(t.outcome == "ok" and t.artifact_sha256 == reference.artifact_sha256 for t in tests)
    types = report.event_types
    assert types[0] == "run.started" and types[-1] == "run.completed" and types.count("run.completed") == 1, types

"""Ctrl-C of `discovery run` (SIGINT to the real process, embedded SQLite): the run is `interrupted`, says how to
resume, and nothing but `discovery runs resume` moves it: not a runtime starting on the same database, not another
`discovery run`. `runs resume` then completes it, and `runs list/show` read the local database with no API."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.db import make_engine, make_session_factory, session_scope
from service.db.models import Candidate, Event, Job, Run
from service.runtime import build_runtime
from service.settings import Settings
from tests.conftest import process_env
from tests.runs.conftest import REPO, assert_complete_and_consistent, read_report, wait_for

CANDIDATES = 1
SMOKE = ["--target", "lpo", "--env", "CartPole-v1", "--profile", "smoke", "--concurrency", "1", "--seed", "0",
         "--seeds-per-eval", "1", "--test-env", "CartPole-v1", "--metatest-seeds", "1", "--verification-seeds", "2"]


def discovery(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def jobs_of(factory: Any, run_id: str) -> list[tuple[str, str, int, object]]:
    """What would change if anything touched the run's jobs: status, attempts, when published."""
    with session_scope(factory) as session:
        rows = session.execute(select(Job.id, Job.status, Job.attempts, Job.published_at)
                               .where(Job.run_id == run_id).order_by(Job.id)).all()
        return [tuple(row) for row in rows]


def first_proposal(factory: Any, other_than: str | None = None) -> str | None:
    """The run whose first proposal is recorded (not `other_than`), once one is."""
    try:
        with session_scope(factory) as session:
            query = select(Candidate.run_id).where(Candidate.index == 1)
            return session.scalar(query if other_than is None else query.where(Candidate.run_id != other_than))
    except Exception:  # noqa: BLE001 - the database is not migrated yet
        return None


def interrupt_after_first_proposal(process: subprocess.Popen[bytes], factory: Any, log: Path,
                                   other_than: str | None = None, not_before: float = 0.0) -> str:
    """SIGINT (Ctrl-C) once the process's run has recorded its first proposal, and not before the monotonic time
    `not_before`; the run's id."""
    try:
        wait_for(lambda: first_proposal(factory, other_than) is not None or process.poll() is not None, 400,
                 "the first proposal")
        wait_for(lambda: time.monotonic() >= not_before or process.poll() is not None, 60, "the time to interrupt")
        run_id = first_proposal(factory, other_than)
        assert run_id is not None and process.poll() is None, log.read_text()[-3000:]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    assert f"discovery runs resume {run_id}" in log.read_text(), log.read_text()[-3000:]
    return run_id


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "service.cli", "run", *SMOKE, "--candidates", str(CANDIDATES)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.timeout(1500)
def test_an_interrupted_run_waits_for_runs_resume(tmp_path: Path, cache_dir: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'discovery.db'}"
    env = process_env()
    env.update(DISCOVERY_DATABASE_URL=database_url, DISCOVERY_CACHE_DIR=str(cache_dir), PYTHONUNBUFFERED="1",
               COLUMNS="200")
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    began = time.monotonic()
    run_id = interrupt_after_first_proposal(start(env, tmp_path / "run.log"), factory, tmp_path / "run.log")
    print(f"interrupted after {time.monotonic() - began:.0f} s")

    with session_scope(factory) as session:
        run = session.get(Run, run_id)
        assert run.status == "interrupted", run.status
        assert session.scalars(select(Event.type).where(Event.run_id == run_id)).all()[-1] == "run.interrupted"
    held = jobs_of(factory, run_id)
    assert held and all(status in ("pending", "done", "failed") for _, status, _, _ in held), held

    # A runtime starting on this database (`discovery serve`, a worker): its sweeper's first pass re-publishes
    # every pending job, but none of the interrupted run's.
    runtime = build_runtime(Settings(database_url=database_url, broker_url=None, cache_dir=cache_dir),
                            local_workers=1, sweep_interval=0.3)
    time.sleep(3)
    runtime.executor.close()
    assert jobs_of(factory, run_id) == held

    # Another `discovery run` on this database: its sweeper passes (every 5 s, the first re-publishing every
    # pending job) leave the interrupted run alone while the new run gets going. Ctrl-C'd in turn.
    began = time.monotonic()
    other = start(env, tmp_path / "other.log")
    # Interrupted no sooner than 11 s after its start: two of its sweeps at least.
    other_id = interrupt_after_first_proposal(other, factory, tmp_path / "other.log", other_than=run_id,
                                              not_before=began + 11)
    print(f"the other run's first proposal after {time.monotonic() - began:.0f} s")
    assert other_id != run_id and jobs_of(factory, run_id) == held
    with session_scope(factory) as session:
        assert session.get(Run, run_id).status == "interrupted"

    # With no API (no DISCOVERY_API_URL), `runs list` and `runs show` read this database.
    listed = discovery(env, "runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {r["id"]: r["status"] for r in json.loads(listed.stdout)["items"]} == {
        run_id: "interrupted", other_id: "interrupted"}

    began = time.monotonic()
    resumed = discovery(env, "runs", "resume", run_id, "--json", timeout=900)
    print(f"resumed to the end in {time.monotonic() - began:.0f} s")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["status"] == "completed"
    again = discovery(env, "runs", "resume", run_id)
    assert again.returncode == 2 and "only an interrupted run can be resumed" in again.stderr

    report = read_report(factory, run_id)
    engine.dispose()
    assert_complete_and_consistent(report, CANDIDATES)
    types = report.event_types
    assert types.count("run.interrupted") == 1 and types[-1] == "run.completed"
    trained = [e for e in report.evaluations if e.outcome == "ok" and e.phase != "train"]
    assert trained and all(e.platform == "cpu" and e.device for e in trained), report.describe()

    shown = discovery(env, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    run_json = json.loads(shown.stdout)
    assert run_json["status"] == "completed"
    assert run_json["trained_on"] and run_json["trained_on"][0]["platform"] == "cpu"
    text = discovery(env, "runs", "show", run_id)
    assert text.returncode == 0 and "trained on: cpu (" in text.stdout, text.stdout
    missing = discovery(env, "runs", "show", "no-such-run")
    assert missing.returncode == 2 and "no run 'no-such-run'" in missing.stderr

"""The process running a discovery (`discovery run`, local executor) dies with SIGKILL mid-evaluation; a new
runtime on the same database resumes the run from its rows and finishes it, losing and duplicating nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from service.db import make_engine, make_session_factory, session_scope, upgrade_database
from service.db.models import Candidate, Job
from service.runs.jobs.claim import LEASE_SECONDS
from service.runtime import build_runtime
from service.settings import Settings
from tests.conftest import process_env
from tests.runs.conftest import REPO, assert_complete_and_consistent, read_report, wait_for, wait_for_final

CANDIDATES = 1


def test_killed_orchestrator_is_resumed_by_a_new_runtime(
    postgres_database: Callable[[], str], cache_dir: Path, tmp_path: Path,
) -> None:
    database_url = postgres_database()
    upgrade_database(database_url)
    engine = make_engine(database_url)
    factory = make_session_factory(engine)

    def claimed_evaluation() -> tuple[str, str, int] | None:
        with session_scope(factory) as session:
            row = session.execute(
                select(Job.run_id, Job.id, Job.attempts).join(Candidate, Candidate.id == Job.candidate_id)
                .where(Job.kind == "evaluate", Job.status == "claimed", Candidate.is_warm_start.is_(False))
            ).first()
            return (row[0], row[1], row[2]) if row else None

    env = process_env()
    env.update(DISCOVERY_DATABASE_URL=database_url, DISCOVERY_CACHE_DIR=str(cache_dir))
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "run", "--target", "lpo", "--env", "CartPole-v1", "--profile",
             "smoke", "--candidates", str(CANDIDATES), "--concurrency", "1", "--seed", "0", "--seeds-per-eval", "1",
             "--test-env", "CartPole-v1", "--metatest-seeds", "1"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    runtime = None
    try:
        wait_for(lambda: claimed_evaluation() is not None or process.poll() is not None, 180,
                 "a proposal's evaluation to start")
        held = claimed_evaluation()
        assert held is not None, log.read_text()[-3000:]
        run_id, job_id, attempts = held
        # Killed the moment the evaluation is seen claimed (a warm trainer could finish a smoke evaluation within
        # any fixed wait); the job must still be the dead process's, or the test would prove nothing.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        killed_at = time.monotonic()
        assert claimed_evaluation() == held, "the evaluation ended before the kill: nothing was interrupted"

        runtime = build_runtime(Settings(database_url=database_url, broker_url=None, cache_dir=cache_dir),
                                local_workers=1, sweep_interval=2)

        def reclaimed() -> bool:
            with session_scope(factory) as session:
                job = session.get(Job, job_id)
                return job is not None and job.attempts > attempts

        wait_for(reclaimed, 90, "the interrupted evaluation to be claimed again")
        recovery = time.monotonic() - killed_at
        print(f"orchestrator restart: interrupted job claimed again {recovery:.1f} s after the kill "
              f"(lease {LEASE_SECONDS:.0f} s)")
        status = wait_for_final(factory, run_id, timeout=180)
        report = read_report(factory, run_id)
        assert status == "completed", report.describe()
        assert_complete_and_consistent(report, CANDIDATES)
        assert recovery < 30
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        if runtime is not None:
            runtime.executor.close()
        engine.dispose()

"""A whole discovery run through `discovery run` on SQLite with the local executor, as a user starts one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.db import make_engine, make_session_factory
from service.keys import find_key
from tests.conftest import process_env
from tests.runs.conftest import REPO, RunReport, assert_complete_and_consistent, read_report
from workers.rl.envs import get_config

CANDIDATES = 2


def test_discovery_run_completes_and_meta_tests_the_best(sqlite_url: str, cache_dir: Path) -> None:
    env = process_env()
    env.update(DISCOVERY_DATABASE_URL=sqlite_url, DISCOVERY_CACHE_DIR=str(cache_dir))
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "run", "--target", "lpo", "--env", "CartPole-v1",
         "--profile", "smoke", "--candidates", str(CANDIDATES), "--concurrency", "1", "--seed", "0",
         "--seeds-per-eval", "1", "--metatest-seeds", "2", "--verification-seeds", "2", "--learning-rate", "grid",
         "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    print(f"discovery run took {time.monotonic() - began:.1f} s")
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert "leaderboard of run" in done.stderr and "meta-test" in done.stderr, done.stderr  # --json: report aside
    result = json.loads(done.stdout)  # --json: stdout is the result alone, for scripts

    engine = make_engine(sqlite_url)
    try:
        report = read_report(make_session_factory(engine), result["run_id"])
    finally:
        engine.dispose()
    assert result["status"] == "completed" and result["best_candidate_id"] == report.run.best_candidate_id

    # Without DISCOVERY_API_KEY the run belongs to this machine's local identity, which `keys local` hands out.
    local = subprocess.run([sys.executable, "-m", "service.cli", "keys", "local"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60)
    assert local.returncode == 0
    with make_session_factory(make_engine(sqlite_url))() as session:
        owner = find_key(session, local.stdout.strip())
        assert owner is not None and owner.id == report.run.owner_key_id
    assert sorted(c["index"] for c in result["candidates"]) == list(range(CANDIDATES + 1))
    assert_complete_and_consistent(report, CANDIDATES)
    warm = report.candidates[0]
    assert warm.index == 0 and warm.score == pytest.approx(1.0) and warm.verified_score == 1.0
    assert report.run.best_candidate_id is not None and report.run.best_score is not None

    # No --test-env: the run still meta-tests, on the target's held-out environment, the best candidate, the
    # warm start and DPO (assert_complete_and_consistent checks the references), each on 2 fresh seeds.
    assert report.run.test_envs == ["Acrobot-v1"] and report.references[0].reference == "DPO"
    for candidate_id in {report.run.best_candidate_id, warm.id, report.references[0].id}:
        tests = report.evaluations_of(candidate_id, "test")
        assert [t.env for t in tests] == ["Acrobot-v1"], report.describe()
        assert tests[0].outcome == "ok" and tests[0].final_return is not None and len(tests[0].seeds) == 2
        assert tests[0].score_basis in ("normalised", "return_ratio") and abs(tests[0].normalised_score) < 50
    # The warm start is trained fresh on the test seeds and compared with the anchor: never better than itself.
    assert report.evaluations_of(warm.id, "test")[0].stats["comparison"]["verdict"] != "better"
    assert "DPO (reference)" in done.stderr

    # `grid`: every learning rate is chosen on seeds that are never the ones scored.
    search, chosen_on = set(), set()
    for e in report.evaluations:
        if e.outcome != "ok" or e.phase == "reeval":
            continue
        choice = e.curves["lr_choice"]
        assert choice is not None and len(choice["learning_rates"]) == 2, report.describe()
        assert not set(choice["seeds"]) & set(e.seeds)
        assert e.learning_rates == [choice["chosen"]] == [e.best_lr]
        (search if e.phase == "train" else chosen_on).update(choice["seeds"])
    # A re-evaluation measures the rate the search chose on yet other fresh seeds.
    for e in (e for e in report.evaluations if e.phase == "reeval" and e.outcome == "ok"):
        train = report.evaluations_of(e.candidate_id, "train")[0]
        assert e.best_lr == train.best_lr and not set(e.seeds) & (set(train.seeds) | search)

    assert_cost_adds_up(report, env, result["run_id"])
    assert result["cost"]["total"]["env_steps"] == sum(e.env_steps or 0 for e in report.evaluations)
    assert "cost: " in done.stderr and "environment steps" in done.stderr

    # Events in order: started, proposals and evaluations, completed last.
    types = report.event_types
    assert types[0] == "run.started" and types[-1] == "run.completed"
    assert types.count("candidate.proposed") == CANDIDATES
    verified = [c for c in report.candidates if c.verdict is not None]
    assert types.count("candidate.evaluated") == CANDIDATES + 1 + len(verified)
    assert types.index("candidate.new_best") < types.index("candidate.proposed")  # the warm start sets the scale


def assert_cost_adds_up(report: RunReport, env: dict[str, str], run_id: str) -> None:
    """Every trained row cost its lanes (the grid's choosing lanes included) times the profile's steps per lane,
    and `runs show` adds the rows up, per candidate and per phase."""
    for e in report.evaluations:
        if e.outcome != "ok":
            continue
        choice = (e.curves or {}).get("lr_choice")
        lanes = len(e.seeds) * len(e.learning_rates) + (len(choice["seeds"]) * len(choice["learning_rates"])
                                                         if choice else 0)
        assert e.env_steps == lanes * get_config(e.env, "smoke").env_steps, (e.phase, e.env, e.env_steps)
        assert e.trainer_seconds is not None and e.trainer_seconds > 0
    shown = subprocess.run([sys.executable, "-m", "service.cli", "runs", "show", run_id, "--json"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    cost = json.loads(shown.stdout)["cost"]
    for key, phase in (("search", "train"), ("verification", "reeval"), ("meta_test", "test")):
        rows = [e for e in report.evaluations if e.phase == phase]
        assert cost[key]["env_steps"] == sum(e.env_steps or 0 for e in rows), key
        assert cost[key]["env_steps"] > 0 or key == "verification"  # a run may have no contender to race
        assert cost[key]["trainer_seconds"] == pytest.approx(sum(e.trainer_seconds or 0.0 for e in rows))
    assert cost["total"]["env_steps"] == sum(e.env_steps or 0 for e in report.evaluations)
    side = subprocess.run([sys.executable, "-m", "service.cli", "runs", "show", run_id, run_id], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert side.returncode == 0 and "env steps" in side.stdout and "readable code" in side.stdout, side.stdout


def test_discovery_run_with_an_unknown_key_is_refused_in_one_line(sqlite_url: str, cache_dir: Path) -> None:
    env = process_env()
    env.update(DISCOVERY_DATABASE_URL=sqlite_url, DISCOVERY_CACHE_DIR=str(cache_dir), DISCOVERY_API_KEY="dsk_nobody")
    done = subprocess.run([sys.executable, "-m", "service.cli", "run", "--profile", "smoke", "--candidates", "1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "DISCOVERY_API_KEY is not a key of this database" in done.stderr

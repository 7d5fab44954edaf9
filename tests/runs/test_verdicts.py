"""Verdicts with known effects, through the real tracer and trainer: the warm start against its own anchor is
never `better`, a crippled drift is `worse` after its first race round, a planted improvement (a ten-fold Adam
step on CartPole `smoke`, measured beforehand: mean return 378 against 271 on 16 seeds) is crowned a discovery,
and a run in which nothing beats the warm start says so on every face (API, best.py, webhook payload, CLI, page).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.api.app import create_app
from service.db import session_scope
from service.db.models import Candidate, Event, Run
from service.evaluation import anchor_for, trace_code, train_artifacts, warm_artifact
from service.runs.protocol import race_rounds
from service.runs.runner import start_run
from service.runs.spec import RunSpec
from service.runtime import Runtime
from tests.api.conftest import uvicorn_in_thread
from tests.conftest import process_env
from tests.proposers.scripted_llm import ScriptedLLM
from tests.runs.conftest import REPO, cli, run_as_new_key, wait_for_final
from tests.runs.test_llm_run import llm, reply, runtime  # noqa: F401
from workers.rl.envs import get_env_spec
from workers.statistics import compare
from workers.targets import TARGETS
from workers.vocabulary import EventType, Verdict

ENV, PROFILE = "CartPole-v1", "smoke"
CRIPPLED = """import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    return 1.0e4 * (ratio - 1.0) ** 2
"""  # keeps to lpo's rules, and pins the policy where it started: a random policy's return (22 on 8 seeds)
BIG_STEP = TARGETS["optimizer"].warm_start.replace("return -lr * m_hat", "return -10.0 * lr * m_hat")
LOOKS = len(race_rounds(RunSpec().verification_seeds))


@pytest.fixture
def settings(runtime: Runtime):  # noqa: ANN201, F811
    return runtime.settings


def test_the_warm_start_against_its_anchor_is_never_better(settings) -> None:  # noqa: ANN001
    """Twelve disjoint pairs of fresh seeds, each a race's first round: their point scores scatter widely (the old
    protocol crowned such luck), and none is called better; nor are all 24 seeds together."""
    rate = [get_env_spec(ENV).lr]
    anchor = anchor_for(settings, "lpo", ENV, PROFILE, rate)
    seeds = list(range(7000, 7024))
    [result] = train_artifacts(settings, "lpo", ENV, PROFILE, seeds, rate, [warm_artifact(settings, "lpo")], anchor)
    scores, _ = anchor.normalise(result.result.returns[0])
    pairs = [compare([scores[i:i + 2]], [anchor.own_scores()], looks=LOOKS) for i in range(0, 24, 2)]
    assert max(p.score for p in pairs) - min(p.score for p in pairs) > 0.3, [round(p.score, 3) for p in pairs]
    assert not [p for p in pairs if p.verdict is Verdict.better], [(p.score, p.ci) for p in pairs]
    everything = compare([scores], [anchor.own_scores()])
    assert everything.verdict is not Verdict.better and everything.method == "bootstrap"


def test_a_crippled_drift_is_worse_after_its_first_round(settings) -> None:  # noqa: ANN001
    rate = [get_env_spec(ENV).lr]
    anchor = anchor_for(settings, "lpo", ENV, PROFILE, rate)
    traced = trace_code(settings, "lpo", CRIPPLED)
    assert traced.artifact is not None, traced.error
    [result] = train_artifacts(settings, "lpo", ENV, PROFILE, [7100, 7101], rate, [traced.artifact], anchor)
    scores, _ = anchor.normalise(result.result.returns[0])
    verdict = compare([scores], [anchor.own_scores()], looks=LOOKS)
    assert verdict.verdict is Verdict.worse and verdict.p_improvement < 0.05, verdict


def test_a_planted_improvement_is_crowned_a_discovery(runtime: Runtime, llm: ScriptedLLM) -> None:  # noqa: F811
    llm.script.append(reply("ten-fold step", BIG_STEP))
    spec = RunSpec.model_validate({
        "target": "optimizer", "profile": PROFILE, "environments": {"train": [ENV], "test": [ENV]},
        "concurrency": 1, "seeds_per_eval": 4, "verification_seeds": 32, "metatest_seeds": 4,
        "budget": {"candidates": 1}, "proposer": {"kind": "llm", "model": "scripted-model"},
    })
    run_id = start_run(runtime, spec)
    assert wait_for_final(runtime.factory, run_id, timeout=600) == "completed"
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        planted = session.query(Candidate).filter_by(run_id=run_id, index=1).one()
        assert planted.verdict == "better" and run.best_candidate_id == planted.id, planted.stats
        assert run.best_verdict == "better" and run.best_score == planted.verified_score
        verification = planted.stats["verification"]
        assert verification["ci"][0] > 1.0 and verification["seeds"] in race_rounds(32)


def test_a_run_that_beats_nothing_says_so_on_every_face(runtime: Runtime, llm: ScriptedLLM,  # noqa: F811
                                                         tmp_path: Path) -> None:
    llm.script.append(reply("crippled", CRIPPLED))
    spec = RunSpec.model_validate({
        "target": "lpo", "profile": PROFILE, "environments": {"train": [ENV], "test": [ENV]}, "concurrency": 1,
        "seeds_per_eval": 2, "metatest_seeds": 2, "budget": {"candidates": 1},
        "proposer": {"kind": "llm", "model": "scripted-model"},
    })
    key, run_id = run_as_new_key(runtime, spec, timeout=600)
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        crippled = session.query(Candidate).filter_by(run_id=run_id, index=1).one()
        assert crippled.score < 0.5 and crippled.verdict is None  # never nominated, so never raced
        assert run.best_verdict is None and session.get(Candidate, run.best_candidate_id).is_warm_start
        completed = session.query(Event).filter_by(run_id=run_id, type=EventType.RUN_COMPLETED).one().payload
    message = "no candidate beat the warm start at 16 verification seeds and 95% confidence: the best is the warm start"
    assert completed["discovery"] is False and completed["discovery_message"] == message

    with uvicorn_in_thread(create_app(runtime)) as url:
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        shown = api.get(f"/v1/runs/{run_id}").json()
        assert shown["discovery"] == {"found": False, "verdict": None, "confidence": 0.95, "verification_seeds": 16,
                                      "message": message}
        assert f"Verdict: {message}." in api.get(f"/v1/runs/{run_id}/best.py").text
        shown = cli(url, key, tmp_path, "runs", "show", run_id)
        assert shown.returncode == 0 and f"verdict: {message}" in " ".join(shown.stdout.split()), shown.stderr
        browser = httpx.Client(base_url=url, timeout=30, follow_redirects=True)
        assert browser.post("/login", data={"api_key": key}).status_code == 200
        page = browser.get(f"/runs/{run_id}").text
        assert f"{message[0].upper()}{message[1:]}." in " ".join(page.split())


def test_verdict_fields_reach_the_json_of_discovery_evaluate(tmp_path: Path, cache_dir: Path) -> None:  # noqa: F811
    env = process_env()
    env.update(DISCOVERY_CACHE_DIR=str(cache_dir))
    done = subprocess.run([sys.executable, "-m", "service.cli", "evaluate", "--env", ENV, "--profile", PROFILE,
                           "--seeds", "7200,7201", "--json"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["verdict"] in ("inconclusive", "worse", "better") and len(row["score_ci"]) == 2
    assert row["seeds"] == 2 and len(row["scores"]) == 2 and row["anchor"]["seeds"] == 64
    assert row["score_ci"][0] < row["score"] < row["score_ci"][1] and 0.0 <= row["p_improvement"] <= 1.0

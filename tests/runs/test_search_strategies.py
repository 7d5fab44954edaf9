"""Search strategies in whole runs, through the real `openai` client against a scripted server on loopback:
an ensemble of models picked by a bandit, islands with their own histories, extending a completed run, and
early stopping of a hopeless candidate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import count

import pytest
from sqlalchemy import select

from service.db import session_scope
from service.db.models import Candidate, Evaluation, Run
from service.runs.orchestrator import advance, extend
from service.runs.queries.stats import model_stats
from service.runs.runner import start_run
from service.runs.spec import Extension, RunSpec, spec_of
from service.runtime import Runtime
from tests.proposers.scripted_llm import ScriptedLLM, completion
from tests.runs.conftest import wait_for_final
from tests.runs.test_llm_run import llm, runtime  # noqa: F401
from workers.targets import TARGETS


def clip(width: float) -> str:
    """PPO's clip with another width: a valid drift, a new one for each width."""
    return ("import jax\nimport jax.numpy as jnp\n\n\ndef drift(ratio, advantage, epsilon):\n"
            f"    return jax.nn.relu((ratio - jnp.clip(ratio, 1.0 - {width}, 1.0 + {width})) * advantage)\n")


def bigger_step(factor: float) -> str:
    """Adam with a larger step: on CartPole `smoke` a ten-fold step reaches a mean return of 378 against the warm
    start's 271 (16 seeds, measured), so it improves on its parent for a reason, not by seed luck."""
    return TARGETS["optimizer"].warm_start.replace("return -lr * m_hat", f"return -{factor} * lr * m_hat")


def wrong_shape(size: int) -> str:
    """An update whose step does not have the parameter's shape: the probe refuses it before any training."""
    return TARGETS["optimizer"].warm_start.replace("return -lr * m_hat / (jnp.sqrt(v_hat) + eps), (m, v, slot2, slot3)",
                                                   f"return jnp.zeros({size}), (m, v, slot2, slot3)")


def answer(name: str, code: str) -> dict:
    return completion(json.dumps({"thought": f"idea {name}", "name": name, "code": code}), 1000, 200)


def ensemble_spec(candidates: int) -> RunSpec:
    return RunSpec.model_validate({
        "target": "optimizer", "profile": "smoke", "environments": {"train": ["CartPole-v1"], "test": ["CartPole-v1"]},
        "concurrency": 1, "seeds_per_eval": 2, "verification_seeds": 8, "metatest_seeds": 1,
        "budget": {"candidates": candidates}, "proposer": {"kind": "llm", "models": ["careful", "reckless"]},
    })


def spec(candidates: int, **extra: object) -> RunSpec:
    return RunSpec.model_validate({
        "target": "lpo", "profile": "smoke", "environments": {"train": ["CartPole-v1"], "test": ["CartPole-v1"]},
        "concurrency": 1, "seeds_per_eval": 1, "metatest_seeds": 1, "verification_seeds": 2,  # one short race
        "budget": {"candidates": candidates}, "proposer": {"kind": "llm", "models": ["careful", "reckless"]}, **extra,
    })


@pytest.fixture
def ensemble(llm: ScriptedLLM) -> Iterator[ScriptedLLM]:  # noqa: F811
    """`careful` proposes larger Adam steps (an improvement measured beforehand); `reckless` proposes steps of the
    wrong shape (refused by the probe: never an improvement)."""
    factors, shapes = count(), count()
    llm.by_model["careful"] = lambda: answer("careful", bigger_step(9.0 + 0.5 * next(factors)))
    llm.by_model["reckless"] = lambda: answer("reckless", wrong_shape(3 + next(shapes)))
    yield llm


def test_an_ensemble_spreads_proposals_and_the_bandit_shifts_to_the_model_that_improves(
        runtime: Runtime, ensemble: ScriptedLLM) -> None:  # noqa: F811
    run_id = start_run(runtime, ensemble_spec(8))
    assert wait_for_final(runtime.factory, run_id, 400) == "completed"
    with session_scope(runtime.factory) as session:
        proposals = session.scalars(select(Candidate).where(Candidate.run_id == run_id, Candidate.index > 0)
                                    .order_by(Candidate.index)).all()
        models = [c.model for c in proposals]
        assert len(models) == 8 and set(models[:2]) == {"careful", "reckless"}  # each tried first
        assert all(c.outcome == "invalid" for c in proposals if c.model == "reckless")
        # The bandit moved to the model whose proposals improve: most of the six proposals after the first two.
        assert models[2:].count("careful") >= 4, models
        run = session.get(Run, run_id)
        stats = {s.model: s for s in model_stats(session, run, spec_of(run))}
    assert stats["reckless"].improved == 0 and stats["careful"].improved >= 1
    assert stats["careful"].proposals + stats["reckless"].proposals == 8
    assert stats["careful"].tokens == 1200 * stats["careful"].proposals  # each call counted for its model
    assert [r["model"] for r in ensemble.requests] == models  # the model asked is the model recorded


def test_islands_keep_separate_histories_and_extending_a_run_adds_exactly_what_was_asked(
        runtime: Runtime, llm: ScriptedLLM) -> None:  # noqa: F811
    names = iter(range(100))
    llm.by_model["careful"] = lambda: (lambda k: answer(f"width_{k}", clip(0.1 + 0.02 * k)))(next(names))
    run_id = start_run(runtime, spec(2, proposer={"kind": "llm", "model": "careful"},
                                     search={"islands": 2, "migration_interval": 10}))
    assert wait_for_final(runtime.factory, run_id, 300) == "completed"
    with session_scope(runtime.factory) as session:
        assert session.get(Run, run_id).finished_at is not None
    # A running run, or more than a run may have, is refused with the reason.
    assert "at most 1000" in extend(runtime.factory, run_id, Extension(candidates=999))
    assert extend(runtime.factory, run_id, Extension(candidates=3)) is None
    assert "only a completed run" in extend(runtime.factory, run_id, Extension(candidates=1))
    advance(runtime.factory, run_id, runtime.publish)
    assert wait_for_final(runtime.factory, run_id, 300) == "completed"
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        proposals = session.scalars(select(Candidate).where(Candidate.run_id == run_id, Candidate.index > 0)
                                    .order_by(Candidate.index)).all()
        assert [c.index for c in proposals] == [1, 2, 3, 4, 5] and run.budget["candidates"] == 5
        assert [c.island for c in proposals] == [0, 1, 0, 1, 0]
        assert all(c.outcome == "ok" for c in proposals)
        tested = session.scalars(select(Evaluation.candidate_id).where(Evaluation.phase == "test")).all()
        assert run.best_candidate_id in tested  # the meta-test covers the best after the extension too
    # Island 0's prompts show island 0's candidates only; island 1's show island 1's.
    prompt = {k: "\n".join(llm.user_messages(k - 1)) for k in range(1, 6)}
    assert "width_0" in prompt[3] and "width_1" not in prompt[3]
    assert "width_1" in prompt[4] and "width_0" not in prompt[4] and "width_2" not in prompt[4]
    assert "width_0" in prompt[5] and "width_2" in prompt[5] and "width_3" not in prompt[5]


HOPELESS = """import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    return 1.0e6 * (ratio - 1.0) ** 2 * (1.0 + jnp.abs(advantage))
"""


def test_early_stopping_stops_a_hopeless_candidate_after_the_first_environment_and_nothing_else(
        runtime: Runtime, llm: ScriptedLLM) -> None:  # noqa: F811
    llm.script += [answer("wider", clip(0.3)), answer("frozen", HOPELESS), answer("narrower", clip(0.15))]
    run_id = start_run(runtime, spec(
        3, proposer={"kind": "llm", "model": "scripted"},
        environments={"train": ["CartPole-v1", "Acrobot-v1"], "test": ["CartPole-v1"]},
        search={"early_stopping": {"margin": 0.4, "min_evaluated": 2}}))
    assert wait_for_final(runtime.factory, run_id, 600) == "completed"
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        warm, wider, frozen, narrower = session.scalars(
            select(Candidate).where(Candidate.run_id == run_id, Candidate.index >= 0).order_by(Candidate.index)).all()
        trained = {(e.candidate_id, e.env, e.phase) for e in session.scalars(
            select(Evaluation).join(Candidate).where(Candidate.run_id == run_id))}
        # Fewer than min_evaluated others when the first candidate was scored: it is trained everywhere.
        assert not warm.stopped_early and not wider.stopped_early
        assert {(warm.id, "Acrobot-v1", "train"), (wider.id, "Acrobot-v1", "train")} <= trained
        # The frozen policy scores near the random policy on CartPole: not trained on Acrobot.
        assert frozen.stopped_early and frozen.outcome == "ok" and frozen.score < 0.5
        assert (frozen.id, "CartPole-v1", "train") in trained and (frozen.id, "Acrobot-v1", "train") not in trained
        assert frozen.verified_score is None  # never re-evaluated
        # A re-evaluation is never stopped: every re-evaluated candidate has both environments.
        reevaluated = {c for c, _, phase in trained if phase == "reeval"}
        assert reevaluated and all((c, "Acrobot-v1", "reeval") in trained for c in reevaluated)
        assert run.best_candidate_id != frozen.id

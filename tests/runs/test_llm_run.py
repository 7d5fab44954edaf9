"""Runs with the LLM proposer, through the real `openai` client against a scripted server on loopback:
what is stored, what the model is shown, and what the run does when the endpoint fails or the budget ends."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from service.db import session_scope, upgrade_database
from service.db.models import Candidate, Evaluation, LlmCall, Run
from service.evaluation import trace_code
from service.runs.orchestrator import advance, extend
from service.runs.runner import start_run
from service.runs.spec import Extension, RunSpec
from service.runtime import Runtime, build_runtime
from service.settings import Settings
from tests.proposers.scripted_llm import ScriptedLLM, completion, failure, handler
from tests.runs.conftest import wait_for_final
from workers.results import score_text
from workers.targets import get_target

WIDER_CLIP = """import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    return jax.nn.relu((ratio - jnp.clip(ratio, 1.0 - 0.3, 1.0 + 0.3)) * advantage)
"""
USES_OS = "import os\n\n\ndef drift(ratio, advantage, epsilon):\n    return ratio * 0.0\n"
SQUARED = """import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    return 0.5 * (ratio - 1.0) ** 2 * jnp.abs(advantage)
"""


def reply(name: str, code: str) -> dict:
    return completion(json.dumps({"thought": f"idea {name}", "name": name, "code": code}), 1000, 200)


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    scripted = ScriptedLLM()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(scripted))
    scripted.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield scripted
    server.shutdown()


@pytest.fixture
def runtime(tmp_path: Path, llm: ScriptedLLM, cache_dir: Path) -> Iterator[Runtime]:  # noqa: F811
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'llm.db'}", broker_url=None, cache_dir=cache_dir,
                        openai_base_url=llm.url, openai_api_key=SecretStr("sk-test-not-stored"))
    upgrade_database(settings.database_url)
    rt = build_runtime(settings, local_workers=1, sweep_interval=2.0)
    yield rt
    rt.executor.close()


def llm_spec(candidates: int, tokens: int | None = None, history: str = "bounded") -> RunSpec:
    return RunSpec.model_validate({
        "target": "lpo", "profile": "smoke", "environments": {"train": ["CartPole-v1"], "test": ["CartPole-v1"]},
        "concurrency": 1, "seeds_per_eval": 1, "metatest_seeds": 1, "verification_seeds": 2,  # one short race
        "budget": {"candidates": candidates, "tokens": tokens},
        "proposer": {"kind": "llm", "model": "scripted-model", "temperature": 0.7, "history": history},
    })


def test_an_llm_run_stores_every_call_and_shows_the_model_its_history(runtime: Runtime, llm: ScriptedLLM) -> None:
    llm.script += [reply("wider_clip", WIDER_CLIP), reply("uses_os", USES_OS), reply("squared", SQUARED)]
    run_id = start_run(runtime, llm_spec(candidates=2))
    assert wait_for_final(runtime.factory, run_id, 240) == "completed"
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        candidates = session.scalars(select(Candidate).where(Candidate.run_id == run_id, Candidate.index >= 0)
                                     .order_by(Candidate.index)).all()  # the search's (references are < 0)
        calls = session.scalars(select(LlmCall).where(LlmCall.run_id == run_id).order_by(LlmCall.created_at)).all()
        assert [c.name for c in candidates] == ["warm start", "wider_clip", "squared"]
        first = candidates[1]
        assert first.outcome == "ok" and first.thought == "idea wider_clip" and first.llm_call_id is not None
        assert len(calls) == 3 and all(c.model == "scripted-model" for c in calls)  # one repair of `import os`
        assert run.tokens_used == 3 * 1200
        assert "sk-test-not-stored" not in json.dumps([c.messages for c in calls])
    # The second proposal's prompt carries the first candidate's score; its repair carries the static error.
    second_prompt = "\n".join(llm.user_messages(1))
    shown = first.verified_score if first.verified_score is not None else first.score
    assert "wider_clip" in second_prompt and f"{shown:.4f}" in second_prompt, second_prompt
    assert "import os" in "\n".join(llm.user_messages(2)) and "not allowed" in "\n".join(llm.user_messages(2))


def test_a_conversation_run_replays_the_models_stored_reply_and_its_fitness(runtime: Runtime, llm: ScriptedLLM
                                                                           ) -> None:
    # The first reply has words around its JSON: the chat must replay the stored text, not a re-serialisation.
    first_text = "Here is my idea.\n" + json.dumps({"thought": "wider", "name": "wider_clip", "code": WIDER_CLIP})
    llm.script += [completion(first_text, 1000, 200), reply("squared", SQUARED)]
    run_id = start_run(runtime, llm_spec(candidates=2, history="conversation"))
    assert wait_for_final(runtime.factory, run_id, 240) == "completed"
    with session_scope(runtime.factory) as session:
        first = session.scalars(select(Candidate).where(Candidate.run_id == run_id, Candidate.index == 1)).one()
        assert first.outcome == "ok" and first.name == "wider_clip"
        shown = first.verified_score if first.verified_score is not None else first.score
        comparison = first.stats.get("verification") if first.verified_score is not None else first.stats["search"]
    opening, second = llm.requests[0]["messages"], llm.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[:2] == opening  # the chat grows; its beginning does not change
    assert second[2]["content"] == first_text
    # Its fitness with the interval and what it means, so the model does not chase noise.
    assert second[3]["content"].startswith(f"Fitness: {score_text(shown, comparison)}."), second[3]["content"]
    assert "95% CI" in second[3]["content"]


def test_an_endpoint_that_stays_down_fails_the_run_with_the_reason(runtime: Runtime, llm: ScriptedLLM) -> None:
    llm.forever = failure(500, "the model server is on fire")
    run_id = start_run(runtime, llm_spec(candidates=3))
    assert wait_for_final(runtime.factory, run_id, 240) == "failed"
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        assert "unavailable" in run.error and "500" in run.error
        assert session.scalars(select(LlmCall).where(LlmCall.run_id == run_id)).all()  # the attempts are kept


def test_the_token_budget_stops_proposing(runtime: Runtime, llm: ScriptedLLM) -> None:
    llm.script += [reply("wider_clip", WIDER_CLIP), reply("squared", SQUARED)]
    run_id = start_run(runtime, llm_spec(candidates=5, tokens=1000))
    assert wait_for_final(runtime.factory, run_id, 240) == "completed"
    with session_scope(runtime.factory) as session:
        searched = session.scalars(select(Candidate).where(Candidate.run_id == run_id, Candidate.index >= 0)).all()
        assert len(searched) == 2
        assert session.get(Run, run_id).tokens_used == 1200
    # Extending a run its token budget ended needs more tokens too; then it gains exactly the proposals asked for.
    assert "tokens budget is still spent" in extend(runtime.factory, run_id, Extension(candidates=1))
    assert extend(runtime.factory, run_id, Extension(candidates=1, tokens=2000)) is None
    advance(runtime.factory, run_id, runtime.publish)
    assert wait_for_final(runtime.factory, run_id, 240) == "completed"
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        names = session.scalars(select(Candidate.name).where(Candidate.run_id == run_id, Candidate.index > 0)
                                .order_by(Candidate.index)).all()
        assert names == ["wider_clip", "squared"] and run.budget["candidates"] == 2 and run.budget["tokens"] == 3000
        assert run.tokens_used == 2400


NO_OP = """import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
    return jnp.maximum(jax.nn.relu((ratio - clipped) * advantage), 0.0)
"""
SHIFTED = """import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    return jax.nn.relu((ratio - jnp.clip(ratio, 1.3 - epsilon, 1.3 + epsilon)) * advantage)
"""


def test_a_behavioural_duplicate_and_a_rule_breaker_are_recorded_and_never_trained(runtime: Runtime,
                                                                                     llm: ScriptedLLM) -> None:
    llm.script += [reply("no_op", NO_OP), reply("shifted", SHIFTED), reply("squared", SQUARED)]
    run_id = start_run(runtime, llm_spec(candidates=3))
    assert wait_for_final(runtime.factory, run_id, 240) == "completed"
    with session_scope(runtime.factory) as session:
        warm, no_op, shifted, squared = session.scalars(
            select(Candidate).where(Candidate.run_id == run_id, Candidate.index >= 0).order_by(Candidate.index)).all()
        trained = set(session.scalars(select(Evaluation.candidate_id).join(Candidate)
                                      .where(Candidate.run_id == run_id)))
        # The wrapper changes the code, not the function: the warm start's duplicate, with no score of its own.
        assert no_op.duplicate_of == warm.id and no_op.fingerprint == warm.fingerprint is not None
        assert no_op.status == "failed" and no_op.score is None and "behavioural duplicate" in no_op.error
        assert shifted.outcome == "invalid" and shifted.duplicate_of is None
        assert "should be zero at ratio = 1" in shifted.error
        assert squared.outcome == "ok" and squared.fingerprint not in (warm.fingerprint, None)
        assert no_op.id not in trained and shifted.id not in trained and {warm.id, squared.id} <= trained
        assert session.get(Run, run_id).duplicates_skipped == 0  # recorded, not skipped unseen
    # The model is told which rule its candidate broke.
    assert "should be zero at ratio = 1" in "\n".join(llm.user_messages(2))


# A forger that owned its tracer process (tests/trainer/test_forgeries.py shows how it reached the builtins) could
# rewrite the fingerprint its tracer reports. The subset the static check allows keeps it out of the tracer: it is
# refused in the worker before any process runs it, and nothing of it trains.
FORGE_FINGERPRINT = '''
import jax
import jax.numpy as jnp

g = getattr
builtins = g(print, "_" * 2 + "self" + "_" * 2)
load = g(builtins, "_" * 2 + "import" + "_" * 2)
sys = load("sys")
tracer = sys.modules["workers.sandbox.tracer"]
honest_writer = tracer.write_result


def forged(fd, result, max_bytes):
    honest_writer(fd, result.model_copy(update={"fingerprint": "FORGED"}), max_bytes)


patched = g(builtins, "setattr")(tracer, "write_result", forged)

'''
POSE_AS_WARM_START = FORGE_FINGERPRINT.replace('"FORGED"', '"WARM"') + '''
def drift(ratio, advantage, epsilon):
    return 0.5 * (ratio - 1.0) ** 2 * jnp.abs(advantage)
'''
HIDE_A_DUPLICATE = FORGE_FINGERPRINT.replace('"FORGED"', '"f" * 64') + '''
def drift(ratio, advantage, epsilon):
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
    return jnp.maximum(jax.nn.relu((ratio - clipped) * advantage), 0.0)
'''


def test_a_fingerprint_forger_is_refused_before_its_tracer_runs(runtime: Runtime, llm: ScriptedLLM) -> None:
    warm_fingerprint = trace_code(runtime.settings, "lpo", get_target("lpo").warm_start).fingerprint
    pose = POSE_AS_WARM_START.replace('"WARM"', repr(warm_fingerprint))
    llm.script += [reply("pose", pose), reply("hide", HIDE_A_DUPLICATE)] * 2  # each is sent back once to repair
    run_id = start_run(runtime, llm_spec(candidates=2))
    assert wait_for_final(runtime.factory, run_id, 300) == "completed"
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        forgers = session.scalars(
            select(Candidate).where(Candidate.run_id == run_id, Candidate.index >= 1).order_by(Candidate.index)).all()
        trained = set(session.scalars(select(Evaluation.candidate_id).join(Candidate)
                                      .where(Candidate.run_id == run_id)))
        assert [c.outcome for c in forgers] == ["invalid", "invalid"]
        assert all("`getattr` is not allowed" in c.error and c.duplicate_of is None for c in forgers)
        assert all(c.id not in trained and c.score is None for c in forgers)
        assert run.best_candidate_id not in {c.id for c in forgers}

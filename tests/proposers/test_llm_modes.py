"""The LLM proposer's history modes and reasoning-model options, checked at the scripted server: what
each mode sends, which request options reach the endpoint, and the run spec's validation of them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from service.proposers import HistoryEntry, ProposalContext, ProposerConfig, ast_hash, make_proposer
from service.proposers.llm import PARAMETER_HINT
from service.runs.spec import LLMProposerSpec, RunSpec
from tests.proposers.scripted_llm import completion, failure, warm_entry
from tests.proposers.test_llm_proposer import GOOD_CODE, OTHER_CODE, reply
from workers.vocabulary import Outcome

SQUARED = "import jax.numpy as jnp\n\n\ndef drift(ratio, advantage, epsilon):\n    return (ratio - 1.0) ** 2\n"
NOT_JSON = "I think the answer is a smooth clip."


def raw(name: str, code: str) -> str:
    return json.dumps({"thought": f"idea {name}", "name": name, "code": code})


def earlier() -> list[HistoryEntry]:
    """Four earlier proposals: scored (with a <think> block), invalid, failed in training, and one no model made."""
    return [
        HistoryEntry(candidate_id="c1", index=1, name="smooth_one", thought="idea smooth_one", code=GOOD_CODE,
                     outcome=Outcome.ok, score=0.93, reply="<think>hmm</think>" + raw("smooth_one", GOOD_CODE)),
        HistoryEntry(candidate_id="c2", index=2, name="no_reply", code="", outcome=Outcome.invalid,
                     error="the model gave no usable reply: it is not valid JSON", reply=NOT_JSON),
        HistoryEntry(candidate_id="c3", index=3, name="quadratic_three", thought="idea quadratic_three",
                     code=OTHER_CODE, outcome=Outcome.nan, error="NaN in the returns at update 17",
                     reply=raw("quadratic_three", OTHER_CODE)),
        HistoryEntry(candidate_id="c4", index=4, name="squared_four", thought="by hand", code=SQUARED,
                     outcome=Outcome.ok, score=1.25),
    ]


def context(history: list[HistoryEntry], index: int = 5) -> ProposalContext:
    warm = warm_entry("lpo")
    hashes = {ast_hash(warm.code), *(ast_hash(e.code) for e in history)}
    return ProposalContext(run_id="run-1", target="lpo", seed=7, index=index, warm_start=warm, history=history,
                           known_hashes=hashes)


def config_from_spec(spec: dict[str, Any]) -> ProposerConfig:
    """The proposer's config for a validated run spec's proposer, as the service stores and reads it."""
    from service.runs.jobs.propose import proposer_config  # the service's job module (heavier imports)

    return proposer_config(RunSpec(proposer=LLMProposerSpec.model_validate(spec)))


def test_bounded_is_the_default_and_sends_one_history_prompt(llm_server, llm_config):
    assert llm_config.history.mode == "bounded"
    llm_server.script.append(reply(GOOD_CODE.replace("epsilon *", "0.5 * epsilon *")))
    make_proposer(llm_config).propose(context(earlier()))

    [request] = llm_server.requests
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    prompt = request["messages"][1]["content"]
    assert "The best candidates so far" in prompt and "Propose candidate 5" in prompt
    assert "Fitness: 0.9300" in prompt and "Fitness: 1.2500" in prompt and "NaN in the returns" in prompt


def test_conversation_replays_every_reply_then_its_feedback_in_order(llm_server, llm_config):
    llm_config.history.mode = "conversation"
    llm_server.script.append(reply(GOOD_CODE.replace("epsilon *", "0.5 * epsilon *"), name="next"))
    proposal = make_proposer(llm_config).propose(context(earlier()))

    assert proposal.invalid_error is None
    [request] = llm_server.requests
    messages = request["messages"]
    assert [m["role"] for m in messages] == ["system", "user"] + ["assistant", "user"] * 4
    first = messages[1]["content"]
    assert "warm start" in first and "Fitness: 1.0000" in first and "jnp.clip(ratio" in first
    assert "Please propose the next candidate" in first
    assert GOOD_CODE.strip() not in first  # earlier candidates come as turns, not in the first prompt
    assistants = [m["content"] for m in messages if m["role"] == "assistant"]
    assert assistants == [
        raw("smooth_one", GOOD_CODE),  # the stored reply, its <think> block dropped
        NOT_JSON,  # the model's own words, even when they were unusable
        raw("quadratic_three", OTHER_CODE),
        json.dumps({"thought": "by hand", "name": "squared_four", "code": SQUARED}),  # no reply stored: re-serialised
    ]
    feedback = [m["content"] for m in messages[3::2]]
    assert feedback[0].startswith("Fitness: 0.9300.")
    assert feedback[1].startswith("Code not valid. Error:") and "not valid JSON" in feedback[1]
    assert feedback[2].startswith("Training failed (nan). Error:") and "NaN in the returns at update 17" in feedback[2]
    assert feedback[3].startswith("Fitness: 1.2500.")
    assert all("Please propose the next candidate" in text for text in feedback)
    assert proposal.parent_ids == ["c4", "warm", "c1"]  # the scored candidates shown, best first


def test_conversation_shows_an_unevaluated_proposal_as_pending(llm_server, llm_config):
    llm_config.history.mode = "conversation"
    pending = earlier()[0].model_copy(update={"outcome": None, "score": None})
    llm_server.script.append(reply(SQUARED.replace("** 2", "** 4")))
    make_proposer(llm_config).propose(context([pending], index=2))

    messages = llm_server.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[3]["content"].startswith("Not evaluated yet")


def test_a_long_conversation_drops_the_oldest_turns_and_keeps_the_warm_start(llm_server, llm_config):
    llm_config.history.mode = "conversation"
    llm_config.history.max_turns = 2
    llm_server.script.append(reply(SQUARED.replace("** 2", "** 4")))
    make_proposer(llm_config).propose(context(earlier()))

    messages = llm_server.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "jnp.clip(ratio" in messages[1]["content"]  # the warm start stays
    assert "left out of this conversation to keep it short: 2." in messages[1]["content"]
    assert messages[2]["content"] == raw("quadratic_three", OTHER_CODE)
    assert messages[5]["content"].startswith("Fitness: 1.2500.")


def test_none_mode_never_shows_an_earlier_candidate(llm_server, llm_config):
    llm_config.history.mode = "none"
    llm_server.script.append(reply(GOOD_CODE.replace("epsilon *", "0.5 * epsilon *")))
    proposal = make_proposer(llm_config).propose(context(earlier()))

    [request] = llm_server.requests
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    sent = json.dumps(request["messages"])
    assert "jnp.clip(ratio" in request["messages"][1]["content"]
    for entry in earlier():
        if entry.code:
            assert json.dumps(entry.code.strip())[1:-1] not in sent
        assert entry.name not in sent
    assert "0.9300" not in sent and "NaN in the returns" not in sent and NOT_JSON not in sent
    assert proposal.parent_ids == ["warm"]


def test_none_mode_still_re_asks_for_a_duplicate(llm_server, llm_config):
    llm_config.history.mode = "none"
    llm_server.script += [reply(GOOD_CODE), reply(SQUARED.replace("** 2", "** 4"))]
    proposal = make_proposer(llm_config).propose(context(earlier()))

    assert proposal.duplicates_skipped == 1 and proposal.invalid_error is None
    assert "same algorithm as a candidate already tried" in llm_server.user_messages(1)[-1]


def test_reasoning_options_from_the_spec_reach_the_server(llm_server):
    config = config_from_spec({
        "kind": "llm", "model": "o3-mini", "base_url": llm_server.url, "temperature": None,
        "max_completion_tokens": 8000, "reasoning_effort": "high", "history": "conversation",
    })
    assert config.history.mode == "conversation" and config.llm.max_tokens is None
    llm_server.script.append(reply(GOOD_CODE))
    make_proposer(config).propose(context([], index=1))

    [request] = llm_server.requests
    assert request["max_completion_tokens"] == 8000
    assert request["reasoning_effort"] == "high"
    assert "max_tokens" not in request and "temperature" not in request


def test_send_temperature_false_still_omits_it_and_max_tokens_is_sent_by_default(llm_server):
    config = config_from_spec({"kind": "llm", "model": "m", "base_url": llm_server.url, "send_temperature": False})
    assert config.history.mode == "bounded"
    llm_server.script.append(reply(GOOD_CODE))
    make_proposer(config).propose(context([], index=1))

    [request] = llm_server.requests
    assert "temperature" not in request and "reasoning_effort" not in request
    assert request["max_tokens"] == 4096 and "max_completion_tokens" not in request


def test_the_specs_seed_is_sent_with_the_proposals_index_and_none_is_sent_without_one(llm_server):
    from service.runs.jobs.propose import proposer_config

    spec = RunSpec(proposer=LLMProposerSpec.model_validate({"kind": "llm", "model": "m", "base_url": llm_server.url,
                                                            "seed": 41}))
    assert proposer_config(spec).llm.seed == 41 and proposer_config(spec, index=3).llm.seed == 44
    llm_server.script += [reply(GOOD_CODE), reply(OTHER_CODE)]
    make_proposer(proposer_config(spec, index=3)).propose(context([], index=3))
    make_proposer(config_from_spec({"kind": "llm", "model": "m", "base_url": llm_server.url})).propose(
        context([], index=4))

    first, second = llm_server.requests
    assert first["seed"] == 44
    assert "seed" not in second
    with pytest.raises(ValidationError):
        LLMProposerSpec.model_validate({"kind": "llm", "model": "m", "seed": -1})


def test_max_tokens_and_max_completion_tokens_are_mutually_exclusive():
    with pytest.raises(ValidationError, match="mutually exclusive"):
        LLMProposerSpec.model_validate({"kind": "llm", "model": "m", "max_tokens": 1000,
                                        "max_completion_tokens": 2000})
    alone = LLMProposerSpec.model_validate({"kind": "llm", "model": "m", "max_completion_tokens": 2000})
    assert (alone.max_tokens, alone.max_completion_tokens) == (None, 2000)
    explicit_null = LLMProposerSpec.model_validate({"kind": "llm", "model": "m", "max_tokens": None,
                                                    "max_completion_tokens": 2000})
    assert explicit_null.max_tokens is None
    # A stored spec validates again as it was (the run's proposer column holds this dump).
    assert LLMProposerSpec.model_validate(alone.model_dump(mode="json")) == alone


@pytest.mark.parametrize(
    "field",
    [{"reasoning_effort": "extreme"}, {"history": "full"}, {"history_max_turns": 0}, {"max_tokens_param": "x"}],
)
def test_bad_llm_options_are_refused(field):
    with pytest.raises(ValidationError):
        LLMProposerSpec.model_validate({"kind": "llm", "model": "m", **field})


def test_the_refusal_hint_names_only_fields_the_run_spec_accepts(llm_server, llm_config):
    llm_server.forever = failure(400, "Unsupported parameter: 'max_tokens'")
    with pytest.raises(Exception) as caught:  # ProposerUnavailable
        make_proposer(llm_config).propose(context([], index=1))
    reason = caught.value.reason  # type: ignore[attr-defined]
    assert PARAMETER_HINT in reason and "Unsupported parameter: 'max_tokens'" in reason
    named = re.findall(r"proposer\.(\w+)", reason)
    assert {"max_completion_tokens", "temperature"} <= set(named)
    assert set(named) <= set(LLMProposerSpec.model_fields), set(named) - set(LLMProposerSpec.model_fields)


def test_every_history_mode_sends_a_usable_chat(llm_server, llm_config):
    """Whatever the mode, the chat starts with the system prompt and alternates user/assistant to a user turn."""
    for mode in ("bounded", "conversation", "none"):
        llm_server.reset()
        llm_config.history.mode = mode
        llm_server.script.append(completion(raw("fresh", SQUARED.replace("** 2", "** 6"))))
        make_proposer(llm_config).propose(context(earlier()))
        roles = [m["role"] for m in llm_server.requests[0]["messages"]]
        assert roles[0] == "system" and roles[-1] == "user", mode
        assert all(a != b for a, b in zip(roles[1:], roles[2:], strict=False)), (mode, roles)

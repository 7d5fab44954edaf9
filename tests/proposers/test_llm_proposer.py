"""The LLM proposer through the real `openai` client against a scripted server on loopback."""

from __future__ import annotations

import json
import time

import pytest

from service.proposers import (
    HistoryEntry,
    LLMProposer,
    ProposalContext,
    ProposerConfig,
    ProposerUnavailable,
    ast_hash,
    make_proposer,
)
from service.proposers import llm as llm_module
from service.proposers.llm import parse_reply
from tests.proposers.scripted_llm import completion, failure, warm_entry
from workers.targets import get_target
from workers.vocabulary import Outcome

GOOD_CODE = """import jax
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    return jax.nn.relu((ratio - 1.0) * advantage - epsilon * jnp.tanh((ratio - 1.0) * advantage / epsilon))
"""

OTHER_CODE = """import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    return 0.5 * jnp.square(ratio - 1.0) * jnp.abs(advantage) / epsilon
"""

BAD_CODE = """import os
import jax.numpy as jnp


def drift(ratio, advantage, epsilon):
    os.system("true")
    return jnp.zeros_like(ratio)
"""


def reply(code: str, name: str = "smooth_drift", thought: str = "A smooth trust region.") -> dict:
    return completion(json.dumps({"thought": thought, "name": name, "code": code}))


def context(index: int = 1, history: list[HistoryEntry] | None = None, known: set[str] | None = None):
    warm = warm_entry("lpo")
    return ProposalContext(
        run_id="run-1",
        target="lpo",
        seed=7,
        index=index,
        warm_start=warm,
        history=history or [],
        known_hashes=known if known is not None else {ast_hash(warm.code)},
    )


def test_valid_reply_is_proposed_and_the_call_is_recorded(llm_server, llm_config):
    llm_server.script.append(reply(GOOD_CODE))
    proposal = make_proposer(llm_config, api_key="sk-test").propose(context())

    assert proposal.invalid_error is None
    assert proposal.name == "smooth_drift"
    assert proposal.thought == "A smooth trust region."
    assert proposal.code.strip() == GOOD_CODE.strip()
    assert proposal.ast_hash == ast_hash(GOOD_CODE)
    assert proposal.parent_ids == ["warm"]
    [call] = proposal.llm_calls
    assert call.model == "scripted-model"
    assert call.reply is not None and "smooth_drift" in call.reply
    assert (call.prompt_tokens, call.completion_tokens) == (1000, 200)
    assert call.cost_usd == pytest.approx(1000 / 1000 * 0.5 + 200 / 1000 * 2.0)
    assert call.latency_ms > 0
    assert call.error is None
    assert [m["role"] for m in call.messages] == ["system", "user"]

    [request] = llm_server.requests
    assert request["model"] == "scripted-model"
    assert request["temperature"] == 0.8
    assert request["max_tokens"] == 2048
    schema = request["response_format"]["json_schema"]["schema"]  # the reply's own schema, not just "JSON"
    assert request["response_format"]["type"] == "json_schema"
    assert schema["required"] == ["thought", "name", "code"] and schema["additionalProperties"] is False
    system = request["messages"][0]["content"]
    target = get_target("lpo")
    assert target.signature in system
    for item in target.inputs:
        assert f"`{item.name}`: {item.description}" in system
    for rule in target.rules:
        assert rule[1:] in system
    assert '"thought"' in system and '"name"' in system and '"code"' in system
    user = request["messages"][1]["content"]
    assert "warm_start" in user and "Fitness: 1.0000" in user and "jnp.clip(ratio" in user


def test_an_endpoint_that_refuses_the_schema_gets_json_object_from_then_on(llm_server, llm_config, monkeypatch):
    monkeypatch.setattr(llm_module, "SCHEMA_REFUSED_BY", set())  # what this process remembers, fresh
    llm_server.script += [failure(400, "response_format: json_schema is not supported"), reply(GOOD_CODE),
                          reply(GOOD_CODE, name="second")]
    first = make_proposer(llm_config).propose(context())
    second = make_proposer(llm_config).propose(context())

    assert first.invalid_error is None and second.invalid_error is None
    formats = [r["response_format"]["type"] for r in llm_server.requests]
    assert formats == ["json_schema", "json_object", "json_object"]  # one refusal, remembered for the endpoint
    assert [c.error is not None for c in first.llm_calls] == [True, False]


def test_models_that_reject_parameters_are_configured_not_crashed(llm_server, llm_config):
    llm_config.llm.send_temperature = False
    llm_config.llm.json_mode = False
    llm_config.llm.max_completion_tokens = 2048
    llm_server.script.append(reply(GOOD_CODE))
    proposal = make_proposer(llm_config).propose(context())

    assert proposal.invalid_error is None
    [request] = llm_server.requests
    assert "temperature" not in request
    assert "response_format" not in request
    assert "max_tokens" not in request
    assert request["max_completion_tokens"] == 2048


def test_invalid_json_is_asked_again(llm_server, llm_config):
    llm_server.script += [completion("Sure! Here is my idea: {thought: oops"), reply(GOOD_CODE)]
    proposal = make_proposer(llm_config).propose(context())

    assert proposal.invalid_error is None
    assert proposal.code.strip() == GOOD_CODE.strip()
    first, second = proposal.llm_calls
    assert first.error is not None and "not valid JSON" in first.error
    assert second.error is None
    retry_messages = llm_server.requests[1]["messages"]
    assert retry_messages[-2] == {"role": "assistant", "content": "Sure! Here is my idea: {thought: oops"}
    assert "not valid JSON" in retry_messages[-1]["content"]


def test_a_model_that_never_answers_in_json_gives_an_invalid_proposal(llm_server, llm_config):
    llm_server.forever = completion("I cannot do that.")
    proposal = make_proposer(llm_config).propose(context())

    assert proposal.code == ""
    assert proposal.invalid_error is not None and "no usable reply" in proposal.invalid_error
    assert len(proposal.llm_calls) == llm_config.llm.format_retries + 1


def test_code_failing_the_static_check_is_sent_back_once_and_repaired(llm_server, llm_config):
    llm_server.script += [reply(BAD_CODE, name="uses_os"), reply(GOOD_CODE)]
    proposal = make_proposer(llm_config).propose(context())

    assert proposal.invalid_error is None
    assert proposal.code.strip() == GOOD_CODE.strip()
    assert len(proposal.llm_calls) == 2
    repair_request = llm_server.user_messages(1)[-1]
    assert "line 1" in repair_request and "os" in repair_request
    assert get_target("lpo").signature in repair_request


def test_code_that_stays_invalid_after_one_repair_is_an_invalid_candidate(llm_server, llm_config):
    llm_server.script += [reply(BAD_CODE), reply(BAD_CODE, name="still_os")]
    proposal = make_proposer(llm_config).propose(context())

    assert proposal.name == "still_os"
    assert proposal.code.strip() == BAD_CODE.strip()
    assert proposal.invalid_error is not None and "line 1" in proposal.invalid_error
    assert len(proposal.llm_calls) == 2
    assert len(llm_server.requests) == 2  # exactly one repair round


def test_a_reply_the_client_cannot_read_fails_the_proposal_and_its_tokens_still_count(llm_server, llm_config):
    unreadable = completion("", prompt_tokens=700, completion_tokens=300)
    unreadable["body"]["choices"][0]["message"] = None  # a server that breaks the format
    llm_server.script += [unreadable]
    proposal = make_proposer(llm_config).propose(context())

    assert proposal.invalid_error is not None and proposal.invalid_error.startswith("the proposer failed: ")
    assert proposal.code == "" and len(proposal.llm_calls) == 1
    assert (proposal.llm_calls[0].prompt_tokens, proposal.llm_calls[0].completion_tokens) == (700, 300)


def test_rate_limit_is_retried_honouring_retry_after(llm_server, llm_config):
    llm_config.llm.backoff_max_seconds = 5.0
    llm_server.script += [failure(429, "slow down", {"Retry-After": "2"}), reply(GOOD_CODE)]
    slept: list[float] = []
    proposer = LLMProposer(llm_config, sleep=slept.append)
    proposal = proposer.propose(context())

    assert proposal.invalid_error is None
    assert slept == [2.0]
    limited, ok = proposal.llm_calls
    assert limited.error == "HTTP 429: slow down" and limited.reply is None
    assert ok.error is None and ok.prompt_tokens == 1000


def test_an_endpoint_that_stays_down_raises_proposer_unavailable_quickly(llm_server, llm_config):
    llm_server.forever = failure(500, "internal error")
    started = time.monotonic()
    with pytest.raises(ProposerUnavailable) as caught:
        make_proposer(llm_config).propose(context())

    assert time.monotonic() - started < 5.0
    assert len(llm_server.requests) == llm_config.llm.max_attempts
    reason = caught.value.reason
    assert llm_server.url in reason and "HTTP 500: internal error" in reason and "3 times" in reason
    assert len(caught.value.llm_calls) == 3
    assert all(c.error == "HTTP 500: internal error" for c in caught.value.llm_calls)


def test_an_unreachable_endpoint_raises_proposer_unavailable(llm_config):
    llm_config.llm.base_url = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    with pytest.raises(ProposerUnavailable) as caught:
        make_proposer(llm_config).propose(context())
    assert "127.0.0.1:9" in caught.value.reason and "APIConnectionError" in caught.value.reason


def test_a_refused_request_is_not_retried_and_says_what_to_change(llm_server, llm_config):
    llm_server.forever = failure(400, "Unsupported parameter: 'temperature'")
    with pytest.raises(ProposerUnavailable) as caught:
        make_proposer(llm_config).propose(context())
    assert len(llm_server.requests) == 1
    assert "Unsupported parameter: 'temperature'" in caught.value.reason
    assert "send_temperature" in caught.value.reason


def test_second_prompt_shows_the_first_score_and_a_failure_error(llm_server, llm_config):
    proposer = make_proposer(llm_config)
    llm_server.script.append(reply(GOOD_CODE, name="smooth_drift"))
    first = proposer.propose(context(index=1))

    # The service evaluates it (score 1.2345) and another candidate that failed with an error.
    history = [
        HistoryEntry(
            candidate_id="c1",
            index=1,
            name=first.name,
            thought=first.thought,
            code=first.code,
            outcome=Outcome.ok,
            score=1.2345,
            parent_ids=first.parent_ids,
        ),
        HistoryEntry(
            candidate_id="c2",
            index=2,
            name="exploding_drift",
            code=OTHER_CODE,
            outcome=Outcome.nan,
            error="NaN in the returns at update 17 on CartPole-v1",
        ),
    ]
    known = {ast_hash(warm_entry().code), ast_hash(first.code), ast_hash(OTHER_CODE)}
    llm_server.script.append(reply(OTHER_CODE.replace("0.5 *", "0.25 *"), name="half_quadratic"))
    second = proposer.propose(context(index=3, history=history, known=known))

    prompt = llm_server.user_messages(1)[0]
    assert "smooth_drift" in prompt and "Fitness: 1.2345" in prompt
    assert "exploding_drift" in prompt and "NaN in the returns at update 17 on CartPole-v1" in prompt
    assert "Result: failed (nan)" in prompt
    assert second.invalid_error is None
    assert second.parent_ids[0] == "c1"  # the best candidate the model saw


def test_a_duplicate_is_skipped_and_the_model_asked_for_something_new(llm_server, llm_config):
    warm_code = warm_entry().code
    renamed = warm_code.replace("clipped", "c").replace('    """', '    # reformatted\n    """', 1)
    llm_server.script += [reply(renamed, name="ppo_again"), reply(GOOD_CODE)]
    proposal = make_proposer(llm_config).propose(context())

    assert proposal.duplicates_skipped == 1
    assert proposal.invalid_error is None and proposal.name == "smooth_drift"
    assert "same algorithm as a candidate already tried" in llm_server.user_messages(1)[-1]


@pytest.mark.parametrize(
    "text",
    [
        '{"thought": "t", "name": "n", "code": "x"}',
        '<think>let me see {not json}</think>\n{"thought": "t", "name": "n", "code": "x"}',
        'Here it is:\n```json\n{"thought": "t", "name": "n", "code": "x"}\n```\nGood luck!',
    ],
)
def test_replies_with_wrapping_text_are_understood(text):
    parsed = parse_reply(text)
    assert (parsed.thought, parsed.name, parsed.code) == ("t", "n", "x")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("[1, 2]", "not an object"),
        ('{"name": "n"}', "code"),
        ('{"name": "n", "code": " "}', "code"),
    ],
)
def test_unusable_replies_are_explained(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_reply(text)


def test_make_proposer_chooses_by_kind():
    from service.proposers import EvolutionProposer

    assert isinstance(make_proposer(ProposerConfig()), EvolutionProposer)
    assert isinstance(make_proposer(ProposerConfig(kind="llm"), api_key="k", base_url="http://x/v1"), LLMProposer)

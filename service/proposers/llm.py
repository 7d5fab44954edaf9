"""The language-model proposer: a DiscoPOP-style prompt to any OpenAI-compatible chat endpoint.

One proposal is one short conversation: the opening messages of the run's history mode (see
service/proposers/conversation.py: the bounded history, the paper's multi-turn chat, or the warm start
alone), then, when needed, re-asks for a reply that is not the JSON we want, one
repair round with the static check's errors, and re-asks when the code is already in the run.
Network errors, 429 and 5xx are retried with a short backoff (a server's Retry-After is honoured,
capped); an endpoint that stays down, or refuses the request outright, raises ProposerUnavailable.
Every request is recorded as an LLMCallRecord, failed ones included.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError, field_validator

from service.proposers.base import (
    LLMCallRecord,
    Proposal,
    ProposalContext,
    ProposerConfig,
    ProposerUnavailable,
    ast_hash,
)
from service.proposers.conversation import THINK, initial_messages, shown_entries
from service.proposers.prompts import PROMPTS_DIR, duplicate_prompt, format_prompt, repair_prompt
from workers.sandbox.static_check import check_source, format_issues
from workers.targets import get_target

if TYPE_CHECKING:  # the client is imported where it is used: the API process never loads it
    import openai

RETRYABLE_STATUS = {408, 409, 429}

# Said when an endpoint refuses a request (400, 422): every name is a field of the run spec's proposer
# (LLMProposerSpec; a test checks it), so a user can act on it as written.
PARAMETER_HINT = (
    "if the model rejects a parameter, change the run spec: proposer.temperature=null (or "
    "proposer.send_temperature=false) for models that reject a temperature, proposer.max_completion_tokens "
    "instead of proposer.max_tokens for reasoning models, proposer.json_mode=false for endpoints without "
    "JSON mode (a JSON schema, or else a JSON object), and leave proposer.reasoning_effort unset for models without it"
)


class LLMReply(BaseModel):
    """The JSON object the model must answer with."""

    thought: str = ""
    name: str
    code: str

    @field_validator("name", "code")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("name")
    @classmethod
    def _short_name(cls, value: str) -> str:
        return value.strip()[:80]


# What `json_mode` asks for: the reply's own JSON schema (OpenAI's structured outputs, also served by vLLM,
# llama.cpp and Ollama); an endpoint that refuses it gets `json_object` from then on (per endpoint, per process).
REPLY_FORMAT = {"type": "json_schema", "json_schema": {"name": "proposal", "strict": True, "schema": {
    "type": "object", "additionalProperties": False, "required": ["thought", "name", "code"],
    "properties": {"thought": {"type": "string"}, "name": {"type": "string"}, "code": {"type": "string"}}}}}
JSON_OBJECT_FORMAT = {"type": "json_object"}
SCHEMA_REFUSED_BY: set[str] = set()  # endpoints that refused REPLY_FORMAT


def refuses_the_schema(exc: openai.APIStatusError) -> bool:
    """Whether a 400/422 says the endpoint does not take a JSON schema as the response format."""
    text = _status_message(exc).lower()
    return exc.status_code in (400, 422) and any(word in text for word in ("response_format", "json_schema", "schema"))


_FENCE = re.compile(r"```(?:json)?\s*(\{.*\})\s*```", re.DOTALL)


def parse_reply(text: str | None) -> LLMReply:
    """The model's reply as an LLMReply; ValueError with a short, model-readable reason otherwise.

    Tolerates what models add around the object: a reasoning block, a ```json fence, a sentence.
    """
    if not text or not text.strip():
        raise ValueError("the reply was empty.")
    text = THINK.sub("", text).strip()
    candidates = [text]
    fenced = _FENCE.search(text)
    if fenced:
        candidates.append(fenced.group(1))
    if "{" in text and "}" in text:
        candidates.append(text[text.index("{") : text.rindex("}") + 1])
    data = None
    for candidate in candidates:
        try:
            data = json.loads(candidate)
            break
        except json.JSONDecodeError as exc:
            problem = f"it is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})."
    if data is None:
        raise ValueError(problem)
    if not isinstance(data, dict):
        raise ValueError("the JSON is not an object.")
    try:
        return LLMReply.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"the JSON object is missing what we need ({details}).") from None


def retry_after_seconds(response: object) -> float | None:
    """Seconds from a response's Retry-After (or retry-after-ms) header, when there is one."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else None
        if message:
            return f"HTTP {exc.status_code}: {message}"
    return f"HTTP {exc.status_code}: {exc.message}"


class LLMProposer:
    """Proposes candidates by asking a chat model; see the module docstring for the conversation."""

    def __init__(
        self,
        config: ProposerConfig,
        api_key: str | None = None,
        default_base_url: str | None = None,
        prompts_dir: Path = PROMPTS_DIR,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.settings = config.llm
        self.base_url = self.settings.base_url or default_base_url
        self.prompts_dir = prompts_dir
        self.sleep = sleep
        import openai

        self.client = openai.OpenAI(
            # Local servers (vLLM, Ollama, llama.cpp) ignore the key, but the client insists on one.
            api_key=api_key or "not-needed",
            base_url=self.base_url,
            timeout=self.settings.request_timeout_seconds,
            max_retries=0,  # we retry ourselves, so that every attempt is recorded and bounded
        )

    # --- one proposal ------------------------------------------------------------------------------

    def propose(self, context: ProposalContext) -> Proposal:
        """One proposal. A failure nothing foresaw (a reply the client cannot read, a bug) makes a failed
        proposal with the reason; the calls made on the way still count. An endpoint that stays down raises
        ProposerUnavailable."""
        calls: list[LLMCallRecord] = []
        try:
            return self._propose(context, calls)
        except ProposerUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded on the candidate, never lost with its tokens
            return Proposal(name="proposer_failed", thought="", code="", llm_calls=calls,
                            invalid_error=f"the proposer failed: {type(exc).__name__}: {str(exc)[:500]}")

    def _propose(self, context: ProposalContext, calls: list[LLMCallRecord]) -> Proposal:
        target = get_target(context.target)
        settings = self.settings
        messages = initial_messages(target, context, self.config.history, self.prompts_dir)
        parent_ids = self._parents(context)
        repairs_left = settings.repair_attempts
        duplicate_retries_left = settings.duplicate_retries
        duplicates = 0
        while True:
            reply, raw, problem = self._ask_for_json(messages, calls)
            if reply is None:
                return Proposal(
                    name="no_reply",
                    thought="",
                    code="",
                    parent_ids=parent_ids,
                    duplicates_skipped=duplicates,
                    llm_calls=calls,
                    invalid_error=f"the model gave no usable reply: {problem}",
                )
            proposal = Proposal(
                name=reply.name,
                thought=reply.thought,
                code=reply.code,
                parent_ids=parent_ids,
                ast_hash=ast_hash(reply.code),
                duplicates_skipped=duplicates,
                llm_calls=calls,
            )
            issues = check_source(reply.code, target)
            if issues:
                report = format_issues(issues)
                if repairs_left > 0:
                    repairs_left -= 1
                    messages += [
                        {"role": "assistant", "content": raw},
                        {"role": "user", "content": repair_prompt(target, report, self.prompts_dir)},
                    ]
                    continue
                proposal.invalid_error = report
                return proposal
            if proposal.ast_hash in context.known_hashes:
                duplicates += 1
                if duplicate_retries_left > 0:
                    duplicate_retries_left -= 1
                    messages += [
                        {"role": "assistant", "content": raw},
                        {"role": "user", "content": duplicate_prompt(self.prompts_dir)},
                    ]
                    continue
                proposal.duplicates_skipped = duplicates
                proposal.invalid_error = (
                    f"the model proposed only algorithms already in the run ({duplicates} duplicates)"
                )
                return proposal
            return proposal

    def _parents(self, context: ProposalContext) -> list[str]:
        """The scored candidates the model was shown, best first: parent_ids[0] is the diff base."""
        warm = context.warm_start
        shown = shown_entries(context, self.config.history)
        shown.sort(key=lambda e: (-(e.score if e.score is not None else 1.0 if e is warm else 0.0), e.index))
        return [e.candidate_id for e in shown]

    def _ask_for_json(
        self, messages: list[dict[str, str]], calls: list[LLMCallRecord]
    ) -> tuple[LLMReply | None, str, str]:
        """(reply, raw text, problem): re-asks up to `format_retries` times for a usable JSON object."""
        problem = ""
        raw = ""
        for attempt in range(self.settings.format_retries + 1):
            raw = self._complete(messages, calls)
            try:
                return parse_reply(raw), raw, ""
            except ValueError as exc:
                problem = str(exc)
                calls[-1].error = f"unusable reply: {problem}"
            if attempt < self.settings.format_retries:
                messages += [
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": format_prompt(problem, self.prompts_dir)},
                ]
        return None, raw, problem

    # --- one request, with retries -----------------------------------------------------------------

    def _request_options(self) -> dict[str, object]:
        settings = self.settings
        options: dict[str, object] = {}
        if settings.send_temperature and settings.temperature is not None:
            options["temperature"] = settings.temperature
        if settings.max_completion_tokens is not None:
            options["max_completion_tokens"] = settings.max_completion_tokens
        elif settings.max_tokens is not None:
            options["max_tokens"] = settings.max_tokens
        if settings.reasoning_effort is not None:
            options["reasoning_effort"] = settings.reasoning_effort
        if settings.seed is not None:
            options["seed"] = settings.seed
        if settings.json_mode:
            schema_refused = (self.base_url or "") in SCHEMA_REFUSED_BY
            options["response_format"] = JSON_OBJECT_FORMAT if schema_refused else REPLY_FORMAT
        return options

    def _cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        settings = self.settings
        if settings.price_per_1k_prompt_tokens is None and settings.price_per_1k_completion_tokens is None:
            return None
        return (prompt_tokens or 0) / 1000.0 * (settings.price_per_1k_prompt_tokens or 0.0) + (
            completion_tokens or 0
        ) / 1000.0 * (settings.price_per_1k_completion_tokens or 0.0)

    def _complete(self, messages: list[dict[str, str]], calls: list[LLMCallRecord]) -> str:
        """The reply text of one chat completion; retries transient failures, records every attempt."""
        import openai

        settings = self.settings
        started = time.monotonic()
        last_error = ""
        for attempt in range(1, settings.max_attempts + 1):
            record = LLMCallRecord(model=settings.model, messages=[dict(m) for m in messages])
            t0 = time.monotonic()
            wait: float | None = None
            try:
                completion = self.client.chat.completions.create(
                    model=settings.model,
                    messages=messages,  # type: ignore[arg-type]
                    **self._request_options(),  # type: ignore[arg-type]
                )
            except openai.APIStatusError as exc:
                record.latency_ms = (time.monotonic() - t0) * 1000.0
                record.error = last_error = _status_message(exc)
                calls.append(record)
                endpoint = self.base_url or ""
                if settings.json_mode and endpoint not in SCHEMA_REFUSED_BY and refuses_the_schema(exc):
                    SCHEMA_REFUSED_BY.add(endpoint)  # ask again at once, with json_object
                    continue
                if exc.status_code not in RETRYABLE_STATUS and exc.status_code < 500:
                    raise ProposerUnavailable(self._refused_reason(exc), calls) from exc
                wait = retry_after_seconds(exc.response)
            except openai.APIConnectionError as exc:  # includes timeouts
                record.latency_ms = (time.monotonic() - t0) * 1000.0
                record.error = last_error = f"{type(exc).__name__}: {exc}"
                calls.append(record)
            else:
                record.latency_ms = (time.monotonic() - t0) * 1000.0
                usage = completion.usage
                record.prompt_tokens = usage.prompt_tokens if usage else None
                record.completion_tokens = usage.completion_tokens if usage else None
                record.cost_usd = self._cost(record.prompt_tokens, record.completion_tokens)
                calls.append(record)  # counted even when its reply cannot be read
                choice = completion.choices[0] if completion.choices else None
                record.reply = (choice.message.content if choice else None) or ""
                return record.reply
            if attempt == settings.max_attempts:
                break
            backoff = min(settings.backoff_seconds * 2 ** (attempt - 1), settings.backoff_max_seconds)
            self.sleep(min(wait, settings.backoff_max_seconds) if wait is not None else backoff)
        raise ProposerUnavailable(
            f"the model endpoint {self.base_url or 'api.openai.com'} failed {settings.max_attempts} times "
            f"in {time.monotonic() - started:.1f} s; last error: {last_error}",
            calls,
        )

    def _refused_reason(self, exc: openai.APIStatusError) -> str:
        endpoint = self.base_url or "api.openai.com"
        reason = f"the model endpoint {endpoint} refused the request: {_status_message(exc)}"
        if exc.status_code in (401, 403):
            reason += " (check the server's API key setting)"
        elif exc.status_code == 404:
            reason += f" (is the model name {self.settings.model!r} right?)"
        elif exc.status_code in (400, 422):
            reason += f" ({PARAMETER_HINT})"
        return reason

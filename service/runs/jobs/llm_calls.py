"""Recording a proposal's requests to a language model, and their tokens and cost on the run."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.db.models import LlmCall, Run
from service.db.text import ERROR_CHARS, storable, storable_json
from service.proposers import LLMCallRecord


def record_calls(session: Session, run: Run, candidate_id: str | None, calls: list[LLMCallRecord]) -> str | None:
    """Store the calls (capped where stored), count their tokens and cost on the run; the last call's id."""
    last_id = None
    for call in calls:
        fields = call.model_dump()
        fields.update(messages=storable_json(fields["messages"]),
                      reply=storable(fields["reply"]) if fields.get("reply") is not None else None,
                      error=storable(fields["error"], ERROR_CHARS, keep_tail=True) if fields.get("error") else None)
        row = LlmCall(run_id=run.id, candidate_id=candidate_id, **fields)
        session.add(row)
        session.flush()
        last_id = row.id
        run.tokens_used += (call.prompt_tokens or 0) + (call.completion_tokens or 0)
        run.cost_usd += call.cost_usd or 0.0
    return last_id

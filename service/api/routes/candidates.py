"""One candidate in full: code, thought, lineage, diff against its parent, evaluations, the LLM call."""

from __future__ import annotations

import difflib

from fastapi import APIRouter, HTTPException
from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session

from service.api.deps import KeyDep, SessionDep
from service.api.schemas import CandidateDetail, CandidateSummary, EvaluationOut, LlmCallOut, Problem
from service.db.models import ApiKey, Candidate, Evaluation, LlmCall, Run

router = APIRouter(prefix="/v1", tags=["candidates"], responses={401: {"model": Problem}})


def candidate_summary(c: Candidate) -> CandidateSummary:
    return CandidateSummary(
        id=c.id, run_id=c.run_id, index=c.index, name=c.name, is_warm_start=c.is_warm_start,
        reference=c.reference, status=c.status,
        outcome=c.outcome, score=c.score, pooled_score=c.pooled_score, parent_ids=list(c.parent_ids),
        error=c.error, created_at=c.created_at, evaluated_at=c.evaluated_at,
    )


def owned_candidate(session: Session, key: ApiKey, candidate_id: str) -> Candidate:
    candidate = session.scalar(select(Candidate).join(Run, Run.id == Candidate.run_id)
                               .where(Candidate.id == candidate_id, Run.owner_key_id == key.id))
    if candidate is None:
        raise HTTPException(404, f"no candidate {candidate_id!r}")
    return candidate


@router.get("/candidates/{candidate_id}", response_model=CandidateDetail, responses={404: {"model": Problem}})
def get_candidate(candidate_id: str, key: KeyDep, session: SessionDep) -> CandidateDetail:
    c = owned_candidate(session, key, candidate_id)
    parent = session.get(Candidate, c.parent_ids[0]) if c.parent_ids else None
    diff = None
    if parent is not None:
        diff = "".join(difflib.unified_diff(parent.code.splitlines(keepends=True), c.code.splitlines(keepends=True),
                                            fromfile=f"#{parent.index} {parent.name}", tofile=f"#{c.index} {c.name}"))
    children = session.scalars(select(Candidate.id).where(
        Candidate.run_id == c.run_id, cast(Candidate.parent_ids, String).contains(c.id))).all()
    evaluations = session.scalars(select(Evaluation).where(Evaluation.candidate_id == c.id)
                                  .order_by(Evaluation.created_at)).all()
    call = session.get(LlmCall, c.llm_call_id) if c.llm_call_id else None
    return CandidateDetail(
        **candidate_summary(c).model_dump(), code=c.code, thought=c.thought, ast_hash=c.ast_hash, diff=diff,
        children=list(children),
        evaluations=[EvaluationOut(
            env=e.env, phase=e.phase, seeds=e.seeds, learning_rates=e.learning_rates, returns=e.returns,
            curves=e.curves, best_lr=e.best_lr, final_return=e.final_return, normalised_score=e.normalised_score,
            score_basis=e.score_basis, outcome=e.outcome, error=e.error, compile_seconds=e.compile_seconds,
            train_seconds=e.train_seconds,
        ) for e in evaluations],
        llm_call=LlmCallOut(
            id=call.id, model=call.model, messages=call.messages, reply=call.reply,
            prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
            latency_ms=call.latency_ms, cost_usd=call.cost_usd, error=call.error,
        ) if call else None,
    )

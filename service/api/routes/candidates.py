"""One candidate in full: code, thought, lineage, diff against its parent, evaluations, the LLM call."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from service.api.deps import KeyDep, RuntimeDep, found, read
from service.api.schemas import Problem
from service.db.models import ApiKey
from service.runs.queries.candidates import candidate_detail
from service.runs.queries.ownership import owned_candidate
from service.runs.views import CandidateDetail

router = APIRouter(prefix="/v1", tags=["candidates"], responses={401: {"model": Problem}})


@router.get("/candidates/{candidate_id}", response_model=CandidateDetail, responses={404: {"model": Problem}})
async def get_candidate(candidate_id: str, key: KeyDep, runtime: RuntimeDep) -> CandidateDetail:
    return await read(runtime, _owned_candidate_detail, key, candidate_id)


def _owned_candidate_detail(session: Session, key: ApiKey, candidate_id: str) -> CandidateDetail:
    return candidate_detail(session, found(owned_candidate(session, key, candidate_id), "candidate", candidate_id))

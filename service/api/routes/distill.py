"""Distillation: a scored candidate of a run (its teacher) becomes a student network of the run."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from service.api.deps import KeyDep, RuntimeDep, SessionDep, found
from service.api.schemas import Problem
from service.runs.distill import DistillRefused, DistillRequest, request_distillation
from service.runs.orchestrator import advance
from service.runs.queries.ownership import owned_candidate, owned_run
from service.runs.views import StudentOut

router = APIRouter(prefix="/v1", tags=["runs"], responses={401: {"model": Problem}})


@router.post("/runs/{run_id}/distill", response_model=StudentOut, status_code=202,
             responses={200: {"description": "this student was asked for before: the same one (a `StudentOut`)"},
                        404: {"model": Problem}, 409: {"model": Problem}, 422: {"model": Problem}})
def distill_candidate(run_id: str, body: DistillRequest, key: KeyDep, session: SessionDep, runtime: RuntimeDep,
                      response: Response) -> StudentOut:
    """Distil the run's scored candidate `candidate_id` (code or network) into a student: a network of `width`
    hidden units fitted to the teacher's gradient map (the ratio-gradient of PPO's policy loss with its drift) on a
    grid, or a `formula` evolved from the warm start to match that map, which then takes the untrusted path of a
    proposal. A code teacher's map is computed in the sandbox. The student is a candidate of the run with the
    teacher as its parent, evaluated, raced and meta-tested like any other (a completed run runs again until it
    is). 404: no such run or candidate; 409: the teacher has no score yet, or the run cannot evaluate a student
    now; 422: a bad request, or a target with no network."""
    found(owned_run(session, key, run_id), "run", run_id)
    try:
        student_id, created = request_distillation(runtime.factory, run_id, body)
    except DistillRefused as refused:
        raise HTTPException(refused.status, refused.message) from None
    advance(runtime.factory, run_id, runtime.publish)
    session.expire_all()
    if not created:
        response.status_code = 200
    return StudentOut.model_validate(found(owned_candidate(session, key, student_id), "candidate", student_id))

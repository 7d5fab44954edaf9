"""Asking for a distillation: a scored candidate of a run (code or network) becomes a student of the run.

`request_distillation` checks the request against the run and its teacher, then, in one transaction, records the
student (a `network` candidate whose vector is not fitted yet, the teacher its parent, numbered from
`STUDENT_INDEX_BASE` so it never takes a proposal's number) and its `distill` job; a completed run goes back to
running, as an extension by no proposals would, so the student is evaluated, raced and meta-tested like any
candidate. The job (`service/runs/jobs/distill.py`) fits it and adds its `evaluate` job. Asking again for the same
teacher and student gives back the same student. A `formula` student is a code candidate whose code the job finds
(`service/proposers/symbolic.py`); until then its code is a note.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.db.models import Candidate, Job, Run
from service.runs.events import emit
from service.runs.orchestrator import add_job, lock_run, run_summary
from workers.results import DEFAULT_STEPS, MAX_GRID
from workers.targets import TARGETS
from workers.targets.base import Network
from workers.vocabulary import CandidateKind, CandidateStatus, EventType, JobKind, RunStatus

STUDENT_INDEX_BASE = 100_000  # students are #100001, #100002, ... in their run (proposals stay below 1,000)


class NetworkStudent(BaseModel):
    """A student network: the target's network at `width` hidden units (128: ES's network itself), fitted by MSE
    to the teacher's gradient map on a `grid` x `grid` grid with Adam, `learning_rate` -> `final_learning_rate`
    (the paper's 1e-4 -> 1e-5) over `steps`."""

    kind: Literal["network"] = "network"
    width: int = Field(128, ge=1, le=MAX_GRID)
    steps: int = Field(DEFAULT_STEPS, ge=1, le=20_000)
    learning_rate: float = Field(1e-4, gt=0.0, le=0.1)
    final_learning_rate: float = Field(1e-5, gt=0.0, le=0.1)
    grid: int = Field(256, ge=16, le=MAX_GRID, description="samples per axis (A and log r); the paper's is 1024")
    seed: int = Field(0, ge=0, lt=2**31)


class FormulaStudent(BaseModel):
    """A symbolic student: an expression evolved from the warm start by our AST mutations (`children` of them),
    each scored by the MSE of its gradient map against the teacher's on a `grid` x `grid` grid in the sandbox; the
    best becomes code, probed, checked and evaluated like a proposal (`service/proposers/symbolic.py`)."""

    kind: Literal["formula"]
    children: int = Field(16, ge=1, le=200)
    grid: int = Field(64, ge=16, le=256)
    seed: int = Field(0, ge=0, lt=2**31)


class DistillRequest(BaseModel):
    """Distil the run's scored candidate `candidate_id` (its teacher) into a student."""

    candidate_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    student: Annotated[NetworkStudent | FormulaStudent, Field(discriminator="kind")] = Field(
        default_factory=NetworkStudent)


class DistillRefused(Exception):
    """The request cannot be served: `status` is the HTTP status it answers with (404, 409, 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _teacher(session: Session, run: Run, candidate_id: str) -> Candidate:
    teacher = session.get(Candidate, candidate_id)
    if teacher is None or teacher.run_id != run.id:
        raise DistillRefused(404, f"no candidate {candidate_id!r} in run {run.id}")
    if teacher.status != CandidateStatus.EVALUATED or teacher.counted_score is None:
        raise DistillRefused(409, f"candidate #{teacher.index} has no score yet ({teacher.status}): only a scored "
                                  "candidate can be distilled")
    if teacher.kind == CandidateKind.NETWORK and teacher.parameters_sha256 is None:
        raise DistillRefused(409, f"candidate #{teacher.index} has no parameter vector")
    return teacher


def _check_run(run: Run) -> None:
    if run.status in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED, RunStatus.QUEUED):
        raise DistillRefused(409, f"run {run.id} is {run.status}: a student is evaluated only in a running or "
                                  "completed run")
    if run.status == RunStatus.COMPLETING:
        raise DistillRefused(409, f"run {run.id} is meta-testing its finalists; distil once it has completed")


def _next_index(session: Session, run_id: str) -> int:
    last = session.scalar(select(func.max(Candidate.index)).where(Candidate.run_id == run_id,
                                                                  Candidate.index > STUDENT_INDEX_BASE))
    return (last or STUDENT_INDEX_BASE) + 1


def student_note(network: str, width: int, teacher: Candidate) -> str:
    """What a student shows where a code candidate shows its code."""
    return (f"# A distilled student: {network}, {width} hidden units, fitted to the gradient map of candidate "
            f"#{teacher.index} ({teacher.name}).\n# Not readable code: its parameters are data; its best.py export "
            "writes the network and its parameters as a standalone file.\n")


def _student(run: Run, teacher: Candidate, spec: NetworkStudent | FormulaStudent, sized: Network | None
             ) -> Candidate:
    """The student's row before it is fitted (a network) or found (a formula: code, once the search is done)."""
    common = {"run_id": run.id, "parent_ids": [teacher.id], "status": CandidateStatus.PENDING, "operator": "distill",
              "island": teacher.island}
    if sized is not None and isinstance(spec, NetworkStudent):
        return Candidate(**common, kind=CandidateKind.NETWORK, network=sized.name,
                         name=f"student of #{teacher.index} ({spec.width} units)"[:200],
                         thought=f"{sized.name} fitted to the gradient map of #{teacher.index} {teacher.name}.",
                         code=student_note(sized.name, spec.width, teacher))
    return Candidate(**common, kind=CandidateKind.CODE, name=f"formula of #{teacher.index}"[:200],
                     thought=f"An expression evolved to match the gradient map of #{teacher.index} {teacher.name}.",
                     code=f"# A formula student of #{teacher.index} ({teacher.name}): being searched.\n")


def request_distillation(factory: sessionmaker[Session], run_id: str, request: DistillRequest) -> tuple[str, bool]:
    """(the student's id, whether it is new), or DistillRefused with the status that says why not."""
    student_spec = request.student
    with session_scope(factory) as session:
        run = lock_run(session, run_id)
        if run is None:
            raise DistillRefused(404, f"no run {run_id!r}")
        network = TARGETS[run.target].network
        if network is None or not network.distill_kernel:
            raise DistillRefused(422, f"target {run.target!r} has no network to distil into")
        teacher = _teacher(session, run, request.candidate_id)
        spec = {"teacher_id": teacher.id, **student_spec.model_dump(mode="json")}
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        dedupe = f"distill:{teacher.id}:{digest[:32]}"
        existing = session.scalar(select(Job.candidate_id).where(Job.dedupe_key == dedupe))
        if existing is not None:
            return existing, False
        _check_run(run)
        student = _student(run, teacher, student_spec, network.sized(student_spec.width)
                           if isinstance(student_spec, NetworkStudent) else None)
        student.index = _next_index(session, run.id)
        student.ast_hash = hashlib.sha256(f"distill:{digest}".encode()).hexdigest()
        student.stats = {"distillation": spec}
        session.add(student)
        session.flush()
        add_job(session, run, JobKind.DISTILL, dedupe, candidate_id=student.id)
        emit(session, run.id, EventType.CANDIDATE_PROPOSED, {"candidate_id": student.id, "index": student.index,
                                                              "name": student.name, "parent_id": teacher.id})
        if run.status == RunStatus.COMPLETED:  # evaluated, raced and meta-tested like an extension's candidate
            run.status, run.finished_at, run.error = RunStatus.RUNNING, None, None
            emit(session, run.id, EventType.RUN_STARTED, {**run_summary(run), "distilling": student.id})
        return student.id, True

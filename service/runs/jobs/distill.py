"""The `distill` job: fit a student (`service/runs/distill.py` recorded it) to its teacher, then evaluate it.

(A `formula` student's search and its untrusted path are in `formula.py`; this module dispatches to it.)

The teacher's gradient map comes from the sandbox for a code teacher (`workers.distill.teacher_grid`: the tracer
child evaluates the candidate on the grid and only the numbers are kept); a network teacher's vector goes to the
fit as it is stored (its map is computed from the project's own network). The fit runs in a fresh sandboxed child
with no candidate code (`workers.distill.fit_student`), and its vector is kept only through the parameter gate.
One transaction then stores the vector (content-addressed, as ES's), gives it to the student with the fit's
report, adds the student's `evaluate` job and marks this job done. A failure fails the student with the reason
(and this job is done: the failure is its result). Nothing is written before, so a re-run starts over.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope, utcnow
from service.db.models import Candidate, Job, ParameterVector, Run
from service.db.text import ERROR_CHARS, storable
from service.evaluation import tracer_limits
from service.runs.distill import FormulaStudent, NetworkStudent
from service.runs.events import emit
from service.runs.jobs.es import store_vector
from service.runs.jobs.formula import find_formula, record_formula
from service.runs.orchestrator import add_job, lock_run
from service.settings import Settings
from workers.distill import Distilled, fit_student, teacher_grid
from workers.results import FitReport, FitSpec, GridSpec
from workers.sandbox.host import SandboxLimits
from workers.targets import TARGETS
from workers.trainer.parameters import encode_parameters
from workers.vocabulary import CandidateKind, CandidateStatus, EventType, JobKind, JobStatus, Outcome

FIT_TIMEOUT_SECONDS = 900.0  # a fit's wall-clock limit (the default one takes seconds; 1024 x 1024 takes longer)


class _Work(BaseModel):
    """The job as plain values: the student's spec and its teacher's code or vector."""

    run_id: str
    target: str
    student_id: str
    network: str | None
    spec: Annotated[NetworkStudent | FormulaStudent, Field(discriminator="kind")]
    teacher_code: str | None = None
    teacher_vector: list[float] | None = None
    teacher_network: str | None = None
    teacher_width: int | None = None


def _load(session: Session, job: Job) -> _Work:
    run, student = session.get(Run, job.run_id), session.get(Candidate, job.candidate_id)
    spec = dict((student.stats or {}).get("distillation") or {})
    teacher = session.get(Candidate, spec.pop("teacher_id"))
    work = _Work(run_id=run.id, target=run.target, student_id=student.id, network=student.network, spec=spec)
    if teacher.kind == CandidateKind.NETWORK:
        stored = session.get(ParameterVector, teacher.parameters_sha256)
        sized = TARGETS[run.target].network.resolve(teacher.network or stored.network)
        work.teacher_vector = np.frombuffer(stored.data, dtype="<f4").astype(float).tolist()
        work.teacher_network, work.teacher_width = sized.name, sized.hidden
    else:
        work.teacher_code = teacher.code
    return work


def fit_limits(settings: Settings) -> SandboxLimits:
    """The tracer's limits, with the time a fit needs."""
    limits = tracer_limits(settings)
    return limits.model_copy(update={"timeout_seconds": max(limits.timeout_seconds, FIT_TIMEOUT_SECONDS),
                                     "cpu_seconds": max(limits.cpu_seconds, int(2 * FIT_TIMEOUT_SECONDS))})


def distill(settings: Settings, work: _Work) -> Distilled:
    """The teacher's map (a code teacher's, in the sandbox) and the student fitted to it."""
    spec = work.spec
    assert isinstance(spec, NetworkStudent)
    grid = GridSpec(advantages=spec.grid, ratios=spec.grid)
    if work.teacher_code is not None:
        mapped = teacher_grid(work.target, work.teacher_code, grid, tracer_limits(settings))
        if mapped.outcome != Outcome.ok or mapped.values is None:
            return mapped
        teacher = {"teacher_map": encode_parameters(mapped.values)}
    else:
        teacher = {"teacher_parameters": encode_parameters(np.asarray(work.teacher_vector, dtype=np.float32)),
                   "teacher_width": work.teacher_width}
    fit = FitSpec(width=spec.width, steps=spec.steps, learning_rate=spec.learning_rate,
                  final_learning_rate=spec.final_learning_rate, seed=spec.seed, grid=grid, **teacher)
    sized = TARGETS[work.target].network.resolve(work.network)
    return fit_student(work.target, fit, sized.parameter_count, fit_limits(settings))


def report_text(report: FitReport) -> str:
    relative = report.final_mse / report.teacher_mean_square if report.teacher_mean_square > 0 else 0.0
    return (f"Fitted in {report.steps} Adam steps ({report.seconds:.1f} s): MSE of the gradient map "
            f"{report.initial_mse:.4g} -> {report.final_mse:.4g} ({relative:.2%} of the teacher's mean square), "
            f"largest error {report.max_abs_error:.3g}.")


def run_distillation(factory: sessionmaker[Session], settings: Settings, job_id: str) -> None:
    """Fit the job's student and record it (with its `evaluate` job), or fail it with the reason."""
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        student = session.get(Candidate, job.candidate_id)
        if student.status != CandidateStatus.PENDING or student.parameters_sha256 or student.artifact_sha256:
            _done(session, job_id)
            return
        work = _load(session, job)
    if isinstance(work.spec, FormulaStudent):
        _run_formula(factory, settings, job_id, work)
        return
    done = distill(settings, work)
    with session_scope(factory) as session:
        run = lock_run(session, work.run_id)
        student = session.get(Candidate, work.student_id)
        if done.outcome == Outcome.ok and done.values is not None and done.report is not None:
            student.parameters_sha256 = store_vector(session, work.network, done.values)
            student.thought = f"{student.thought} {report_text(done.report)}"
            student.stats = {**student.stats, "distillation": {**student.stats["distillation"],
                                                               "report": done.report.model_dump(mode="json")}}
            if not run.ended:
                add_job(session, run, JobKind.EVALUATE, f"evaluate:{student.id}", candidate_id=student.id)
        else:
            student.status, student.outcome = CandidateStatus.FAILED, done.outcome
            student.error = storable(done.error or str(done.outcome), ERROR_CHARS, keep_tail=True)
            student.evaluated_at = utcnow()
            _failed(session, run, student)
        _done(session, job_id)


def _failed(session: Session, run: Run, student: Candidate) -> None:
    emit(session, run.id, EventType.CANDIDATE_EVALUATED, {"candidate_id": student.id, "index": student.index,
                                                           "outcome": student.outcome, "score": None})


def _done(session: Session, job_id: str) -> None:
    job = session.get(Job, job_id)
    job.status, job.finished_at = JobStatus.DONE, utcnow()


def _run_formula(factory: sessionmaker[Session], settings: Settings, job_id: str, work: _Work) -> None:
    """Search the formula student's expression and record it (with its `evaluate` job), or fail it."""
    assert isinstance(work.spec, FormulaStudent)
    vector = np.asarray(work.teacher_vector, dtype=np.float32) if work.teacher_vector is not None else None
    found = find_formula(settings, work.target, work.spec, work.teacher_code, vector, work.teacher_network)
    with session_scope(factory) as session:
        run = lock_run(session, work.run_id)
        student = session.get(Candidate, work.student_id)
        if record_formula(session, run, student, found):
            if not run.ended:
                add_job(session, run, JobKind.EVALUATE, f"evaluate:{student.id}", candidate_id=student.id)
        else:
            _failed(session, run, student)
        _done(session, job_id)

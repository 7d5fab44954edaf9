"""A formula student (`distill` job of a `formula` student): search an expression, then the untrusted path.

The teacher's map on the search's small grid comes from the sandbox: a code teacher's through the static check
and the tracer's `grid` mode; a network teacher's from its standalone source (`export.network_module`: project
code written from its numbers, through the same child). Each child of the search (`service.proposers.symbolic`)
is scored by the MSE of its own map, computed in the sandbox with the target's rules checked first. The best
expression is then probed like a proposal (`trace_code` with the rules: its fingerprint, a duplicate turned away)
and, when it passes, becomes the student's code with its `evaluate` job (which traces and trains it as any code
candidate). The search's record (its MSE against the warm start's, what it tried) is kept in
`stats.distillation.report`.
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np
from pydantic import BaseModel
from sqlalchemy.orm import Session

from service.db import utcnow
from service.db.models import Candidate, Run
from service.db.text import CODE_CHARS, ERROR_CHARS, storable
from service.evaluation import trace_code, tracer_limits
from service.proposers import ast_hash
from service.proposers.base import Proposal
from service.proposers.symbolic import SymbolicResult, search
from service.runs.distill import FormulaStudent
from service.runs.export import network_module
from service.runs.jobs.propose import _judge, store_artifact
from service.settings import Settings
from workers.distill import Distilled, keep_grid, teacher_grid
from workers.results import GridSpec, TraceRequest, TraceResult
from workers.sandbox.isolate import run_tracer
from workers.targets import TARGETS
from workers.vocabulary import CandidateStatus, Outcome


class FormulaFound(BaseModel):
    """The search's outcome: the best expression and its probe, or why there is none."""

    result: SymbolicResult | None = None
    trace: TraceResult | None = None
    error: str | None = None
    outcome: Outcome = Outcome.ok


def teacher_map(settings: Settings, target: str, code: str | None, vector: np.ndarray | None, network: str | None,
                grid: GridSpec) -> Distilled:
    """The teacher's map on `grid`, computed in the sandbox."""
    limits = tracer_limits(settings)
    if code is not None:
        return teacher_grid(target, code, grid, limits)
    sized = TARGETS[target].network.resolve(network or "")
    source = network_module(sized, vector)  # project code, written from the teacher's numbers
    return keep_grid(run_tracer(TraceRequest(target=target, code=source, grid=grid), limits), grid)


def find_formula(settings: Settings, target: str, spec: FormulaStudent, code: str | None,
                 vector: np.ndarray | None, network: str | None) -> FormulaFound:
    """Search the expression whose map is nearest the teacher's, then probe it as a proposal is probed."""
    grid = GridSpec(advantages=spec.grid, ratios=spec.grid)
    mapped = teacher_map(settings, target, code, vector, network, grid)
    if mapped.outcome != Outcome.ok or mapped.values is None:
        return FormulaFound(error=mapped.error, outcome=mapped.outcome)
    teacher = mapped.values.astype(np.float64)
    limits = tracer_limits(settings)

    def fitness(child: str) -> float | None:
        kept = keep_grid(run_tracer(TraceRequest(target=target, code=child, grid=grid, check_rules=True), limits),
                         grid)
        return float(np.mean(np.square(kept.values - teacher))) if kept.values is not None else None

    result = search(target, TARGETS[target].warm_start, fitness, spec.children, spec.seed)
    if result is None:
        return FormulaFound(error="the warm start's map could not be computed", outcome=Outcome.error)
    return FormulaFound(result=result, trace=trace_code(settings, target, result.code, check_rules=True))


def report_of(result: SymbolicResult) -> dict[str, object]:
    return {"mse": result.mse, "start_mse": result.start_mse, "mutations": result.mutations,
            "children_tried": result.tried, "children_scored": result.scored}


def record_formula(session: Session, run: Run, student: Candidate, found: FormulaFound) -> bool:
    """Write the search's outcome on the student: its code (to be evaluated: True) or why not (False)."""
    result = found.result
    error, outcome, duplicate_of = found.error, found.outcome, None
    if result is not None:
        proposal = Proposal(name=student.name, thought="", code=result.code, ast_hash=ast_hash(result.code),
                            trace=found.trace)
        error, outcome, duplicate_of = _judge(session, run, proposal)
        student.code = storable(result.code, CODE_CHARS)
        student.thought = (f"{student.thought} Evolved in {result.tried} children ({result.scored} scored): MSE of "
                           f"the gradient map {result.start_mse:.4g} (the warm start) -> {result.mse:.4g}; "
                           f"{'; '.join(result.mutations) or 'no change kept'}.")
        student.stats = {**student.stats, "distillation": {**student.stats["distillation"],
                                                           "report": report_of(result)}}
        if error is None and found.trace is not None:
            student.ast_hash, student.fingerprint = proposal.ast_hash, found.trace.fingerprint
            student.artifact_sha256 = store_artifact(session, run.target,
                                                     base64.b64decode(found.trace.artifact or ""))
            return True
        student.ast_hash = hashlib.sha256(f"unevaluated:{student.id}:{result.code}".encode()).hexdigest()
    student.status, student.outcome, student.duplicate_of = CandidateStatus.FAILED, outcome, duplicate_of
    student.error = storable(error or "the search found no expression", ERROR_CHARS, keep_tail=True)
    student.evaluated_at = utcnow()
    return False

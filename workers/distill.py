"""Distillation across the sandbox boundary: what the tracer child is asked, and what the parent keeps of its answer.

Two requests, both answered by a fresh sandboxed tracer child (`workers.sandbox.tracer`):

- **grid** (`TraceRequest.grid`): load a code teacher (untrusted), probe it, and evaluate its gradient map on the
  distillation grid (`workers.targets.kernels.lpo_distill.gradient_map`). The child answers with one float32
  array; the parent (`teacher_grid`) keeps nothing else: the array is decoded only if its dtype, shape and byte
  count are exactly the grid's, and refused unless every value is finite and within `MAP_BOUND`. A failure
  keeps only the outcome (and the static check's own issues, written by this process): no text of the child's.
- **fit** (`TraceRequest.fit`): no candidate code at all. Fit a student network to a teacher given as numbers (a
  code teacher's map from a grid request, or a network teacher's parameter vector, whose map the child computes
  from the project's own network). The answer is the student's vector, kept only through the parameter gate
  (`workers.trainer.parameters.decode_parameters`), and a `FitReport` of plain numbers.

JAX-free: the service imports this module.
"""

from __future__ import annotations

import logging

import numpy as np
from pydantic import BaseModel, ConfigDict

from workers.results import FitReport, FitSpec, GridSpec, TraceRequest, TraceResult
from workers.sandbox.host import SandboxLimits
from workers.sandbox.isolate import run_tracer
from workers.sandbox.static_check import check_source, format_issues
from workers.targets import get_target
from workers.trainer.parameters import DEFAULT_BOUND, decode_parameters
from workers.trainer.protocol import EncodedArray
from workers.vocabulary import Outcome

log = logging.getLogger(__name__)

MAP_BOUND = 1e6  # |g| on the grid: a drift's ratio-gradient past it is refused as a teacher

class Distilled(BaseModel):
    """What the parent keeps of a sandboxed distillation step: numbers, or an outcome and a message of its own."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    outcome: Outcome
    error: str | None = None
    report: FitReport | None = None
    values: np.ndarray | None = None  # the teacher's map [grid.size], or the student's vector


def decode_values(encoded: EncodedArray | None, size: int, bound: float) -> np.ndarray:
    """A float32 vector of exactly `size` finite values within +-bound, checked before and after decoding. The
    messages are this module's own: nothing the child wrote (not even its dtype's name) is echoed."""
    if encoded is None:
        raise ValueError("no values came back")
    if encoded.dtype != "float32" or encoded.shape != [size]:
        raise ValueError(f"the values must be float32 of shape [{size}]")
    if len(encoded.data) != 4 * ((4 * size + 2) // 3):
        raise ValueError(f"the values must be exactly {4 * size} bytes, base64-encoded")
    try:
        values = encoded.decode().astype(np.float32)
    except ValueError:
        raise ValueError("the values are not valid base64") from None
    if values.shape != (size,) or not np.isfinite(values).all() or np.abs(values).max(initial=0.0) > bound:
        raise ValueError(f"the values must be {size} finite numbers within +-{bound:g}")
    return values


def teacher_grid(target: str, code: str, grid: GridSpec, limits: SandboxLimits) -> Distilled:
    """A code teacher's gradient map, computed in the sandbox: the static check here, then a fresh tracer child."""
    issues = check_source(code, get_target(target))
    if issues:
        return Distilled(outcome=Outcome.invalid, error=f"the teacher's code is refused: {format_issues(issues)}")
    return keep_grid(run_tracer(TraceRequest(target=target, code=code, grid=grid), limits), grid)


def keep_grid(result: TraceResult, grid: GridSpec) -> Distilled:
    """What the parent keeps of a grid child's answer: the map, if it is exactly the grid's float32 values, all
    finite and within `MAP_BOUND`; otherwise the outcome and words of this process's own (the child's error,
    output and every other field are dropped; its error is logged)."""
    if result.outcome != Outcome.ok:
        log.info("a teacher's grid ended %s: %s", result.outcome, (result.error or "")[:300])
        return Distilled(outcome=result.outcome, error="the teacher's gradient map could not be computed in the "
                         f"sandbox (outcome: {result.outcome})")
    try:
        values = decode_values(result.values, grid.size, MAP_BOUND)
    except ValueError as exc:
        return Distilled(outcome=Outcome.invalid, error=f"the teacher's gradient map was refused: {exc}")
    return Distilled(outcome=Outcome.ok, values=values)


def fit_student(target: str, spec: FitSpec, parameter_count: int, limits: SandboxLimits) -> Distilled:
    """Fit a student in a fresh sandboxed child (no candidate code in it); its vector through the parameter gate."""
    result = run_tracer(TraceRequest(target=target, code="", fit=spec), limits)
    if result.outcome != Outcome.ok or result.fit_report is None:
        return Distilled(outcome=result.outcome if result.outcome != Outcome.ok else Outcome.error,
                         error=f"the student could not be fitted: {result.error or 'no report'}")
    try:
        vector = None if result.values is None else decode_parameters(result.values, parameter_count, DEFAULT_BOUND)
    except ValueError as exc:
        return Distilled(outcome=Outcome.error, error=f"the fitted student was refused: {exc}")
    if vector is None:
        return Distilled(outcome=Outcome.error, error="the student could not be fitted: no vector came back")
    return Distilled(outcome=Outcome.ok, values=np.array(vector), report=result.fit_report)

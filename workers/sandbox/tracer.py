"""The tracer: `python -m workers.sandbox.tracer --result-fd N [--seccomp-fd F]`, the sandboxed child.

Reads one `TraceRequest` as JSON from stdin, loads the candidate, probes it on fixed inputs (checking
the target's rules and fingerprinting what it computes) and exports the candidate *function alone*
with `jax.export` at symbolic shapes, batched over a leading lane axis, for the requested platforms.
Its only output is one `TraceResult` (the artifact bytes, the probe's verdict and fingerprint) as
size-capped JSON on the result descriptor. Two distillation modes (`workers.distill`): `grid` loads and
probes the candidate, then answers with its gradient map on the grid (one float32 array) instead of an
artifact; `fit` loads no candidate code and fits a student network to the numbers in the request.
It never trains and imports no environment: it has no return, curve or score to report, and nothing
it patches in this process reaches the trainer. The parent treats everything that comes back as untrusted data.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import os
import sys
import time
import traceback

import numpy as np

from workers.results import FitReport, FitSpec, GridSpec, TraceRequest, TraceResult
from workers.trainer.protocol import EncodedArray
from workers.vocabulary import Outcome

MAX_ERROR_CHARS = 4000
TRACEBACK_LINES = 12


def last_traceback_lines(exc: BaseException, lines: int = TRACEBACK_LINES) -> str:
    text = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    return "\n".join(text[-lines:])[-MAX_ERROR_CHARS:]


def trace(request: TraceRequest) -> TraceResult:
    """Load, probe and export (or, for distillation, evaluate a grid or fit a student); every exception becomes an
    outcome."""
    started = time.monotonic()

    def ended(outcome: Outcome, error: str | None = None, artifact: str | None = None,
              fingerprint: str | None = None, values: np.ndarray | None = None,
              fit_report: FitReport | None = None) -> TraceResult:
        return TraceResult(outcome=outcome, error=error, artifact=artifact, fingerprint=fingerprint,
                           seconds=time.monotonic() - started,
                           values=EncodedArray.of(values) if values is not None else None, fit_report=fit_report)

    try:
        from workers.targets import CandidateError, get_target, load_function

        try:
            target = get_target(request.target)
        except KeyError as exc:
            return ended(Outcome.invalid, str(exc.args[0]))
        if request.fit is not None:  # project code on numbers: no candidate code is loaded in this child
            vector, report = fit_student(target, request.fit)
            return ended(Outcome.ok, values=vector, fit_report=report)
        try:
            fn = load_function(request.code, target)
            outputs = target.probe(fn)
            if request.check_rules and target.check_rules is not None:
                target.check_rules(fn)
            if request.grid is not None:
                return ended(Outcome.ok, values=grid_values(fn, target, request.grid))
        except CandidateError as exc:
            if isinstance(exc.__cause__, MemoryError):
                raise exc.__cause__ from None
            return ended(Outcome.invalid, str(exc)[:MAX_ERROR_CHARS])
        try:
            artifact = export_artifact(fn, target, tuple(request.platforms), outputs)
        except CandidateError as exc:
            return ended(Outcome.invalid, str(exc)[:MAX_ERROR_CHARS])
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the candidate cannot be exported as a traced function
            return ended(Outcome.invalid, f"the function could not be exported for the trainer (it must work for "
                                          f"arrays of any length): {type(exc).__name__}: {str(exc)[:1500]}")
        return ended(Outcome.ok, artifact=base64.b64encode(artifact.to_bytes()).decode(),
                     fingerprint=artifact.fingerprint)
    except MemoryError as exc:
        return ended(Outcome.memory, f"MemoryError: {exc}"[:MAX_ERROR_CHARS])
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt from candidates too
        return ended(Outcome.error, last_traceback_lines(exc))


def _distill_kernel(target):  # noqa: ANN001, ANN202 - the kernel module stays untyped here
    from workers.targets import CandidateError

    network = target.network
    if network is None or not network.distill_kernel:
        raise CandidateError(f"target {target.name!r} has no network to distil into")
    return importlib.import_module(network.distill_kernel)


def grid_values(fn, target, grid: GridSpec) -> np.ndarray:  # noqa: ANN001 - the candidate's function and target
    """The candidate's gradient map on the distillation grid (only numbers leave this child)."""
    kernel = _distill_kernel(target)
    ratio, advantage = kernel.grid(grid.advantages, grid.ratios)
    return kernel.gradient_map(fn, ratio, advantage)


def fit_student(target, spec: FitSpec) -> tuple[np.ndarray, FitReport]:  # noqa: ANN001
    """A student fitted to the teacher the request carries as numbers: its map, or its network's vector."""
    from workers.trainer.parameters import decode_parameters

    kernel = _distill_kernel(target)
    ratio, advantage = kernel.grid(spec.grid.advantages, spec.grid.ratios)
    if spec.teacher_parameters is not None:
        count = target.network.sized(spec.teacher_width).parameter_count
        teacher = kernel.network_map(decode_parameters(spec.teacher_parameters, count), spec.teacher_width, ratio,
                                     advantage)
    else:
        teacher = spec.teacher_map.decode().astype(np.float32)
        if teacher.shape != ratio.shape or not np.isfinite(teacher).all():
            raise ValueError(f"the teacher's map must be {ratio.size} finite values")
    fitted = kernel.fit(teacher, ratio, advantage, spec.width, spec.steps, spec.learning_rate,
                        spec.final_learning_rate, spec.seed)
    report = FitReport(steps=spec.steps, initial_mse=fitted.initial_mse, final_mse=fitted.final_mse,
                       max_abs_error=fitted.max_abs_error, teacher_mean_square=fitted.teacher_mean_square,
                       seconds=fitted.seconds)
    return fitted.vector, report


def export_artifact(fn, target, platforms: tuple[str, ...], probe_outputs):  # noqa: ANN001, ANN201 - jax types stay local
    """Export every module of the target at symbolic shapes (one scope, so shared names agree), with what the
    function computed on the probe's inputs."""
    import jax
    import jax.numpy as jnp
    from jax import export

    from workers.artifact import Artifact, ProbeOutput

    names = sorted({d for spec in target.modules for a in (*spec.args, *spec.results) for d in a.dims})
    symbols = dict(zip(["lanes", *names], export.symbolic_shape(", ".join(["lanes", *names])), strict=True))

    def struct(arg) -> jax.ShapeDtypeStruct:  # noqa: ANN001
        lane = (symbols["lanes"],) if arg.lane else ()
        return jax.ShapeDtypeStruct(lane + tuple(symbols[d] for d in arg.dims), jnp.float32)

    modules = {}
    for spec in target.modules:
        exported = export.export(jax.jit(spec.build(fn)), platforms=platforms)(*(struct(a) for a in spec.args))
        modules[spec.name] = base64.b64encode(exported.serialize(vjp_order=0)).decode()
    probe = tuple(ProbeOutput.of(output) for output in probe_outputs)
    return Artifact(target=target.name, platforms=platforms, modules=modules, probe=probe)


def capped_error(error: str | None) -> str | None:
    """At most MAX_ERROR_CHARS of an error: its beginning and its end, with what was cut in between."""
    if error is None or len(error) <= MAX_ERROR_CHARS:
        return error
    cut = len(error) - MAX_ERROR_CHARS
    half = MAX_ERROR_CHARS // 2
    return f"{error[:half]}\n[... {cut} characters cut ...]\n{error[-half:]}"


def write_result(fd: int, result: TraceResult, max_bytes: int) -> None:
    result.error = capped_error(result.error)
    data = result.model_dump_json().encode()
    if len(data) > max_bytes:
        data = TraceResult(
            outcome=Outcome.error, error=f"the result has {len(data)} bytes; the limit is {max_bytes}",
            seconds=result.seconds,
        ).model_dump_json().encode()
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.close(fd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--result-fd", type=int, required=True)
    parser.add_argument("--max-result-bytes", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--seccomp-fd", type=int, default=None, help="load this seccomp filter first (no bwrap)")
    args = parser.parse_args(argv)
    if args.seccomp_fd is not None:
        from workers.sandbox.seccomp import install_from_fd

        install_from_fd(args.seccomp_fd)  # before any candidate code; failure ends the child without a result
    try:
        request = TraceRequest.model_validate_json(sys.stdin.buffer.read())
    except Exception as exc:  # noqa: BLE001
        write_result(args.result_fd, TraceResult(outcome=Outcome.error, error=f"bad request: {exc}"),
                     args.max_result_bytes)
        return
    result = trace(request)
    sys.stdout.flush()
    sys.stderr.flush()
    write_result(args.result_fd, result, args.max_result_bytes)


if __name__ == "__main__":
    main()

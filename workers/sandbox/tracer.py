"""The sandbox child: `python -m workers.sandbox.child --result-fd N [--cache-dir D] [--cache-writable]`.

Reads one `EvaluationRequest` as JSON from stdin, evaluates it in this process and writes one
`EvaluationResult` as JSON (size-capped) to the result file descriptor. Never pickle. The parent
captures stdout and stderr; this process runs inside the isolation the parent set up, and the
candidate runs in this very process, so the parent treats what comes back as untrusted data.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
import traceback
from pathlib import Path

from workers.results import EvaluationRequest, EvaluationResult, Outcome

MAX_ERROR_CHARS = 4000
TRACEBACK_LINES = 12


def last_traceback_lines(exc: BaseException, lines: int = TRACEBACK_LINES) -> str:
    text = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    return "\n".join(text[-lines:])[-MAX_ERROR_CHARS:]


def evaluate(request: EvaluationRequest, cache_dir: Path | None, cache_writable: bool) -> EvaluationResult:
    """Run the evaluation; every exception becomes an outcome."""
    started = time.monotonic()
    try:
        early = _load_and_probe(request)  # fail fast, before the trainer's heavy imports
        if early.outcome != Outcome.ok:
            return early
        try:
            from workers.evaluate import evaluate_in_process
        except ImportError:  # the trainer has not landed: load and probe only
            evaluate_in_process = None
        if evaluate_in_process is not None:
            kwargs: dict[str, object] = {"cache_dir": cache_dir}
            if "cache_writable" in inspect.signature(evaluate_in_process).parameters:
                kwargs["cache_writable"] = cache_writable
            return evaluate_in_process(request, **kwargs)
        return early
    except MemoryError as exc:
        return EvaluationResult(
            outcome=Outcome.memory, error=f"MemoryError: {exc}"[:MAX_ERROR_CHARS],
            seconds=time.monotonic() - started,
        )
    except RecursionError as exc:
        return EvaluationResult(
            outcome=Outcome.error, error=last_traceback_lines(exc), seconds=time.monotonic() - started
        )
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt from candidates too
        return EvaluationResult(
            outcome=Outcome.error, error=last_traceback_lines(exc), seconds=time.monotonic() - started
        )


def _load_and_probe(request: EvaluationRequest) -> EvaluationResult:
    """Load and probe the candidate as `evaluate_in_process` does, classifying failures the same way.

    Needs only jax (about 1 s to import) where the trainer needs gymnax and more (about 3 s): most
    hostile or broken candidates fail here. A candidate that passes is loaded again by the trainer.
    """
    from workers.targets import CandidateError, get_target, load_function

    started = time.monotonic()
    try:
        target = get_target(request.target)
    except KeyError as exc:
        return EvaluationResult(outcome=Outcome.invalid, error=str(exc.args[0]))
    try:
        fn = load_function(request.code, target)
        target.probe(fn)
    except CandidateError as exc:
        cause = exc.__cause__
        if isinstance(cause, MemoryError):
            raise cause from None
        return EvaluationResult(outcome=Outcome.invalid, error=str(exc)[:MAX_ERROR_CHARS],
                                seconds=time.monotonic() - started)
    return EvaluationResult(outcome=Outcome.ok, seconds=time.monotonic() - started)


def write_result(fd: int, result: EvaluationResult, max_bytes: int) -> None:
    if result.error and len(result.error) > MAX_ERROR_CHARS:
        cut = len(result.error) - MAX_ERROR_CHARS
        half = MAX_ERROR_CHARS // 2
        result.error = f"{result.error[:half]}\n[... {cut} characters cut ...]\n{result.error[-half:]}"
    data = result.model_dump_json().encode()
    if len(data) > max_bytes:
        data = EvaluationResult(
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
    parser.add_argument("--max-result-bytes", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--cache-writable", action="store_true")
    parser.add_argument("--seccomp-fd", type=int, default=None, help="load this seccomp filter first (no bwrap)")
    args = parser.parse_args(argv)
    if args.seccomp_fd is not None:
        from workers.sandbox.seccomp import install_from_fd

        install_from_fd(args.seccomp_fd)  # before any candidate code; failure ends the child without a result

    result_fd = args.result_fd
    try:
        request = EvaluationRequest.model_validate_json(sys.stdin.buffer.read())
    except Exception as exc:  # noqa: BLE001
        write_result(result_fd, EvaluationResult(outcome=Outcome.error, error=f"bad request: {exc}"),
                     args.max_result_bytes)
        return
    result = evaluate(request, args.cache_dir, args.cache_writable)
    sys.stdout.flush()
    sys.stderr.flush()
    write_result(result_fd, result, args.max_result_bytes)


if __name__ == "__main__":
    main()

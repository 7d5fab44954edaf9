"""Run the tracer in a sandboxed child and classify how it ended.

`trace_candidate` is the worker's one way to trace a candidate: the static check first (in this
process, before any child runs), then `run_tracer`, which starts a fresh `SandboxProcess` for
`workers.sandbox.tracer`, feeds it the request, supervises it against its wall-clock limit (killing
its process group, its pid namespace and everything left in its cgroup) and turns every ending into
an `Outcome`. Results come back as size-capped JSON on a pipe; stdout and stderr are captured and
capped. The parent never raises because of what the child did, and keeps only what it checked
itself: the fingerprint is hashed from the artifact, the error capped. The layers around the child
are in `host`, `command` and `process`; `docs/sandbox.md` describes them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import selectors
import signal
import subprocess
import threading
import time

from pydantic import ValidationError

from workers.artifact import Artifact
from workers.results import TraceRequest, TraceResult
from workers.sandbox import cgroups
from workers.sandbox.host import IsolationUnavailable, SandboxLimits, require_isolation
from workers.sandbox.process import (
    EXIT_GRACE_SECONDS,
    CappedBuffer,
    SandboxProcess,
    feed_stdin,
    has_exited,
    kill_group,
    signal_name,
)
from workers.sandbox.static_check import check_source, format_issues
from workers.sandbox.tracer import capped_error
from workers.targets import get_target
from workers.vocabulary import Outcome

log = logging.getLogger(__name__)

# How an allocation failure shows in an error: Python's MemoryError, XLA's RESOURCE_EXHAUSTED.
MEMORY_MARKERS = ("MemoryError", "RESOURCE_EXHAUSTED")



def trace_candidate(request: TraceRequest, limits: SandboxLimits) -> TraceResult:
    """Static check, then the sandboxed tracer. Raises only IsolationUnavailable."""
    require_isolation(limits)
    started = time.monotonic()
    try:
        target = get_target(request.target)
    except KeyError as exc:
        return TraceResult(outcome=Outcome.invalid, error=str(exc.args[0]))
    issues = check_source(request.code, target)
    if issues:
        return TraceResult(outcome=Outcome.invalid, error=format_issues(issues), seconds=time.monotonic() - started)
    return run_tracer(request, limits)



def run_tracer(request: TraceRequest, limits: SandboxLimits) -> TraceResult:
    """Trace in a fresh isolated child; no static check. Raises only IsolationUnavailable."""
    require_isolation(limits)
    started = time.monotonic()
    child: SandboxProcess | None = None
    try:
        child = SandboxProcess("workers.sandbox.tracer", ["--max-result-bytes", str(limits.max_result_bytes)],
                               limits, uid=limits.sandbox_uid, env={"JAX_PLATFORMS": "cpu"})
        result_read, child.result_read = child.result_read, None
        return _supervise(child.proc, result_read, request, limits, child.group, started)
    except IsolationUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - the parent never raises because of the child
        log.exception("sandbox failure")
        return TraceResult(outcome=Outcome.killed, error=f"sandbox failure: {type(exc).__name__}: {exc}",
                           seconds=time.monotonic() - started)
    finally:
        if child is not None:
            child.close()



def _supervise(
    proc: subprocess.Popen[bytes], result_read: int, request: TraceRequest, limits: SandboxLimits,
    group: cgroups.Cgroup | None, started: float,
) -> TraceResult:
    assert proc.stdout is not None and proc.stderr is not None
    payload = request.model_dump_json().encode()
    writer = threading.Thread(target=feed_stdin, args=(proc, payload), daemon=True)
    writer.start()
    stdout, stderr = CappedBuffer(limits.max_output_bytes), CappedBuffer(limits.max_output_bytes)
    result = CappedBuffer(limits.max_result_bytes)
    sinks = {proc.stdout.fileno(): stdout, proc.stderr.fileno(): stderr, result_read: result}
    deadline = started + limits.timeout_seconds
    timed_out = False
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for fd in sinks:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        try:
            while selector.get_map():
                now = time.monotonic()
                if now >= deadline:
                    timed_out = True
                    break
                if exited_at is None and has_exited(proc):
                    exited_at = now
                if exited_at is not None and now - exited_at > EXIT_GRACE_SECONDS:
                    break  # something inherited the pipes and outlived the child
                for key, _ in selector.select(timeout=min(0.25, deadline - now)):
                    try:
                        chunk = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    if chunk:
                        sinks[key.fd].add(chunk)
                    else:
                        selector.unregister(key.fd)
        finally:
            os.close(result_read)
    while not timed_out and not has_exited(proc):
        if time.monotonic() >= deadline:
            timed_out = True
        else:
            time.sleep(0.02)
    kill_group(proc)
    if group is not None:
        group.kill_all()
    writer.join(timeout=5)
    seconds = time.monotonic() - started
    out, err = stdout.text(), stderr.text()
    oom = group is not None and group.oom_killed()
    return _classify(proc.returncode, timed_out, oom, result, out, err, seconds, limits)



def _classify(
    returncode: int | None, timed_out: bool, oom: bool, result: CappedBuffer, stdout: str, stderr: str,
    seconds: float, limits: SandboxLimits,
) -> TraceResult:
    def ended(outcome: Outcome, error: str | None) -> TraceResult:
        return TraceResult(outcome=outcome, error=error, seconds=seconds, stdout=stdout, stderr=stderr)

    tail = "\n".join(stderr.strip().splitlines()[-8:])
    if timed_out:
        limit = f"{limits.timeout_seconds:g} s"
        return ended(Outcome.timeout, f"the evaluation exceeded the wall-clock limit of {limit}")
    if oom:
        return ended(Outcome.memory, f"the evaluation exceeded the memory limit of {limits.memory_mb} MB")
    # bwrap reports a child killed by signal N as exit code 128 + N; Popen reports -N.
    signum = -returncode if returncode is not None and returncode < 0 else None
    if signum is None and returncode is not None and returncode > 128:
        signum = returncode - 128
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL and "CPU" in tail):
        return ended(Outcome.timeout, f"the evaluation exceeded the CPU limit of {limits.cpu_seconds} s")
    if result.total and not result.overflow:
        try:
            parsed = TraceResult.model_validate(json.loads(result.data.decode()))
        except (ValueError, ValidationError) as exc:
            return ended(Outcome.error, f"the child returned an unreadable result: {str(exc)[:300]}")
        error = parsed.error or ""
        if parsed.outcome in (Outcome.error, Outcome.invalid) and any(m in error for m in MEMORY_MARKERS):
            parsed.outcome = Outcome.memory
        if parsed.outcome == Outcome.ok and not parsed.artifact and parsed.values is None:
            return ended(Outcome.error, "the tracer reported ok without an artifact")
        if parsed.artifact:
            try:  # the parent hashes the fingerprint from the artifact; the child's own word is dropped
                parsed.fingerprint = Artifact.from_bytes(base64.b64decode(parsed.artifact, validate=True)).fingerprint
            except ValueError as exc:
                return ended(Outcome.error, f"the child returned an unreadable artifact: {str(exc)[:300]}")
        parsed.error = capped_error(parsed.error)
        parsed.seconds = seconds
        parsed.stdout, parsed.stderr = stdout, stderr
        return parsed
    if result.overflow:
        return ended(Outcome.error, f"the child's result exceeded {limits.max_result_bytes} bytes")
    if signum is not None:
        message = f"the evaluation died from {signal_name(signum)}"
        return ended(Outcome.killed, message + (f":\n{tail}" if tail else ""))
    return ended(Outcome.killed, f"the evaluation exited with code {returncode} without a result"
                 + (f":\n{tail}" if tail else ""))

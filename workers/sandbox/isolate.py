"""Run one evaluation in a fresh, isolated child process and classify how it ended.

Layers around the child (`python -m workers.sandbox.child`), from the outside in:
- a scrubbed environment (no API key, database or broker URL: bwrap's own environment is readable
  from inside through /proc/1/environ, so the scrub happens before bwrap starts);
- a cgroup per evaluation (memory and process count) that the wrapper shell joins before exec;
- `prlimit`: CPU seconds, data segment (memory), file size, open files, processes, no core dumps;
- `bwrap`: new pid, ipc, uts, net and cgroup namespaces, read-only binds of /usr, the Python
  installation, the virtualenv and the `workers` package, a small tmpfs at /tmp as the only
  writable place, no /etc, /home or repository, the JAX compile cache read-only unless the request
  is trusted, a seccomp filter, `--die-with-parent --new-session --clearenv`;
- `setpriv` inside bwrap to an unprivileged uid with no capabilities and no_new_privs (as root,
  bwrap's user namespace would map the sandbox to root outside, so the sandbox gets no user
  namespace; untrusted code runs as a real unprivileged uid instead);
- a wall-clock timeout that kills the process group, the pid namespace (through bwrap's
  die-with-parent) and everything left in the cgroup.

Results come back as size-capped JSON on a pipe; stdout and stderr are captured and capped. The
parent never raises because of what the child did: every ending becomes an `Outcome`.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

import workers
from workers.results import EvaluationRequest, EvaluationResult, Outcome
from workers.sandbox import cgroups, seccomp
from workers.sandbox.static_check import check_source, format_issues
from workers.targets import get_target

log = logging.getLogger(__name__)

SANDBOX_PACKAGE_ROOT = "/opt/discovery"
SANDBOX_CACHE_DIR = "/cache"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
PASSED_ENV_PREFIXES = ("XLA_", "JAX_")
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "URL", "DSN", "CREDENTIAL")
EXIT_GRACE_SECONDS = 2.0
# How an allocation failure shows in an error: Python's MemoryError, XLA's RESOURCE_EXHAUSTED.
MEMORY_MARKERS = ("MemoryError", "RESOURCE_EXHAUSTED")


class IsolationUnavailable(RuntimeError):
    """The isolation that the settings require does not work on this machine."""


class SandboxLimits(BaseModel):
    """What one evaluation may use. Mirrors the `sandbox_*` fields of the service's settings."""

    timeout_seconds: float = 900.0
    memory_mb: int = 6144
    cpu_seconds: int = 3600
    max_output_bytes: int = 65536  # per stream (stdout, stderr)
    isolation: Literal["bwrap", "process"] = "bwrap"
    cache_dir: Path | None = None  # JAX persistent compilation cache, shared read-only
    max_processes: int = 256  # processes and threads (cgroup pids.max and RLIMIT_NPROC)
    max_open_files: int = 256
    max_file_mb: int = 64
    scratch_mb: int = 64  # size of the tmpfs at /tmp inside bwrap
    max_result_bytes: int = 4 * 1024 * 1024
    sandbox_uid: int = 65534  # the unprivileged uid (nobody) untrusted code runs as when we are root


class IsolationReport(BaseModel):
    """What isolation works on this machine."""

    is_root: bool
    bwrap: bool
    bwrap_detail: str = ""
    setpriv: bool
    cgroup_memory: bool
    cgroup_pids: bool
    seccomp: bool
    network_namespace: bool

    def summary(self) -> str:
        flags = {
            "bwrap": self.bwrap, "setpriv": self.setpriv, "cgroup-memory": self.cgroup_memory,
            "cgroup-pids": self.cgroup_pids, "seccomp": self.seccomp, "netns": self.network_namespace,
        }
        text = ", ".join(f"{name}={'yes' if ok else 'no'}" for name, ok in flags.items())
        return text + (f" ({self.bwrap_detail})" if self.bwrap_detail and not self.bwrap else "")


def _scrubbed_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
    for name, value in os.environ.items():
        if name.startswith(PASSED_ENV_PREFIXES) and not any(word in name for word in SECRET_WORDS):
            env[name] = value
    env.update(extra or {})
    return env


def _run_quiet(cmd: list[str], timeout: float = 20.0) -> tuple[bool, str]:
    try:
        done = subprocess.run(cmd, env=_scrubbed_env(), capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, done.stderr.decode(errors="replace").strip()[-500:]


def _unshare_flags(is_root: bool) -> list[str]:
    flags = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    return flags if is_root else ["--unshare-all"]


@cache
def probe_isolation() -> IsolationReport:
    """Find out which isolation layers work here (cached for the life of the process)."""
    is_root = os.geteuid() == 0
    bwrap_ok, detail = False, "bwrap is not installed"
    if shutil.which("bwrap"):
        cmd = ["bwrap", *_unshare_flags(is_root), "--die-with-parent", "--new-session", "--clearenv",
               *_system_binds(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "true"]
        bwrap_ok, detail = _run_quiet(cmd)
    setpriv_ok = False
    if shutil.which("setpriv") and is_root:
        setpriv_ok, _ = _run_quiet(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                                    "--inh-caps=-all", "--no-new-privs", "true"])
    netns = bwrap_ok or (shutil.which("unshare") is not None and _run_quiet(["unshare", "--net", "true"])[0])
    report = IsolationReport(
        is_root=is_root,
        bwrap=bwrap_ok,
        bwrap_detail="" if bwrap_ok else detail,
        setpriv=setpriv_ok,
        cgroup_memory=is_root and cgroups.probe("memory"),
        cgroup_pids=is_root and cgroups.probe("pids"),
        seccomp=seccomp.available(),
        network_namespace=bool(netns),
    )
    log.info("sandbox isolation: %s", report.summary())
    return report


def require_isolation(limits: SandboxLimits) -> IsolationReport:
    """The isolation report, or IsolationUnavailable when the required isolation is missing."""
    report = probe_isolation()
    if limits.isolation == "bwrap" and not report.bwrap:
        raise IsolationUnavailable(
            "sandbox isolation 'bwrap' is required but bubblewrap does not work here: "
            f"{report.bwrap_detail}. Install bubblewrap or set sandbox_isolation='process' explicitly."
        )
    return report


def evaluate_candidate(request: EvaluationRequest, limits: SandboxLimits) -> EvaluationResult:
    """Static check, then a sandboxed child. Raises only IsolationUnavailable."""
    require_isolation(limits)
    started = time.monotonic()
    try:
        target = get_target(request.target)
    except KeyError as exc:
        return EvaluationResult(outcome=Outcome.invalid, error=str(exc.args[0]))
    issues = check_source(request.code, target)
    if issues:
        return EvaluationResult(
            outcome=Outcome.invalid, error=format_issues(issues), seconds=time.monotonic() - started
        )
    return run_in_child(request, limits)


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def _dirs_for(path: Path, done: set[Path]) -> list[str]:
    """`--dir` with mode 0755 for every missing ancestor (bwrap would create them 0700 as root)."""
    args: list[str] = []
    for parent in reversed(path.parents):
        if parent == Path("/") or parent in done:
            continue
        done.add(parent)
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _bwrap_command(
    child: list[str], limits: SandboxLimits, report: IsolationReport, drop_uid: bool,
    cache_dir: Path | None, cache_writable: bool, seccomp_fd: int | None,
) -> list[str]:
    package_root = Path(workers.__file__).resolve().parent
    prefixes = sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).absolute()})
    cmd = ["bwrap", *_unshare_flags(report.is_root), "--die-with-parent", "--new-session", "--clearenv",
           "--hostname", "sandbox", *_system_binds(),
           # The scratch tmpfs first: the binds below may lie under /tmp (a checkout or virtualenv there)
           # and must be mounted on top of it, not hidden by it.
           "--proc", "/proc", "--dev", "/dev",
           "--size", str(limits.scratch_mb * 1024 * 1024), "--perms", "1777", "--tmpfs", "/tmp", "--chdir", "/tmp"]
    done: set[Path] = set()
    for prefix in prefixes:
        if prefix == Path("/usr") or Path("/usr") in prefix.parents:
            continue
        cmd += [*_dirs_for(prefix, done), "--ro-bind", str(prefix), str(prefix)]
    inner_package = Path(SANDBOX_PACKAGE_ROOT) / "workers"
    cmd += [*_dirs_for(inner_package, done), "--ro-bind", str(package_root), str(inner_package)]
    if Path("/etc/fonts").is_dir():  # matplotlib (imported by gymnax) complains without it
        cmd += [*_dirs_for(Path("/etc/fonts"), done), "--ro-bind", "/etc/fonts", "/etc/fonts"]
    if cache_dir is not None:
        cmd += ["--bind" if cache_writable else "--ro-bind", str(cache_dir), SANDBOX_CACHE_DIR]
    env = {"PATH": SAFE_PATH, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
           "PYTHONPATH": SANDBOX_PACKAGE_ROOT, "PYTHONDONTWRITEBYTECODE": "1", "JAX_PLATFORMS": "cpu"}
    env.update({k: v for k, v in _scrubbed_env().items() if k.startswith(PASSED_ENV_PREFIXES)})
    for name, value in env.items():
        cmd += ["--setenv", name, value]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    if drop_uid:
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", *_setpriv(limits.sandbox_uid)]
    return cmd + child


def _setpriv(uid: int) -> list[str]:
    return ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


def _prlimit(limits: SandboxLimits) -> list[str]:
    memory = limits.memory_mb * 1024 * 1024
    return ["prlimit", f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 5}",
            f"--data={memory}", f"--fsize={limits.max_file_mb * 1024 * 1024}",
            f"--nofile={limits.max_open_files}", f"--nproc={limits.max_processes}", "--core=0", "--"]


# The wrapper joins the evaluation's cgroups, then execs; nothing starts outside the cgroup.
JOIN_CGROUPS = 'for f in $SANDBOX_CGROUP_PROCS; do echo $$ > "$f" || exit 121; done; exec "$@"'


class _Capped:
    """Keeps the first `limit` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def overflow(self) -> bool:
        return self.total > self.limit

    def text(self) -> str:
        text = self.data.decode(errors="replace")
        if self.overflow:
            text += f"\n[output cut: {self.total - self.limit} more bytes]"
        return text


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_in_child(request: EvaluationRequest, limits: SandboxLimits) -> EvaluationResult:
    """Evaluate in a fresh isolated child; no static check. Raises only IsolationUnavailable."""
    report = require_isolation(limits)
    started = time.monotonic()
    group: cgroups.Cgroup | None = None
    scratch: Path | None = None
    seccomp_fd: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        trusted = request.trusted
        drop_uid = report.is_root and report.setpriv and not trusted
        if trusted and limits.cache_dir is not None:
            limits.cache_dir.mkdir(parents=True, exist_ok=True)
        cache_dir = limits.cache_dir if limits.cache_dir is not None and limits.cache_dir.is_dir() else None
        if report.cgroup_memory or report.cgroup_pids:
            group = cgroups.Cgroup.create(limits.memory_mb * 1024 * 1024, limits.max_processes)
        result_read, result_write = os.pipe()
        pass_fds = [result_write]
        if report.seccomp:
            seccomp_fd = os.memfd_create("sandbox-seccomp", 0)
            os.write(seccomp_fd, seccomp.compile_filter())
            os.lseek(seccomp_fd, 0, os.SEEK_SET)
            pass_fds.append(seccomp_fd)
        if limits.isolation == "bwrap":
            child = ["python", "-m", "workers.sandbox.child", "--result-fd", str(result_write),
                     "--max-result-bytes", str(limits.max_result_bytes)]
            child[0] = str(Path(sys.executable).absolute())
            if cache_dir is not None:
                child += ["--cache-dir", SANDBOX_CACHE_DIR] + (["--cache-writable"] if trusted else [])
            inner = _bwrap_command(child, limits, report, drop_uid, cache_dir, trusted, seccomp_fd)
            cwd = "/"
            env_extra: dict[str, str] = {}
        else:
            scratch = Path(tempfile.mkdtemp(prefix="discovery-sandbox-"))
            if drop_uid:
                os.chown(scratch, limits.sandbox_uid, limits.sandbox_uid)
            child = [sys.executable, "-m", "workers.sandbox.child", "--result-fd", str(result_write),
                     "--max-result-bytes", str(limits.max_result_bytes)]
            if not trusted and not drop_uid:
                cache_dir = None  # without a mount namespace or another uid the cache cannot be read-only
            if cache_dir is not None:
                child += ["--cache-dir", str(cache_dir)] + (["--cache-writable"] if trusted else [])
            if seccomp_fd is not None:
                child += ["--seccomp-fd", str(seccomp_fd)]
            inner = (_setpriv(limits.sandbox_uid) if drop_uid else []) + child
            if report.network_namespace and report.is_root:
                inner = ["unshare", "--net", "--", *inner]
            cwd = str(scratch)
            package_parent = str(Path(workers.__file__).resolve().parent.parent)
            env_extra = {"HOME": str(scratch), "TMPDIR": str(scratch), "PYTHONPATH": package_parent,
                         "PYTHONDONTWRITEBYTECODE": "1", "JAX_PLATFORMS": "cpu"}
        procs = " ".join(str(p) for p in group.procs_files) if group else ""
        cmd = ["/bin/sh", "-c", JOIN_CGROUPS, "sandbox", *_prlimit(limits), *inner]
        env = _scrubbed_env({"SANDBOX_CGROUP_PROCS": procs, **env_extra})
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=pass_fds, env=env, cwd=cwd, start_new_session=True, close_fds=True,
            )
        finally:
            os.close(result_write)
            if seccomp_fd is not None:
                os.close(seccomp_fd)
                seccomp_fd = None
        return _supervise(proc, result_read, request, limits, group, started)
    except IsolationUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - the parent never raises because of the child
        log.exception("sandbox failure")
        return EvaluationResult(outcome=Outcome.killed, error=f"sandbox failure: {type(exc).__name__}: {exc}",
                                seconds=time.monotonic() - started)
    finally:
        if proc is not None:
            _kill_group(proc)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        if group is not None:
            group.destroy()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if seccomp_fd is not None:
            os.close(seccomp_fd)


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """True once the child has exited, without reaping it: while it is a zombie, its pid (and so its
    process group id) cannot be reused, and killing the group cannot hit an unrelated process."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (a new session), then reap the child."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.error("sandbox child %d did not die after SIGKILL", proc.pid)


def _feed_stdin(proc: subprocess.Popen[bytes], data: bytes) -> None:
    try:
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _supervise(
    proc: subprocess.Popen[bytes], result_read: int, request: EvaluationRequest, limits: SandboxLimits,
    group: cgroups.Cgroup | None, started: float,
) -> EvaluationResult:
    assert proc.stdout is not None and proc.stderr is not None
    payload = request.model_dump_json().encode()
    writer = threading.Thread(target=_feed_stdin, args=(proc, payload), daemon=True)
    writer.start()
    stdout, stderr = _Capped(limits.max_output_bytes), _Capped(limits.max_output_bytes)
    result = _Capped(limits.max_result_bytes)
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
                if exited_at is None and _exited(proc):
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
    while not timed_out and not _exited(proc):
        if time.monotonic() >= deadline:
            timed_out = True
        else:
            time.sleep(0.02)
    _kill_group(proc)
    if group is not None:
        group.kill_all()
    writer.join(timeout=5)
    seconds = time.monotonic() - started
    out, err = stdout.text(), stderr.text()
    oom = group is not None and group.oom_killed()
    return _classify(proc.returncode, timed_out, oom, result, out, err, seconds, limits)


def _classify(
    returncode: int | None, timed_out: bool, oom: bool, result: _Capped, stdout: str, stderr: str,
    seconds: float, limits: SandboxLimits,
) -> EvaluationResult:
    def ended(outcome: Outcome, error: str | None) -> EvaluationResult:
        return EvaluationResult(outcome=outcome, error=error, seconds=seconds, stdout=stdout, stderr=stderr)

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
            parsed = EvaluationResult.model_validate(json.loads(result.data.decode()))
        except (ValueError, ValidationError) as exc:
            return ended(Outcome.error, f"the child returned an unreadable result: {str(exc)[:300]}")
        error = parsed.error or ""
        if parsed.outcome in (Outcome.error, Outcome.invalid) and any(m in error for m in MEMORY_MARKERS):
            parsed.outcome = Outcome.memory
        parsed.seconds = seconds
        parsed.stdout, parsed.stderr = stdout, stderr
        return parsed
    if result.overflow:
        return ended(Outcome.error, f"the child's result exceeded {limits.max_result_bytes} bytes")
    if signum is not None:
        message = f"the evaluation died from {_signal_name(signum)}"
        return ended(Outcome.killed, message + (f":\n{tail}" if tail else ""))
    return ended(Outcome.killed, f"the evaluation exited with code {returncode} without a result"
                 + (f":\n{tail}" if tail else ""))

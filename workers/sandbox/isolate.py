"""Start project code in an isolated child process; run the tracer there and classify how it ended.

`SandboxProcess` launches a module (`workers.sandbox.tracer`, one fresh child per candidate, or
`workers.trainer.server`, long-lived) inside the layers below; `run_tracer` supervises one tracer.
Layers around the child, from the outside in:
- a scrubbed environment (no API key, database or broker URL: bwrap's own environment is readable
  from inside through /proc/1/environ, so the scrub happens before bwrap starts);
- a cgroup per child (memory, process count, a CPU quota) that the wrapper shell joins before exec;
  with a pids cgroup there is no per-uid RLIMIT_NPROC, which would be shared by every child of the
  same uid (one candidate's parked threads could then abort a concurrent honest evaluation);
- `prlimit`: CPU seconds, data segment (memory), file size, open files, no core dumps;
- `bwrap`: new pid, ipc, uts, net and cgroup namespaces, read-only binds of /usr, the Python
  installation, the virtualenv and the `workers` package, a small tmpfs at /tmp as the only
  writable place, no /etc, /home or repository; the tracer gets no cache at all, the trainer only
  its compile cache and, on a GPU host, exactly the NVIDIA device nodes; a seccomp filter,
  `--die-with-parent --new-session --clearenv`, and bwrap's own arguments passed through a file
  descriptor (`--args`), so /proc/1/cmdline inside shows no host path;
- `setpriv` inside bwrap to an unprivileged uid with no capabilities and no_new_privs (as root,
  bwrap's user namespace would map the sandbox to root outside, so the sandbox gets no user
  namespace; untrusted code runs as a real unprivileged uid instead);
- a wall-clock timeout that kills the process group, the pid namespace (through bwrap's
  die-with-parent) and everything left in the cgroup.

Results come back as size-capped JSON on a pipe; stdout and stderr are captured and capped. The
parent never raises because of what the child did: every ending becomes an `Outcome`.
"""

from __future__ import annotations

import base64
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
from workers.artifact import Artifact
from workers.results import Outcome, TraceRequest, TraceResult
from workers.sandbox import cgroups, seccomp
from workers.sandbox.static_check import check_source, format_issues
from workers.sandbox.tracer import capped_error
from workers.targets import get_target

log = logging.getLogger(__name__)

SANDBOX_PACKAGE_ROOT = "/opt/discovery"
SANDBOX_VENV = "/opt/venv"  # where a virtualenv is bound inside bwrap, so no checkout path shows there
SANDBOX_CACHE_DIR = "/cache"
NVIDIA_DEVICE_PATTERNS = ("nvidia[0-9]*", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset",
                          "nvidia-caps/*")
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

    timeout_seconds: float = 60.0  # tracing: load, probe and export (no training)
    memory_mb: int = 4096
    cpu_seconds: int = 120
    cpus: float = 1.0  # CPU quota (cgroup cpu controller), in cores
    max_output_bytes: int = 65536  # per stream (stdout, stderr)
    isolation: Literal["bwrap", "process"] = "bwrap"
    cache_dir: Path | None = None  # where the trainer keeps JAX's compile cache (never bound into a tracer)
    max_processes: int = 256  # processes and threads (cgroup pids.max; RLIMIT_NPROC only without it)
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
    cgroup_cpu: bool = False
    seccomp: bool
    network_namespace: bool

    def summary(self) -> str:
        flags = {
            "bwrap": self.bwrap, "setpriv": self.setpriv, "cgroup-memory": self.cgroup_memory,
            "cgroup-pids": self.cgroup_pids, "cgroup-cpu": self.cgroup_cpu, "seccomp": self.seccomp,
            "netns": self.network_namespace,
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
        cgroup_cpu=is_root and cgroups.probe("cpu"),
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
    problem = process_mode_problem(limits)
    if problem is not None:
        raise IsolationUnavailable(problem)
    return report


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


def gpu_device_nodes(dev: Path = Path("/dev")) -> list[Path]:
    """The NVIDIA device nodes of this host (empty on a CPU machine): what a GPU trainer is given."""
    return sorted({p for pattern in NVIDIA_DEVICE_PATTERNS for p in dev.glob(pattern) if not p.is_dir()})


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def unreachable_for(uid: int, gid: int, paths: list[Path]) -> str | None:
    """The first of `paths` (or a folder above it) that `uid`/`gid` may not enter or read, said in words."""
    for path in paths:
        current = Path("/")
        for part in [*path.parts[1:], None]:
            st = current.stat()
            shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
            need = 0o5 if current.is_dir() else 0o4
            if (st.st_mode >> shift) & need != need:
                return f"{current} (mode {st.st_mode & 0o777:04o}, owner uid {st.st_uid})"
            if part is None:
                break
            current = current / part
    return None


def process_mode_problem(limits: SandboxLimits) -> str | None:
    """Why a child in `process` isolation could not start as the sandbox uid, or None when it can.

    Without a mount namespace the dropped uid reads Python, the virtualenv and the package where they
    are: a checkout under a private (0700) folder is out of its reach.
    """
    report = probe_isolation()
    if limits.isolation != "process" or not (report.is_root and report.setpriv):
        return None
    needed = [Path(sys.executable).resolve(), Path(sys.base_prefix).resolve(), Path(sys.prefix).absolute(),
              Path(workers.__file__).resolve().parent]
    where = unreachable_for(limits.sandbox_uid, limits.sandbox_uid, needed)
    if where is None:
        return None
    return (f"the sandbox user (uid {limits.sandbox_uid}) cannot reach {where}: put the checkout and virtualenv "
            "where other users can read them, or use bwrap isolation")


def _virtualenv() -> Path | None:
    """This interpreter's virtualenv, if it runs in one (bound at SANDBOX_VENV inside bwrap)."""
    return Path(sys.prefix).absolute() if sys.prefix != sys.base_prefix else None


def _python(isolation: str) -> str:
    """The interpreter as the child sees it."""
    venv = _virtualenv()
    if isolation == "bwrap" and venv is not None:
        return str(Path(SANDBOX_VENV) / Path(sys.executable).relative_to(venv))
    return str(Path(sys.executable).absolute())


def _dirs_for(path: Path, done: set[Path]) -> list[str]:
    """`--dir` with mode 0755 for every missing ancestor (bwrap would create them 0700 as root)."""
    args: list[str] = []
    for parent in reversed(path.parents):
        if parent == Path("/") or parent in done:
            continue
        done.add(parent)
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


class Bind(BaseModel):
    """A host path made visible inside bwrap (`device`: a device node, bound with --dev-bind)."""

    source: Path
    target: str
    writable: bool = False
    device: bool = False


def bwrap_options(
    limits: SandboxLimits, report: IsolationReport, uid: int | None, binds: list[Bind], env: dict[str, str],
    seccomp_fd: int | None,
) -> list[str]:
    """bwrap's options (what `--args` reads from a descriptor, so that /proc/1/cmdline shows no host path)."""
    package_root = Path(workers.__file__).resolve().parent
    venv = _virtualenv()
    prefixes = sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).absolute()} - ({venv} if venv else set()))
    args = [*_unshare_flags(report.is_root), "--die-with-parent", "--new-session", "--clearenv",
            "--hostname", "sandbox", *_system_binds(),
            # The scratch tmpfs first: the binds below may lie under /tmp (a checkout or virtualenv there)
            # and must be mounted on top of it, not hidden by it.
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(limits.scratch_mb * 1024 * 1024), "--perms", "1777", "--tmpfs", "/tmp", "--chdir", "/tmp"]
    done: set[Path] = set()
    for prefix in prefixes:
        if prefix == Path("/usr") or Path("/usr") in prefix.parents:
            continue
        args += [*_dirs_for(prefix, done), "--ro-bind", str(prefix), str(prefix)]
    if venv is not None:
        args += [*_dirs_for(Path(SANDBOX_VENV), done), "--ro-bind", str(venv), SANDBOX_VENV]
    inner_package = Path(SANDBOX_PACKAGE_ROOT) / "workers"
    args += [*_dirs_for(inner_package, done), "--ro-bind", str(package_root), str(inner_package)]
    if Path("/etc/fonts").is_dir():  # matplotlib (imported by gymnax) complains without it
        args += [*_dirs_for(Path("/etc/fonts"), done), "--ro-bind", "/etc/fonts", "/etc/fonts"]
    for bind in binds:
        kind = "--dev-bind" if bind.device else "--bind" if bind.writable else "--ro-bind"
        args += [*_dirs_for(Path(bind.target), done), kind, str(bind.source), bind.target]
    full_env = {"PATH": SAFE_PATH, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
                "PYTHONPATH": SANDBOX_PACKAGE_ROOT, "PYTHONDONTWRITEBYTECODE": "1"}
    full_env.update({k: v for k, v in _scrubbed_env().items() if k.startswith(PASSED_ENV_PREFIXES)})
    full_env.update(env)
    for name, value in full_env.items():
        args += ["--setenv", name, value]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    if uid is not None:
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return args


def _setpriv(uid: int) -> list[str]:
    return ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


def _prlimit(limits: SandboxLimits, report: IsolationReport) -> list[str]:
    """rlimits; RLIMIT_NPROC counts every process of the uid, so it is set only without a pids cgroup."""
    memory = limits.memory_mb * 1024 * 1024
    nproc = [] if report.cgroup_pids else [f"--nproc={limits.max_processes}"]
    return ["prlimit", f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 5}",
            f"--data={memory}", f"--fsize={limits.max_file_mb * 1024 * 1024}",
            f"--nofile={limits.max_open_files}", *nproc, "--core=0", "--"]


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


class SandboxProcess:
    """One isolated child running `python -m MODULE ARGS`, with a result pipe, in its own cgroup.

    `uid`: the unprivileged uid to drop to when this process is root (None: stay). `binds`: further
    host paths inside bwrap (the trainer's compile cache, GPU device nodes). Call `close()` when done:
    it kills the process group and everything left in the cgroup.
    """

    def __init__(self, module: str, args: list[str], limits: SandboxLimits, uid: int | None,
                 binds: list[Bind] | None = None, env: dict[str, str] | None = None) -> None:
        report = require_isolation(limits)
        self.limits = limits
        self.group: cgroups.Cgroup | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._scratch: Path | None = None
        drop_uid = uid if report.is_root and report.setpriv else None
        to_close: list[int] = []
        try:
            if report.cgroup_memory or report.cgroup_pids or report.cgroup_cpu:
                self.group = cgroups.Cgroup.create(limits.memory_mb * 1024 * 1024, limits.max_processes,
                                                   limits.cpus)
            self.result_read, result_write = os.pipe()
            to_close.append(result_write)
            pass_fds = [result_write]
            seccomp_fd = None
            if report.seccomp:
                seccomp_fd = _memfd("sandbox-seccomp", seccomp.compile_filter())
                to_close.append(seccomp_fd)
                pass_fds.append(seccomp_fd)
            child = [_python(limits.isolation), "-m", module, "--result-fd", str(result_write), *args]
            extra_env = dict(env or {})
            if limits.isolation == "bwrap":
                options = bwrap_options(limits, report, drop_uid, binds or [], extra_env, seccomp_fd)
                args_fd = _memfd("sandbox-args", b"".join(a.encode() + b"\0" for a in options))
                to_close.append(args_fd)
                pass_fds.append(args_fd)
                setpriv = _setpriv(drop_uid) if drop_uid is not None else []
                inner = ["bwrap", "--args", str(args_fd), *setpriv, *child]
                cwd = "/"
                env_extra: dict[str, str] = {}
            else:
                problem = process_mode_problem(limits.model_copy(update={"sandbox_uid": uid or limits.sandbox_uid}))
                if problem is not None:
                    raise IsolationUnavailable(problem)
                self._scratch = Path(tempfile.mkdtemp(prefix="discovery-sandbox-"))
                if drop_uid is not None:
                    os.chown(self._scratch, drop_uid, drop_uid)
                if seccomp_fd is not None:
                    child += ["--seccomp-fd", str(seccomp_fd)]
                inner = (_setpriv(drop_uid) if drop_uid is not None else []) + child
                if report.network_namespace and report.is_root:
                    inner = ["unshare", "--net", "--", *inner]
                cwd = str(self._scratch)
                package_parent = str(Path(workers.__file__).resolve().parent.parent)
                env_extra = {"HOME": str(self._scratch), "TMPDIR": str(self._scratch), "PYTHONPATH": package_parent,
                             "PYTHONDONTWRITEBYTECODE": "1", **extra_env}
            procs = " ".join(str(p) for p in self.group.procs_files) if self.group else ""
            cmd = ["/bin/sh", "-c", JOIN_CGROUPS, "sandbox", *_prlimit(limits, report), *inner]
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=pass_fds, env=_scrubbed_env({"SANDBOX_CGROUP_PROCS": procs, **env_extra}), cwd=cwd,
                start_new_session=True, close_fds=True,
            )
        except BaseException:
            self.close()
            raise
        finally:
            for fd in to_close:
                os.close(fd)

    def close(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        if self.group is not None:
            self.group.destroy()
            self.group = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if getattr(self, "result_read", None) is not None:
            try:
                os.close(self.result_read)
            except OSError:
                pass
            self.result_read = None


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


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
    proc: subprocess.Popen[bytes], result_read: int, request: TraceRequest, limits: SandboxLimits,
    group: cgroups.Cgroup | None, started: float,
) -> TraceResult:
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
        if parsed.outcome == Outcome.ok and not parsed.artifact:
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
        message = f"the evaluation died from {_signal_name(signum)}"
        return ended(Outcome.killed, message + (f":\n{tail}" if tail else ""))
    return ended(Outcome.killed, f"the evaluation exited with code {returncode} without a result"
                 + (f":\n{tail}" if tail else ""))

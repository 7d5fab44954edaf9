"""One sandboxed child process: `SandboxProcess` starts a module of this package inside the layers of
`command` (joined to its own cgroup before exec, a seccomp filter loaded first), and the helpers that
feed it, read its capped output and kill its process group.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import workers
from workers.sandbox import cgroups, seccomp
from workers.sandbox.command import JOIN_CGROUPS, Bind, bwrap_options, prlimit_command, sandbox_python, setpriv_command
from workers.sandbox.host import (
    IsolationUnavailable,
    SandboxLimits,
    process_mode_problem,
    require_isolation,
    scrubbed_env,
)

log = logging.getLogger(__name__)

EXIT_GRACE_SECONDS = 2.0



class CappedBuffer:
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



def signal_name(number: int) -> str:
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
            child = [sandbox_python(limits.isolation), "-m", module, "--result-fd", str(result_write), *args]
            extra_env = dict(env or {})
            if limits.isolation == "bwrap":
                options = bwrap_options(limits, report, drop_uid, binds or [], extra_env, seccomp_fd)
                args_fd = _memfd("sandbox-args", b"".join(a.encode() + b"\0" for a in options))
                to_close.append(args_fd)
                pass_fds.append(args_fd)
                setpriv = setpriv_command(drop_uid) if drop_uid is not None else []
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
                inner = (setpriv_command(drop_uid) if drop_uid is not None else []) + child
                if report.network_namespace and report.is_root:
                    inner = ["unshare", "--net", "--", *inner]
                cwd = str(self._scratch)
                package_parent = str(Path(workers.__file__).resolve().parent.parent)
                env_extra = {"HOME": str(self._scratch), "TMPDIR": str(self._scratch), "PYTHONPATH": package_parent,
                             "PYTHONDONTWRITEBYTECODE": "1", **extra_env}
            procs = " ".join(str(p) for p in self.group.procs_files) if self.group else ""
            cmd = ["/bin/sh", "-c", JOIN_CGROUPS, "sandbox", *prlimit_command(limits, report), *inner]
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=pass_fds, env=scrubbed_env({"SANDBOX_CGROUP_PROCS": procs, **env_extra}), cwd=cwd,
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
            kill_group(self.proc)
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



def has_exited(proc: subprocess.Popen[bytes]) -> bool:
    """True once the child has exited, without reaping it: while it is a zombie, its pid (and so its
    process group id) cannot be reused, and killing the group cannot hit an unrelated process."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True



def kill_group(proc: subprocess.Popen[bytes]) -> None:
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



def feed_stdin(proc: subprocess.Popen[bytes], data: bytes) -> None:
    try:
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()
    except (BrokenPipeError, OSError, ValueError):
        pass

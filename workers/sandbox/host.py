"""What this host can isolate with, and the limits a sandboxed child gets.

`probe_isolation` finds out once whether bubblewrap, cgroups, seccomp and prlimit work here;
`require_isolation` refuses to start a child the configured isolation cannot protect. Also here: the
scrubbed environment every child starts with (no API key, database or broker URL: bwrap's own
environment is readable from inside through /proc/1/environ, so the scrub happens before bwrap
starts), the host folders every sandbox binds read-only, and the GPU device nodes.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

import workers
from workers.sandbox import cgroups, seccomp

log = logging.getLogger(__name__)

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


PASSED_ENV_PREFIXES = ("XLA_", "JAX_")


SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "URL", "DSN", "CREDENTIAL")



def scrubbed_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
    for name, value in os.environ.items():
        if name.startswith(PASSED_ENV_PREFIXES) and not any(word in name for word in SECRET_WORDS):
            env[name] = value
    env.update(extra or {})
    return env



def system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


NVIDIA_DEVICE_PATTERNS = ("nvidia[0-9]*", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset",
                          "nvidia-caps/*")



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



def _run_quiet(cmd: list[str], timeout: float = 20.0) -> tuple[bool, str]:
    try:
        done = subprocess.run(cmd, env=scrubbed_env(), capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, done.stderr.decode(errors="replace").strip()[-500:]



def unshare_flags(is_root: bool) -> list[str]:
    flags = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    return flags if is_root else ["--unshare-all"]



@cache
def probe_isolation() -> IsolationReport:
    """Find out which isolation layers work here (cached for the life of the process)."""
    is_root = os.geteuid() == 0
    bwrap_ok, detail = False, "bwrap is not installed"
    if shutil.which("bwrap"):
        cmd = ["bwrap", *unshare_flags(is_root), "--die-with-parent", "--new-session", "--clearenv",
               *system_binds(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "true"]
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
            f"sandbox isolation 'bwrap' is required but bubblewrap does not work here: {report.bwrap_detail}. "
            "Install bubblewrap (apt install bubblewrap), allow unprivileged user namespaces, or set "
            "DISCOVERY_SANDBOX_ISOLATION=process, which gives up the namespaces: the tracer then sees the host's "
            "files and processes, kept in by seccomp, resource limits and (as root) an unprivileged uid only"
        )
    problem = process_mode_problem(limits)
    if problem is not None:
        raise IsolationUnavailable(problem)
    return report


def gpu_device_nodes(dev: Path = Path("/dev")) -> list[Path]:
    """The NVIDIA device nodes of this host (empty on a CPU machine): what a GPU trainer is given."""
    return sorted({p for pattern in NVIDIA_DEVICE_PATTERNS for p in dev.glob(pattern) if not p.is_dir()})



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

"""The command line a sandboxed child starts with: bubblewrap's options, setpriv and prlimit.

`bwrap`: new pid, ipc, uts, net and cgroup namespaces, read-only binds of /usr, the Python
installation, the virtualenv and the `workers` package, a small tmpfs at /tmp as the only writable
place, no /etc, /home or repository; the tracer gets no cache at all, the trainer only its compile
cache and, on a GPU host, exactly the NVIDIA device nodes; `--die-with-parent --new-session
--clearenv`, and bwrap's own arguments passed through a file descriptor (`--args`), so
/proc/1/cmdline inside shows no host path. `setpriv` inside bwrap drops to an unprivileged uid with
no capabilities and no_new_privs (as root, bwrap's user namespace would map the sandbox to root
outside, so the sandbox gets no user namespace); `prlimit` caps CPU seconds, the data segment, file
size and open files, with no core dumps.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel

import workers
from workers.sandbox.host import (
    PASSED_ENV_PREFIXES,
    SAFE_PATH,
    IsolationReport,
    SandboxLimits,
    scrubbed_env,
    system_binds,
    unshare_flags,
)

SANDBOX_PACKAGE_ROOT = "/opt/discovery"


SANDBOX_VENV = "/opt/venv"  # where a virtualenv is bound inside bwrap, so no checkout path shows there


SANDBOX_CACHE_DIR = "/cache"



def _virtualenv() -> Path | None:
    """This interpreter's virtualenv, if it runs in one (bound at SANDBOX_VENV inside bwrap)."""
    return Path(sys.prefix).absolute() if sys.prefix != sys.base_prefix else None



def sandbox_python(isolation: str) -> str:
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
    args = [*unshare_flags(report.is_root), "--die-with-parent", "--new-session", "--clearenv",
            "--hostname", "sandbox", *system_binds(),
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
    full_env.update({k: v for k, v in scrubbed_env().items() if k.startswith(PASSED_ENV_PREFIXES)})
    full_env.update(env)
    for name, value in full_env.items():
        args += ["--setenv", name, value]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    if uid is not None:
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return args



def setpriv_command(uid: int) -> list[str]:
    return ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]



def prlimit_command(limits: SandboxLimits, report: IsolationReport) -> list[str]:
    """rlimits; RLIMIT_NPROC counts every process of the uid, so it is set only without a pids cgroup."""
    memory = limits.memory_mb * 1024 * 1024
    nproc = [] if report.cgroup_pids else [f"--nproc={limits.max_processes}"]
    return ["prlimit", f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 5}",
            f"--data={memory}", f"--fsize={limits.max_file_mb * 1024 * 1024}",
            f"--nofile={limits.max_open_files}", *nproc, "--core=0", "--"]


# The wrapper joins the evaluation's cgroups, then execs; nothing starts outside the cgroup.
JOIN_CGROUPS = 'for f in $SANDBOX_CGROUP_PROCS; do echo $$ > "$f" || exit 121; done; exec "$@"'

"""One cgroup per sandboxed process for memory, process count and CPU (cgroup v1 or v2, where writable).

v1: `/sys/fs/cgroup/{memory,pids,cpu}/discovery-sandbox/<name>`.
v2: `/sys/fs/cgroup/discovery-sandbox/<name>` with the memory, pids and cpu controllers enabled.
A process joins by writing its pid to every `cgroup.procs` file (the sandbox's wrapper shell does
this before it execs into the sandbox, so nothing the candidate starts is ever outside).
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "discovery-sandbox"
CPU_PERIOD_US = 100_000

log = logging.getLogger(__name__)


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def _v2_root() -> Path | None:
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return CGROUP_ROOT
    return None


def _ensure_v2_parent() -> Path:
    root = _v2_root()
    assert root is not None
    parent = root / GROUP
    parent.mkdir(exist_ok=True)
    controllers = (parent / "cgroup.controllers").read_text().split()
    wanted = [c for c in ("memory", "pids", "cpu") if c in controllers]
    if wanted:
        (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
    return parent


class Cgroup:
    """A per-evaluation cgroup; `create()` returns None where the machine does not allow one."""

    def __init__(self, memory: Path | None, pids: Path | None, version: int, cpu: Path | None = None) -> None:
        self.memory = memory
        self.pids = pids
        self.cpu = cpu
        self.version = version

    @property
    def dirs(self) -> list[Path]:
        return sorted({d for d in (self.memory, self.pids, self.cpu) if d is not None})

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs]

    @classmethod
    def create(cls, memory_bytes: int, max_pids: int, cpus: float | None = None) -> Cgroup | None:
        """`cpus`: a CPU quota in cores (None: no quota)."""
        sweep_stale()
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            if _v2_root() is not None:
                path = _ensure_v2_parent() / name
                path.mkdir()
                group = cls(path, path, 2)
                if (path / "memory.max").exists():
                    (path / "memory.max").write_text(str(memory_bytes))
                    if (path / "memory.swap.max").exists():
                        (path / "memory.swap.max").write_text("0")
                else:
                    group.memory = None
                if (path / "pids.max").exists():
                    (path / "pids.max").write_text(str(max_pids))
                else:
                    group.pids = None
                if cpus is not None and (path / "cpu.max").exists():
                    (path / "cpu.max").write_text(f"{int(cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
                    group.cpu = path
                return group if group.memory or group.pids else group._discard()
            memory = pids = None
            if _writable_dir(CGROUP_ROOT / "memory"):
                memory = CGROUP_ROOT / "memory" / GROUP / name
                memory.mkdir(parents=True)
                (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    try:
                        (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                    except OSError:
                        pass
            if _writable_dir(CGROUP_ROOT / "pids"):
                pids = CGROUP_ROOT / "pids" / GROUP / name
                pids.mkdir(parents=True)
                (pids / "pids.max").write_text(str(max_pids))
            cpu = None
            if cpus is not None and _writable_dir(CGROUP_ROOT / "cpu"):
                cpu = CGROUP_ROOT / "cpu" / GROUP / name
                cpu.mkdir(parents=True)
                (cpu / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (cpu / "cpu.cfs_quota_us").write_text(str(int(cpus * CPU_PERIOD_US)))
            if memory is None and pids is None and cpu is None:
                return None
            return cls(memory, pids, 1, cpu)
        except OSError:
            return None

    def _discard(self) -> None:
        self.destroy()

    def pids_inside(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            try:
                found |= {int(p) for p in procs.read_text().split()}
            except (OSError, ValueError):
                pass
        return found

    def oom_killed(self) -> bool:
        """True when the kernel's OOM killer acted in this cgroup."""
        if self.memory is None:
            return False
        try:
            if self.version == 2:
                text = (self.memory / "memory.events").read_text()
            else:
                text = (self.memory / "memory.oom_control").read_text()
        except OSError:
            return False
        counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", "0")) > 0

    def kill_all(self, attempts: int = 100) -> None:
        """SIGKILL every process in the cgroup until it is empty."""
        if self.version == 2 and self.memory is not None and (self.memory / "cgroup.kill").exists():
            try:
                (self.memory / "cgroup.kill").write_text("1")
            except OSError:
                pass
        for _ in range(attempts):
            pids = self.pids_inside()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def destroy(self) -> None:
        self.kill_all()
        for path in self.dirs:
            for attempt in range(100):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:  # busy while the last processes exit
                    if attempt == 99:
                        log.warning("could not remove sandbox cgroup %s: %s", path, exc)
                    time.sleep(0.02)


def probe(controller: str) -> bool:
    """True when a per-evaluation cgroup with this controller can be created here."""
    group = Cgroup.create(memory_bytes=256 * 1024 * 1024, max_pids=64, cpus=1.0)
    if group is None:
        return False
    try:
        return {"memory": group.memory, "pids": group.pids, "cpu": group.cpu}[controller] is not None
    finally:
        group.destroy()


def sweep_stale() -> None:
    """Remove the cgroups of workers that died mid-evaluation (killed before they could clean up)."""
    v2 = _v2_root() is not None
    controllers = [None] if v2 else ["memory", "pids", "cpu"]
    for controller in controllers:
        parent = CGROUP_ROOT / GROUP if controller is None else CGROUP_ROOT / controller / GROUP
        try:
            entries = [p for p in parent.iterdir() if p.is_dir()]
        except OSError:
            continue
        for path in entries:
            creator = path.name.split("-", 1)[0]
            if not creator.isdigit() or Path(f"/proc/{creator}").exists():
                continue
            if v2:
                Cgroup(path, path, 2).destroy()
            else:
                Cgroup(None, None, 1, path).destroy()  # any one directory: destroy() empties and removes it

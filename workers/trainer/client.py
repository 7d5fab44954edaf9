"""The worker's handle on its trainers: start one inside the sandbox, keep it warm, enforce deadlines.

A `TrainerProcess` is one long-lived `workers.trainer.server` in a `SandboxProcess`: bwrap with no
network and read-only files (its compile cache is the one writable bind), its own unprivileged uid,
a cgroup with memory, pids and a CPU quota, and, on a host with NVIDIA devices, exactly those device
nodes (JAX then runs on the GPU). Hostile HLO can still loop forever or exhaust memory: a request
that misses its deadline, or a trainer that dies, raises `TrainerFailed`; the process is killed and
the next request starts a fresh one. `TrainerPool` keeps one trainer per evaluate slot of a process.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import os
import selectors
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import IO

from pydantic import BaseModel

from workers.sandbox.command import SANDBOX_CACHE_DIR, Bind
from workers.sandbox.host import SandboxLimits, gpu_device_nodes
from workers.sandbox.process import SandboxProcess
from workers.trainer.protocol import MAX_FRAME_BYTES, TrainRequest, TrainResponse, write_frame
from workers.vocabulary import Outcome

log = logging.getLogger(__name__)

STARTUP_SECONDS = 180.0  # imports and JAX's backend, before the first request
TRAINER_UID = 65533


class TrainerFailed(Exception):
    """The trainer missed its deadline, ran out of memory or died; the batch must be retried smaller."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


CUDA_INSTALL = "pip install 'discovery[cuda12]'"
# The modules JAX's CUDA 12 backend installs (`jax[cuda12]`): found without importing JAX.
CUDA_PLUGIN_MODULES = ("jax_cuda12_plugin", "jax_plugins.xla_cuda12")


def cuda_backend_installed() -> bool:
    """Whether the installed JAX can use an NVIDIA GPU (its CUDA plugin is installed)."""
    def found(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package is missing
            return False

    return any(found(name) for name in CUDA_PLUGIN_MODULES)


@cache
def _warn_cpu_fallback(dev_root: Path) -> None:
    log.warning("this host has NVIDIA GPUs (%s) but the installed JAX has no CUDA backend: training on the CPU; "
                "for the GPU, %s", dev_root, CUDA_INSTALL)


class TrainerConfig(BaseModel):
    limits: SandboxLimits
    device: str = "auto"  # "auto": the GPU when the host has NVIDIA device nodes and CUDA JAX; "cpu"; "gpu"
    dev_root: Path = Path("/dev")

    def devices(self) -> list[Path]:
        """The device nodes the trainer gets: none for the CPU. `auto` falls back to the CPU, with one warning,
        on a GPU host whose JAX has no CUDA backend; `gpu` refuses with the install command."""
        nodes = [] if self.device == "cpu" else gpu_device_nodes(self.dev_root)
        if self.device == "gpu" and not nodes:
            raise RuntimeError(f"a GPU trainer was asked for, but {self.dev_root} has no NVIDIA device nodes")
        if nodes and not cuda_backend_installed():
            if self.device == "gpu":
                raise RuntimeError(f"a GPU trainer was asked for, but the installed JAX has no CUDA backend: "
                                   f"{CUDA_INSTALL}")
            _warn_cpu_fallback(self.dev_root)
            return []
        return nodes

    def platform(self) -> str:
        return "cuda" if self.devices() else "cpu"


def trainer_sandbox(config: TrainerConfig) -> tuple[list[str], list[Bind], dict[str, str]]:
    """The trainer's arguments, binds and environment: the compile cache, the GPU device nodes, the platform."""
    limits = config.limits
    binds = [Bind(source=node, target=str(node), writable=True, device=True) for node in config.devices()]
    args: list[str] = []
    if limits.cache_dir is not None:
        cache = Path(limits.cache_dir) / "jax"
        cache.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(cache, TRAINER_UID, TRAINER_UID)
        inside = f"{SANDBOX_CACHE_DIR}/jax" if limits.isolation == "bwrap" else str(cache)
        binds.append(Bind(source=cache, target=inside, writable=True))
        args += ["--cache-dir", inside]
    return args, binds, {"JAX_PLATFORMS": config.platform()}


class TrainerProcess:
    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.child: SandboxProcess | None = None
        self.platform = ""
        self._output: collections.deque[bytes] = collections.deque(maxlen=64)
        self._buffer = b""

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.proc is not None and self.child.proc.poll() is None

    def start(self) -> None:
        self.stop()
        args, binds, env = trainer_sandbox(self.config)
        self.child = SandboxProcess("workers.trainer.server", args, self.config.limits, uid=TRAINER_UID,
                                    binds=binds, env=env)
        proc = self.child.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        for stream in (proc.stdout, proc.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        self._buffer = b""
        ready = TrainResponse.model_validate_json(self._read_frame(time.monotonic() + STARTUP_SECONDS, "starting"))
        self.platform = ready.platform

    def _drain(self, stream: IO[bytes]) -> None:
        try:
            for line in iter(stream.readline, b""):
                self._output.append(line[-2000:])
        except (OSError, ValueError):
            pass

    def output_tail(self, lines: int = 8) -> str:
        text = b"".join(list(self._output)[-lines:]).decode(errors="replace").strip()
        return text[-3000:]

    def _read_frame(self, deadline: float, doing: str) -> bytes:
        assert self.child is not None and self.child.result_read is not None
        fd = self.child.result_read
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                if len(self._buffer) >= 8:
                    size = int.from_bytes(self._buffer[:8], "big")
                    if size > MAX_FRAME_BYTES:
                        self._fail(Outcome.killed, f"the trainer sent a frame of {size} bytes while {doing}")
                    if len(self._buffer) >= 8 + size:
                        frame, self._buffer = self._buffer[8:8 + size], self._buffer[8 + size:]
                        return frame
                left = deadline - time.monotonic()
                if left <= 0:
                    self._fail(Outcome.timeout, f"the trainer exceeded its deadline while {doing}")
                if selector.select(timeout=min(left, 1.0)):
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        self._died(doing)
                    self._buffer += chunk

    def _died(self, doing: str) -> None:
        child = self.child
        time.sleep(0.2)  # let the output threads catch the last lines
        if child is not None and child.group is not None and child.group.oom_killed():
            self._fail(Outcome.memory, f"the trainer exceeded its memory limit of {self.config.limits.memory_mb} MB "
                                       f"while {doing}")
        code = child.proc.poll() if child is not None and child.proc is not None else None
        tail = self.output_tail()
        self._fail(Outcome.killed, f"the trainer died (exit {code}) while {doing}" + (f":\n{tail}" if tail else ""))

    def _fail(self, outcome: Outcome, message: str) -> None:
        self.stop()
        raise TrainerFailed(outcome, message)

    def train(self, request: TrainRequest, timeout: float) -> TrainResponse:
        """One batch; raises TrainerFailed (and leaves no process behind) when the trainer does not answer."""
        if not self.alive:
            self.start()
        assert self.child is not None and self.child.proc is not None and self.child.proc.stdin is not None
        try:
            write_frame(self.child.proc.stdin.fileno(), request.model_dump_json().encode())
        except OSError:
            self._died("receiving the request")
        return TrainResponse.model_validate_json(self._read_frame(time.monotonic() + timeout, "training"))

    def stop(self) -> None:
        if self.child is not None:
            self.child.close()
            self.child = None


class TrainerPool:
    """Warm trainers of this process, one per concurrent evaluate slot, reused across jobs."""

    def __init__(self) -> None:
        self._idle: dict[str, list[TrainerProcess]] = {}  # by the config's JSON
        self._lock = threading.Lock()

    @contextmanager
    def acquire(self, config: TrainerConfig) -> Iterator[TrainerProcess]:
        key = config.model_dump_json()
        with self._lock:
            idle = self._idle.setdefault(key, [])
            trainer = idle.pop() if idle else TrainerProcess(config)
        try:
            yield trainer
        finally:
            with self._lock:
                self._idle.setdefault(key, []).append(trainer)

    def close(self) -> None:
        with self._lock:
            for trainers in self._idle.values():
                for trainer in trainers:
                    trainer.stop()
            self._idle.clear()


POOL = TrainerPool()

"""What the worker and the trainer say to each other: length-prefixed JSON frames, never pickle."""

from __future__ import annotations

import base64
import os
import struct

import numpy as np
from pydantic import BaseModel, Field, model_validator

MAX_FRAME_BYTES = 256 * 1024 * 1024
_HEADER = struct.Struct(">Q")


class EncodedArray(BaseModel):
    dtype: str
    shape: list[int]
    data: str  # base64 of the C-ordered bytes

    @classmethod
    def of(cls, array: np.ndarray) -> EncodedArray:
        array = np.ascontiguousarray(array)
        return cls(dtype=str(array.dtype), shape=list(array.shape), data=base64.b64encode(array.tobytes()).decode())

    def decode(self) -> np.ndarray:
        if self.dtype not in ("float32", "bool"):
            raise ValueError(f"unexpected array dtype {self.dtype}")
        array = np.frombuffer(base64.b64decode(self.data, validate=True), dtype=self.dtype)
        return array.reshape(self.shape)


class TrainRequest(BaseModel):
    """Train a batch on one environment: every candidate × learning rate × seed in one program."""

    target: str
    env: str
    profile: str
    seeds: list[int]
    learning_rates: list[float]
    artifacts: list[str] | None = None  # base64 artifact bytes per candidate; None: the warm start itself
    # Or, exclusive with artifacts: one parameter vector per candidate of a project network (`network`, e.g.
    # "lpo_network"), each checked by `workers.trainer.parameters.decode_parameters` (ES members, network candidates).
    parameters: list[EncodedArray] | None = None
    network: str | None = None
    check_rules: bool = False  # also refuse artifacts that break the target's rules (a run's candidates)
    with_random_baseline: bool = False

    @model_validator(mode="after")
    def _one_kind_of_candidate(self) -> TrainRequest:
        if self.parameters is not None and self.artifacts is not None:
            raise ValueError("a request trains artifacts or parameter vectors, not both")
        if (self.parameters is None) != (self.network is None):
            raise ValueError("parameter vectors need the network they parameterise, and only they do")
        if self.parameters is not None and not self.parameters:
            raise ValueError("a request with parameters needs at least one vector")
        return self

    @property
    def candidates(self) -> int:
        """The candidates on the leading axis (the warm start alone when neither artifacts nor parameters)."""
        batch = self.artifacts if self.artifacts is not None else self.parameters
        return 1 if batch is None else len(batch)

    def subset(self, start: int, stop: int) -> TrainRequest:
        """The same request for candidates start..stop-1 (a batch split in halves)."""
        if self.parameters is not None:
            return self.model_copy(update={"parameters": self.parameters[start:stop]})
        assert self.artifacts is not None
        return self.model_copy(update={"artifacts": self.artifacts[start:stop]})


class TrainResponse(BaseModel):
    """Raw arrays for the candidates that were trained (`trained`, in the order of the leading axis)."""

    trained: list[int] = Field(default_factory=list)
    refused: dict[int, str] = Field(default_factory=dict)  # candidate index -> why the trainer refused it
    return_sum: EncodedArray | None = None  # [trained, lr, seed, update]: returns of episodes ended per update
    episodes: EncodedArray | None = None  # [trained, lr, seed, update]: episodes ended per update
    finite: EncodedArray | None = None  # [trained, lr, seed]: losses, parameters and returns stayed finite
    diagnostics: EncodedArray | None = None  # [trained, lr, seed, update, part]: PPO's loss parts (results.DIAGNOSTICS)
    random_returns: list[float] | None = None  # per seed: a random policy's mean return over whole episodes
    platform: str = ""  # JAX's backend: "cpu", "cuda"
    device: str = ""  # the device trained on: "TFRT_CPU_0", "cuda:0"
    compile_seconds: float = 0.0
    train_seconds: float = 0.0
    error: str | None = None  # the request itself could not be served


def write_frame(fd: int, payload: bytes) -> None:
    view = memoryview(_HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


def read_exactly(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> bytes | None:
    """One frame, or None at end of stream."""
    header = read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"a frame of {size} bytes is over the limit of {MAX_FRAME_BYTES}")
    return read_exactly(fd, size)

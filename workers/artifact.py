"""The artifact: what crosses the trust boundary from the tracer to the trainer.

A bundle of `jax.export` modules (serialized StableHLO, one per `ModuleSpec` of the target) for the
candidate function alone, never the training program, with what the source computed on the target's
probe inputs (its declared behaviour, from which the fingerprint is hashed). Its canonical form is sorted JSON; its
SHA-256 is the provenance every evaluation stores. The tracer builds it; the trainer verifies every
module itself before use (`workers.trainer.verify`): nothing the tracer says about it is trusted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from workers.targets.base import behaviour_fingerprint

MAX_ARTIFACT_BYTES = 4 * 1024 * 1024


MAX_PROBE_VALUES = 65_536


class ProbeOutput(BaseModel):
    """One array the source returned on its target's probe inputs, at concrete shapes (float32, C order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: tuple[int, ...]
    data: str  # base64 of the little-endian float32 bytes

    @classmethod
    def of(cls, array: np.ndarray) -> ProbeOutput:
        array = np.ascontiguousarray(array, dtype="<f4")
        return cls(shape=array.shape, data=base64.b64encode(array.tobytes()).decode())

    def decode(self) -> np.ndarray:
        values = np.frombuffer(base64.b64decode(self.data, validate=True), dtype="<f4")
        if values.size != math.prod(self.shape):
            raise ValueError(f"a probe output of shape {self.shape} holds {values.size} values")
        return values.reshape(self.shape)


class Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[2] = 2
    target: str
    platforms: tuple[str, ...]
    modules: dict[str, str]  # module name -> base64 of `Exported.serialize()`
    # What the source computed on the target's probe inputs (the tracer's declaration). The trainer runs the
    # modules on the same inputs and refuses the artifact unless they agree; the fingerprint is hashed from it.
    probe: tuple[ProbeOutput, ...]

    @field_validator("probe")
    @classmethod
    def _bounded(cls, probe: tuple[ProbeOutput, ...]) -> tuple[ProbeOutput, ...]:
        if sum(math.prod(p.shape) for p in probe) > MAX_PROBE_VALUES:
            raise ValueError(f"the probe outputs hold more than {MAX_PROBE_VALUES} values")
        return probe

    def probe_outputs(self) -> list[np.ndarray]:
        return [p.decode() for p in self.probe]

    @property
    def fingerprint(self) -> str:
        """The behaviour fingerprint of the declared probe outputs (`workers.targets.base.behaviour_fingerprint`)."""
        return behaviour_fingerprint(self.probe_outputs())

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def module_bytes(self, name: str) -> bytes:
        return base64.b64decode(self.modules[name], validate=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> Artifact:
        if len(data) > MAX_ARTIFACT_BYTES:
            raise ValueError(f"the artifact has {len(data)} bytes; the limit is {MAX_ARTIFACT_BYTES}")
        return cls.model_validate_json(data)

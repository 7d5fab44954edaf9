"""The artifact: what crosses the trust boundary from the tracer to the trainer.

A bundle of `jax.export` modules (serialized StableHLO, one per `ModuleSpec` of the target) for the
candidate function alone, never the training program. Its canonical form is sorted JSON; its
SHA-256 is the provenance every evaluation stores. The tracer builds it; the trainer verifies every
module itself before use (`workers.trainer.verify`): nothing the tracer says about it is trusted.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict

MAX_ARTIFACT_BYTES = 4 * 1024 * 1024


class Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    target: str
    platforms: tuple[str, ...]
    modules: dict[str, str]  # module name -> base64 of `Exported.serialize()`

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

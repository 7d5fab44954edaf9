"""Judge what a verified artifact computes, on trusted code, before the trainer trains it.

`verify` checks what an artifact *is* (its operations and signature); this checks what it *does*,
calling its modules the way the training program will:
1. it computes what its source computed: the target's probe, run on the modules, must reproduce the
   probe outputs the artifact declares (the tracer ran the source on those inputs at concrete
   shapes), so the fingerprint hashed from them is the artifact's own behaviour;
2. the target's rules, when the request asks for them (a run's candidates);
3. its outputs do not depend on how many samples share a call, or on their order, at the sizes this
   environment trains with (`Target.check_invariance`: per element for lpo, per column for advantage);
4. its exported gradient is the gradient of its exported function (`Target.check_gradient`, finite
   differences), for the targets the training loop differentiates.
A candidate that fails any of them is refused with the reason, which the proposer is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import export

from workers.rl.envs import PPOConfig
from workers.targets import CandidateError, Target
from workers.targets.base import ModuleSpec
from workers.trainer.verify import ArtifactRefused

# How closely the modules must reproduce the source's probe outputs: float32 arithmetic compiled for symbolic
# and for concrete shapes differs in its last bits, never by this much.
PROBE_RTOL = 1e-3
PROBE_ATOL = 1e-5


def training_sizes(config: PPOConfig) -> dict[str, int]:
    """The sizes a candidate is called with in this environment's training program, by dimension name."""
    batch = config.num_envs * config.num_steps
    return {"m": batch // config.num_minibatches, "t": config.num_steps, "n": config.num_envs}


def _one_call(spec: ModuleSpec, module: export.Exported) -> Callable[..., tuple[Any, ...]]:
    """A module as a plain call with unbatched arguments (one lane)."""
    def call(*args: Any) -> tuple[Any, ...]:
        lifted = [jnp.asarray(a, jnp.float32)[None] if s.lane else jnp.asarray(a, jnp.float32)
                  for a, s in zip(args, spec.args, strict=True)]
        return tuple(out[0] for out in module.call(*lifted))

    return call


def artifact_function(target: Target, modules: dict[str, export.Exported]) -> Callable[..., Any]:
    """The artifact as a function with the target's signature (what the probe and the rules call)."""
    return target.assemble({spec.name: _one_call(spec, modules[spec.name]) for spec in target.modules})


def _same_outputs(declared: list[np.ndarray], measured: list[Any]) -> str | None:
    """Why the outputs differ, or None when they agree."""
    if len(declared) != len(measured):
        return f"the probe returned {len(measured)} outputs; the source returned {len(declared)}"
    for i, (want, got) in enumerate(zip(declared, measured, strict=True)):
        got = np.asarray(got, dtype=np.float32)
        if got.shape != want.shape:
            return f"probe output {i} has shape {got.shape}; the source's has {want.shape}"
        scale = PROBE_ATOL * max(1.0, float(np.max(np.abs(want), initial=0.0)))
        if not np.allclose(got, want, rtol=PROBE_RTOL, atol=scale, equal_nan=True):
            worst = int(np.argmax(np.abs(got - want).ravel()))
            return (f"probe output {i} differs from the source's (at entry {worst}: {got.ravel()[worst]:.6g} "
                    f"against {want.ravel()[worst]:.6g})")
    return None


def audit_artifact(target: Target, modules: dict[str, export.Exported], declared: list[np.ndarray],
                   sizes: dict[str, int], check_rules: bool) -> None:
    """Refuse (ArtifactRefused) an artifact that does not compute what its source did, breaks a rule of the
    target (when asked), depends on its batch or has a gradient that is not its own."""
    fn = artifact_function(target, modules)
    try:
        difference = _same_outputs(declared, target.probe(fn))
        if difference is not None:
            raise ArtifactRefused(f"the artifact does not compute what its source computes: {difference}")
        if check_rules and target.check_rules is not None:
            target.check_rules(fn)
        if target.check_invariance is not None:
            target.check_invariance(fn, sizes)
        if target.check_gradient is not None:
            target.check_gradient(fn)
    except CandidateError as exc:
        raise ArtifactRefused(str(exc)) from None

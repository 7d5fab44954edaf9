"""The advantage kernel: the estimator's probe, the per-column check the trainer runs on an artifact, and the
module the tracer exports with how the trainer plugs it into PPO. Imported only by the tracer and the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from workers.targets.base import ArgSpec, CandidateError, ModuleSpec

PROBE_ENVS = 4


def probe(fn: Callable[..., Any]) -> list[np.ndarray]:
    """Call the estimator on random inputs, traced and compiled once as the trainer would; returns its output."""
    rng = np.random.default_rng(0)
    t, n = 16, PROBE_ENVS
    rewards = rng.standard_normal((t, n)).astype(np.float32)
    values = rng.standard_normal((t, n)).astype(np.float32)
    dones = (rng.uniform(size=(t, n)) < 0.1).astype(np.float32)
    last_value = rng.standard_normal(n).astype(np.float32)
    try:
        out = np.asarray(jax.jit(lambda *args: jnp.asarray(fn(*args)))(
            rewards, values, dones, last_value, np.float32(0.99), np.float32(0.95)))
    except Exception as exc:  # noqa: BLE001 - any failure is the candidate's
        raise CandidateError(f"calling advantages on random inputs failed: {type(exc).__name__}: {exc}") from exc
    if out.shape != rewards.shape:
        raise CandidateError(f"advantages must return the shape of rewards {rewards.shape}, got {out.shape}")
    if not bool(np.all(np.isfinite(out))):
        raise CandidateError("advantages returned NaN or Inf on random inputs")
    return [out]


def check_invariance(fn: Callable[..., Any], sizes: dict[str, int]) -> None:
    """Per column: the advantages of one environment's rollout are the same whether it is called beside as many
    environments as the probe's or beside the training program's `sizes["n"]` (drawn from those with repeats, in
    any order), at the training rollout's length `sizes["t"]`."""
    rng = np.random.default_rng(1)
    t, pool = sizes["t"], PROBE_ENVS
    rewards, values = (rng.standard_normal((t, pool)).astype(np.float32) for _ in range(2))
    dones = (rng.uniform(size=(t, pool)) < 0.05).astype(np.float32)
    last_value = rng.standard_normal(pool).astype(np.float32)
    index = rng.integers(0, pool, size=sizes["n"])
    call = jax.jit(lambda *args: jnp.asarray(fn(*args, np.float32(0.99), np.float32(0.95))))
    try:
        few = np.asarray(call(rewards, values, dones, last_value))
        many = np.asarray(call(rewards[:, index], values[:, index], dones[:, index], last_value[index]))
    except Exception as exc:  # noqa: BLE001 - any failure is the candidate's
        raise CandidateError(f"calling advantages failed: {type(exc).__name__}: {exc}") from exc
    scale = 1e-5 * max(1.0, float(np.max(np.abs(few))))
    if many.shape != (t, sizes["n"]) or not np.allclose(many, few[:, index], rtol=1e-4, atol=scale):
        raise CandidateError(
            f"the advantages of an environment depend on the other environments in the call (called with {pool} "
            f"environments and with {sizes['n']}, as in training, they differ); compute them per column")


def _lanes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """advantages over a leading lane axis; gamma and lam shared by every lane."""
    def one(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array, gamma: jax.Array,
            lam: jax.Array) -> jax.Array:
        out = fn(rewards, values, dones, last_value, gamma, lam)
        return jnp.broadcast_to(jnp.asarray(out, jnp.float32), rewards.shape)

    return lambda *args: (jax.vmap(one, in_axes=(0, 0, 0, 0, None, None))(*args),)


def assemble(calls: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    def advantages(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array, gamma: float,
                   lam: float) -> jax.Array:
        f32 = jnp.float32
        return calls["advantages"](rewards, values, dones, last_value, jnp.asarray(gamma, f32),
                                   jnp.asarray(lam, f32))[0]

    return advantages


_TN = ArgSpec(("t", "n"))

MODULES = (ModuleSpec("advantages", args=(_TN, _TN, _TN, ArgSpec(("n",)), ArgSpec((), lane=False),
                                         ArgSpec((), lane=False)), results=(_TN,), build=_lanes),)

"""Advantage: a learned advantage estimator that replaces GAE in PPO.

Called once per rollout on time-major arrays; the value targets are advantages + values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from workers.targets.base import ArgSpec, CandidateError, ModuleSpec, Target, TargetInput

WARM_START = '''import jax
import jax.numpy as jnp


def advantages(rewards, values, dones, last_value, gamma, lam):
    """Generalised advantage estimation (Schulman et al. 2016)."""
    next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)
    not_done = 1.0 - dones
    deltas = rewards + gamma * next_values * not_done - values

    def backward(gae, step):
        delta, nd = step
        gae = delta + gamma * lam * nd * gae
        return gae, gae

    _, adv = jax.lax.scan(backward, jnp.zeros_like(last_value), (deltas, not_done), reverse=True)
    return adv
'''


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

TARGET = Target(
    name="advantage",
    component="advantage estimator for reinforcement learning (it replaces GAE in PPO)",
    function_name="advantages",
    parameters=("rewards", "values", "dones", "last_value", "gamma", "lam"),
    scalar_inputs=frozenset({"gamma", "lam"}),
    summary=(
        "An advantage estimator used instead of GAE in PPO. It turns one rollout of rewards and value "
        "estimates into an advantage per step; the critic's targets are advantages + values."
    ),
    inputs=(
        TargetInput("rewards", "float array [T, N]: reward after step t in each of N parallel environments."),
        TargetInput("values", "float array [T, N]: the critic's value estimate of the state at step t."),
        TargetInput("dones", "float array [T, N]: 1.0 where the episode ended after step t, else 0.0."),
        TargetInput("last_value", "float array [N]: the value estimate of the state after the last step."),
        TargetInput("gamma", "a float, the discount factor (0.99)."),
        TargetInput("lam", "a float, GAE's lambda (0.95); use it or ignore it."),
    ),
    returns="a float array [T, N]: the advantage of each step",
    rules=(
        "do not bootstrap across an episode boundary (where dones is 1)",
        "the result must have shape [T, N] and be finite",
        "use only jax, jax.numpy, jax.nn, jax.lax, math and functools; the function is traced by JAX",
    ),
    warm_start=WARM_START,
    default_train_envs=("CartPole-v1",),
    default_test_envs=("Acrobot-v1",),
    probe=probe,
    check_invariance=check_invariance,
    plugin_field="advantages",
    modules=(ModuleSpec("advantages", args=(_TN, _TN, _TN, ArgSpec(("n",)), ArgSpec((), lane=False),
                                           ArgSpec((), lane=False)), results=(_TN,), build=_lanes),),
    assemble=assemble,
)

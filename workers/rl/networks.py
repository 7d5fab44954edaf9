"""The actor-critic network as plain JAX functions over a dict of arrays, and its policy's action distribution
(categorical over logits, or a Gaussian around the actor's mean with a learned `log_std`).

Parameters are initialised with NumPy (orthogonal, as in PureJaxRL) outside every JAX graph: batched
QR inside a vmapped init deadlocks XLA's CPU thread pool on 2 cores (tests/rl/test_fresh_processes.py checks it).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, dict[str, jax.Array]]
LOG_2PI = math.log(2.0 * math.pi)


def _orthogonal(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (scale * q[:rows, :cols]).astype(np.float32)


def _dense(rng: np.random.Generator, n_in: int, n_out: int, scale: float) -> dict[str, np.ndarray]:
    return {"w": _orthogonal(rng, (n_in, n_out), scale), "b": np.zeros((n_out,), np.float32)}


def init_params(seed: int, obs_dim: int, action_dim: int, hidden: int, continuous: bool) -> dict:
    """One seed's parameters as NumPy arrays (stack several seeds with `stack_params`)."""
    rng = np.random.default_rng(seed)
    root2 = float(np.sqrt(2.0))
    params = {
        "actor_0": _dense(rng, obs_dim, hidden, root2),
        "actor_1": _dense(rng, hidden, hidden, root2),
        "actor_out": _dense(rng, hidden, action_dim, 0.01),
        "critic_0": _dense(rng, obs_dim, hidden, root2),
        "critic_1": _dense(rng, hidden, hidden, root2),
        "critic_out": _dense(rng, hidden, 1, 1.0),
    }
    if continuous:
        params["log_std"] = {"v": np.zeros((action_dim,), np.float32)}
    return params


def stack_params(per_seed: list[dict]) -> Params:
    return jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *per_seed)


def _mlp(params: Params, prefix: str, x: jax.Array, activation: str) -> jax.Array:
    act = jnp.tanh if activation == "tanh" else jax.nn.relu
    for layer in ("_0", "_1"):
        p = params[prefix + layer]
        x = act(x @ p["w"] + p["b"])
    p = params[prefix + "_out"]
    return x @ p["w"] + p["b"]


def apply(params: Params, obs: jax.Array, activation: str) -> tuple[jax.Array, jax.Array]:
    """Return (actor output, value): logits for discrete actions or the Gaussian mean for continuous."""
    return _mlp(params, "actor", obs, activation), _mlp(params, "critic", obs, activation)[..., 0]


def log_prob_entropy(params: Params, out: jax.Array, action: jax.Array, continuous: bool
                     ) -> tuple[jax.Array, jax.Array]:
    """The policy's log-probability of `action` and its entropy, from the actor's output (logits, or a mean)."""
    if continuous:
        log_std = params["log_std"]["v"]
        z = (action - out) / jnp.exp(log_std)
        log_prob = jnp.sum(-0.5 * z * z - log_std - 0.5 * LOG_2PI, axis=-1)
        entropy = jnp.sum(0.5 + 0.5 * LOG_2PI + log_std) * jnp.ones(out.shape[:-1])
        return log_prob, entropy
    logp = jax.nn.log_softmax(out)
    log_prob = jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return log_prob, entropy


def sample_action(params: Params, out: jax.Array, key: jax.Array, continuous: bool) -> jax.Array:
    """An action drawn from the policy given the actor's output."""
    if continuous:
        return out + jnp.exp(params["log_std"]["v"]) * jax.random.normal(key, out.shape)
    return jax.random.categorical(key, out)

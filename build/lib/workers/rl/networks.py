"""The actor-critic network as plain JAX functions over a dict of arrays.

Parameters are initialised with NumPy (orthogonal, as in PureJaxRL) outside every JAX graph: batched
QR inside a vmapped init deadlocks XLA's CPU thread pool on 2 cores (tests/rl/test_fresh_processes.py checks it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, dict[str, jax.Array]]


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

"""The optimizer kernel: the update rule's probe and the modules the tracer exports (one per parameter rank),
with how the trainer plugs them into PPO. Imported only by the tracer and the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from workers.targets.base import ArgSpec, CandidateError, ModuleSpec
from workers.targets.optimizer import MOMENTUM_BETAS, STATE_SLOTS


def probe(fn: Callable[..., Any]) -> list[np.ndarray]:
    """Call the update rule on random inputs, traced and compiled once as the trainer would; returns its step
    and new state."""
    rng = np.random.default_rng(0)
    shape = (8, 4)
    grad = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    param = rng.standard_normal(shape).astype(np.float32)
    state = tuple(np.zeros_like(param) for _ in range(STATE_SLOTS))
    momenta = (0.1 * rng.standard_normal((len(MOMENTUM_BETAS), *shape))).astype(np.float32)
    dormancy = np.abs(1.0 + 0.5 * rng.standard_normal(shape)).astype(np.float32)
    noise = rng.standard_normal(shape).astype(np.float32)
    scalars = tuple(np.float32(x) for x in (3.0, 0.5, 0.5, 0.25))  # iteration, progress, layer and batch proportion

    def call(*args: Any) -> Any:
        return jax.tree.map(jnp.asarray, fn(*args))

    try:
        out = jax.jit(call)(grad, param, state, momenta, *scalars, dormancy, noise, np.float32(1e-3))
    except Exception as exc:  # noqa: BLE001 - any failure is the candidate's
        raise CandidateError(f"calling update on random inputs failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise CandidateError("update must return a pair (delta, new_state)")
    delta, new_state = np.asarray(out[0]), out[1]
    if delta.shape != param.shape:
        raise CandidateError(f"update must return a step (delta) with the parameter's shape {param.shape}, "
                             f"got {delta.shape}")
    if not isinstance(new_state, tuple | list) or len(new_state) != STATE_SLOTS:
        count = len(new_state) if isinstance(new_state, tuple | list) else "not a tuple"
        raise CandidateError(f"update must return a new state of exactly {STATE_SLOTS} arrays shaped like the "
                             f"parameter, got {count}")
    new_state = tuple(np.asarray(s) for s in new_state)
    wrong = [f"slot {i}: {s.shape}" for i, s in enumerate(new_state) if s.shape != param.shape]
    if wrong:
        raise CandidateError(f"every new state array must have the parameter's shape {param.shape}; got "
                             f"{', '.join(wrong)}")
    if not all(bool(np.all(np.isfinite(x))) for x in (delta, *new_state)):
        raise CandidateError("update returned NaN or Inf on random inputs")
    return [delta, *new_state]


TENSOR_ARGS = 2 + STATE_SLOTS + len(MOMENTUM_BETAS) + 2  # grad, param, state, momenta, dormancy, noise
SCALAR_ARGS = 5  # iteration, progress, layer_proportion, batch_proportion, lr


def _lanes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """update over a leading lane axis, flat: (grad, param, *state, *momenta, dormancy, noise, iteration, progress,
    layer_proportion, batch_proportion, lr) -> (delta, *state)."""
    def one(grad: jax.Array, param: jax.Array, *rest: jax.Array) -> tuple[jax.Array, ...]:
        state, rest = rest[:STATE_SLOTS], rest[STATE_SLOTS:]
        momenta, rest = jnp.stack(rest[:len(MOMENTUM_BETAS)]), rest[len(MOMENTUM_BETAS):]
        dormancy, noise, iteration, progress, layer_p, batch_p, lr = rest
        delta, new_state = fn(grad, param, tuple(state), momenta, iteration, progress, layer_p, batch_p, dormancy,
                              noise, lr)
        new_state = tuple(new_state)
        if len(new_state) != STATE_SLOTS:
            raise CandidateError(f"update must return a new state of {STATE_SLOTS} arrays")
        return tuple(jnp.broadcast_to(jnp.asarray(x, jnp.float32), param.shape) for x in (delta, *new_state))

    return jax.vmap(one)


def assemble(calls: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    """The update rule for PPO, with the warm start's signature: the module exported for the parameter's rank."""
    def update(grad: jax.Array, param: jax.Array, state: tuple, momenta: jax.Array, iteration: jax.Array,
               progress: jax.Array, layer_proportion: jax.Array, batch_proportion: jax.Array, dormancy: jax.Array,
               noise: jax.Array, lr: jax.Array) -> tuple[jax.Array, tuple]:
        call = calls[f"update_{param.ndim}d"]
        scalars = (iteration, progress, layer_proportion, batch_proportion, lr)
        out = call(grad, param, *state, *(momenta[i] for i in range(len(MOMENTUM_BETAS))), dormancy, noise,
                   *(jnp.asarray(x, jnp.float32) for x in scalars))
        return out[0], tuple(out[1:])

    return update


def _update_module(dims: tuple[str, ...]) -> ModuleSpec:
    tensor, scalar = ArgSpec(dims), ArgSpec(())
    return ModuleSpec(f"update_{len(dims)}d", args=(tensor,) * TENSOR_ARGS + (scalar,) * SCALAR_ARGS,
                      results=(tensor,) * (1 + STATE_SLOTS), build=_lanes)

MODULES = (_update_module(("n",)), _update_module(("n", "k")))

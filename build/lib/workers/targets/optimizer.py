"""Optimizer: a learned update rule (in the spirit of OPEN) that replaces Adam in PPO.

The rule is called once per parameter tensor at every gradient step, after global-norm clipping.
It carries its own state: a tuple of four arrays shaped like the parameter, zero at the start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from workers.targets.base import ArgSpec, CandidateError, ModuleSpec, Target, TargetInput

STATE_SLOTS = 4

WARM_START = '''import jax.numpy as jnp


def update(grad, param, state, iteration, progress, lr):
    """Adam (b1 0.9, b2 0.999, eps 1e-5), the optimiser PPO is tuned with."""
    m, v, slot2, slot3 = state
    b1, b2, eps = 0.9, 0.999, 1e-5
    m = b1 * m + (1.0 - b1) * grad
    v = b2 * v + (1.0 - b2) * grad * grad
    t = iteration + 1.0
    m_hat = m / (1.0 - b1**t)
    v_hat = v / (1.0 - b2**t)
    return -lr * m_hat / (jnp.sqrt(v_hat) + eps), (m, v, slot2, slot3)
'''


def probe(fn: Callable[..., Any]) -> None:
    """Call the update rule on random inputs, traced and compiled once as the trainer would."""
    rng = np.random.default_rng(0)
    grad = (0.1 * rng.standard_normal((8, 4))).astype(np.float32)
    param = rng.standard_normal((8, 4)).astype(np.float32)
    state = tuple(np.zeros_like(param) for _ in range(STATE_SLOTS))

    def call(*args: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        delta, new_state = fn(*args)
        return jnp.asarray(delta), tuple(jnp.asarray(s) for s in new_state)

    try:
        delta, new_state = jax.jit(call)(grad, param, state, np.float32(3.0), np.float32(0.5), np.float32(1e-3))
    except Exception as exc:  # noqa: BLE001 - any failure is the candidate's
        raise CandidateError(f"calling update on random inputs failed: {type(exc).__name__}: {exc}") from exc
    delta, new_state = np.asarray(delta), tuple(np.asarray(s) for s in new_state)
    if delta.shape != param.shape:
        raise CandidateError(f"update must return a step with the parameter's shape {param.shape}, got {delta.shape}")
    if len(new_state) != STATE_SLOTS or any(s.shape != param.shape for s in new_state):
        raise CandidateError(f"update must return a new state of {STATE_SLOTS} arrays shaped like the parameter")
    if not all(bool(np.all(np.isfinite(x))) for x in (delta, *new_state)):
        raise CandidateError("update returned NaN or Inf on random inputs")


def _lanes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """update over a leading lane axis, flat: (grad, param, *state, iteration, progress, lr) -> (delta, *state)."""
    def one(grad: jax.Array, param: jax.Array, *rest: jax.Array) -> tuple[jax.Array, ...]:
        state, (iteration, progress, lr) = rest[:STATE_SLOTS], rest[STATE_SLOTS:]
        delta, new_state = fn(grad, param, tuple(state), iteration, progress, lr)
        new_state = tuple(new_state)
        if len(new_state) != STATE_SLOTS:
            raise CandidateError(f"update must return a new state of {STATE_SLOTS} arrays")
        return tuple(jnp.broadcast_to(jnp.asarray(x, jnp.float32), param.shape) for x in (delta, *new_state))

    return jax.vmap(one)


def assemble(calls: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    """The update rule for PPO: the module exported for the parameter's rank."""
    def update(grad: jax.Array, param: jax.Array, state: tuple, iteration: jax.Array, progress: jax.Array,
               lr: jax.Array) -> tuple[jax.Array, tuple]:
        call = calls[f"update_{param.ndim}d"]
        f32 = jnp.float32
        out = call(grad, param, *state, jnp.asarray(iteration, f32), jnp.asarray(progress, f32), jnp.asarray(lr, f32))
        return out[0], tuple(out[1:])

    return update


def _update_module(dims: tuple[str, ...]) -> ModuleSpec:
    tensor, scalar = ArgSpec(dims), ArgSpec(())
    return ModuleSpec(f"update_{len(dims)}d", args=(tensor,) * (2 + STATE_SLOTS) + (scalar,) * 3,
                      results=(tensor,) * (1 + STATE_SLOTS), build=_lanes)


TARGET = Target(
    name="optimizer",
    function_name="update",
    parameters=("grad", "param", "state", "iteration", "progress", "lr"),
    summary=(
        "An optimiser update rule used instead of Adam to train PPO's actor-critic network. It is called "
        "for every parameter tensor at every gradient step and returns the change to add to the parameter."
    ),
    inputs=(
        TargetInput("grad", "the gradient of the PPO loss for this tensor (after global-norm clipping to 0.5)."),
        TargetInput("param", "the current value of the parameter tensor, same shape as grad."),
        TargetInput(
            "state",
            f"a tuple of {STATE_SLOTS} arrays shaped like param, all zeros at the first step; whatever this "
            "function returned as its new state at the previous step (use them for momenta).",
        ),
        TargetInput("iteration", "a float scalar: how many updates were made before this one (0, 1, 2, ...)."),
        TargetInput("progress", "a float scalar in [0, 1]: the fraction of training done."),
        TargetInput("lr", "a float scalar: the learning rate for this environment, annealed linearly to 0."),
    ),
    returns=f"a pair (delta, new_state): the parameter becomes param + delta; new_state is {STATE_SLOTS} arrays",
    rules=(
        "delta must have the shape of param; new_state must be a tuple of 4 arrays shaped like param",
        "the step size should scale with lr, which is tuned per environment",
        "use only jax, jax.numpy, jax.nn, jax.lax, math and functools; the function is traced by JAX",
    ),
    warm_start=WARM_START,
    default_train_envs=("CartPole-v1",),
    default_test_envs=("Acrobot-v1",),
    probe=probe,
    plugin_field="update",
    modules=(_update_module(("n",)), _update_module(("n", "k"))),
    assemble=assemble,
)

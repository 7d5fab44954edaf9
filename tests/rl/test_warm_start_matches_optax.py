"""The hand-made optimiser is the one PPO is tuned with: the warm start's Adam and PPO's gradient clipping give
what optax's `adam` and `clip_by_global_norm` give on random gradients (optax is pinned for this reference)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from workers.rl.ppo import clip_by_global_norm
from workers.targets import get_target, load_function

OPTIMIZER = get_target("optimizer")


def test_the_warm_start_is_adam_step_for_step() -> None:
    update = load_function(OPTIMIZER.warm_start, OPTIMIZER)
    rng = np.random.default_rng(0)
    lr = 3e-4
    param = jnp.asarray(rng.standard_normal((8, 4)), jnp.float32)
    ours, theirs = param, param
    state = tuple(jnp.zeros_like(param) for _ in range(4))
    reference = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-5)
    reference_state = reference.init(theirs)
    zeros = jnp.zeros_like(param)
    for step in range(20):
        grad = jnp.asarray(rng.standard_normal((8, 4)) * 10.0 ** rng.uniform(-3, 1), jnp.float32)
        delta, state = update(grad, ours, state, jnp.stack([zeros] * 6), float(step), 0.0, 0.0, 0.0, zeros, zeros, lr)
        ours = ours + delta
        change, reference_state = reference.update(grad, reference_state, theirs)
        theirs = optax.apply_updates(theirs, change)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-7)


def test_ppo_clips_the_gradient_as_optax_does() -> None:
    rng = np.random.default_rng(1)
    for scale in (1e-3, 0.1, 10.0):
        grads = {"w": jnp.asarray(rng.standard_normal((5, 3)) * scale, jnp.float32),
                 "b": jnp.asarray(rng.standard_normal(3) * scale, jnp.float32)}
        ours = clip_by_global_norm(grads, 0.5)
        theirs, _ = optax.clip_by_global_norm(0.5).update(grads, optax.EmptyState())
        for name in grads:
            np.testing.assert_allclose(np.asarray(ours[name]), np.asarray(theirs[name]), rtol=1e-5, atol=1e-8)

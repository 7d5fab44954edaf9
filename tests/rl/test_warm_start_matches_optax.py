"""The hand-made optimiser is the one PPO is tuned with: the warm start's Adam and PPO's gradient clipping give
what optax's `adam` and `clip_by_global_norm` give on random gradients (optax is pinned for this reference), and
OPEN's clipping is optax's on the actor's and on the critic's gradients apart."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from workers.rl.optimizer_inputs import clip_gradients
from workers.targets import get_target, load_function

OPTIMIZER = get_target("optimizer")
OPEN = get_target("open")


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


def random_grads(rng: np.random.Generator, actor_scale: float, critic_scale: float) -> dict[str, dict[str, Any]]:
    def layer(scale: float) -> dict[str, Any]:
        return {"w": jnp.asarray(rng.standard_normal((5, 3)) * scale, jnp.float32),
                "b": jnp.asarray(rng.standard_normal(3) * scale, jnp.float32)}

    return {"actor_0": layer(actor_scale), "actor_out": layer(actor_scale),
            "log_std": {"v": jnp.full(2, actor_scale, jnp.float32)},
            "critic_0": layer(critic_scale), "critic_out": layer(critic_scale)}


def assert_same(ours: Any, theirs: Any) -> None:
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)


def test_ppo_clips_the_gradient_as_optax_does() -> None:
    rng = np.random.default_rng(1)
    for scale in (1e-3, 0.1, 10.0):
        grads = random_grads(rng, scale, scale)
        theirs, _ = optax.clip_by_global_norm(0.5).update(grads, optax.EmptyState())
        assert_same(clip_gradients(grads, 0.5), theirs)


def test_open_clips_the_actor_and_the_critic_apart() -> None:
    """A huge critic gradient shrinks the actor's under one global norm, and leaves it alone under OPEN's."""
    clip = optax.clip_by_global_norm(0.5)
    grads = random_grads(np.random.default_rng(2), 1e-2, 100.0)
    ours = clip_gradients(grads, 0.5, OPEN.training)
    actor = {name: g for name, g in grads.items() if not name.startswith("critic")}
    critic = {name: g for name, g in grads.items() if name.startswith("critic")}
    assert_same({name: ours[name] for name in actor}, clip.update(actor, optax.EmptyState())[0])
    assert_same({name: ours[name] for name in critic}, clip.update(critic, optax.EmptyState())[0])
    assert_same({name: ours[name] for name in actor}, actor)  # the actor's norm is under 0.5: untouched
    shrunk = clip_gradients(grads, 0.5)
    assert float(jnp.abs(shrunk["actor_0"]["w"]).max()) < 0.01 * float(jnp.abs(grads["actor_0"]["w"]).max())

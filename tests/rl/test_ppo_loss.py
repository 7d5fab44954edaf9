"""PPO's loss alone, on hand-made arrays: with the warm-start drift it is PPO's clipped objective, part by part."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workers.results import DIAGNOSTICS
from workers.rl.envs import get_config
from workers.rl.plugins import SLOTS, Plugins, warm_start_plugins
from workers.rl.ppo import Batch, LossParts, ppo_loss
from workers.targets import TARGETS

CONFIG = get_config("CartPole-v1", "smoke")  # clip_eps 0.2, vf_coef 0.5, ent_coef 0.01
RATIO = np.array([0.5, 0.9, 1.0, 1.1, 1.5, 0.7, 1.3, 1.0], np.float32)
OLD_LOG_PROB = np.array([-0.7, -1.2, -0.3, -2.0, -0.9, -0.4, -1.5, -0.6], np.float32)
ADVANTAGE = np.array([1.0, -2.0, 0.5, 3.0, 2.0, -1.0, -0.5, 0.0], np.float32)
OLD_VALUE = np.array([0.0, 1.0, 2.0, -1.0, 0.5, 0.3, -0.2, 1.5], np.float32)
NEW_VALUE = np.array([0.5, 1.1, 1.0, -1.5, 0.4, 0.9, -0.2, 1.6], np.float32)
TARGET = np.array([1.0, 0.0, 2.5, -1.2, 0.0, 1.0, 0.3, 1.5], np.float32)
ENTROPY = np.array([0.6, 0.5, 0.4, 0.3, 0.6, 0.2, 0.1, 0.5], np.float32)


def batch(advantage: np.ndarray = ADVANTAGE) -> Batch:
    n = len(RATIO)
    return Batch(obs=np.zeros((n, 4), np.float32), action=np.zeros(n, np.int32), log_prob=OLD_LOG_PROB,
                 value=OLD_VALUE, advantage=advantage, target=TARGET)


def loss(ratio: np.ndarray = RATIO, advantage: np.ndarray = ADVANTAGE) -> LossParts:
    log_prob = OLD_LOG_PROB + np.log(ratio)
    return ppo_loss(jnp.asarray(log_prob), jnp.asarray(ENTROPY), jnp.asarray(NEW_VALUE), batch(advantage),
                    warm_start_plugins().drift, CONFIG)


def normalised(advantage: np.ndarray) -> np.ndarray:
    return (advantage - advantage.mean()) / (advantage.std() + 1e-8)


def test_the_warm_start_drift_gives_ppos_clipped_objective() -> None:
    eps, adv = CONFIG.clip_eps, normalised(ADVANTAGE)
    clipped = np.minimum(RATIO * adv, np.clip(RATIO, 1.0 - eps, 1.0 + eps) * adv)
    assert float(loss().actor_loss) == pytest.approx(-clipped.mean(), rel=1e-5, abs=1e-6)


def test_the_value_loss_is_clipped_around_the_collected_values() -> None:
    eps = CONFIG.clip_eps
    clipped = OLD_VALUE + np.clip(NEW_VALUE - OLD_VALUE, -eps, eps)
    expected = 0.5 * np.maximum((NEW_VALUE - TARGET) ** 2, (clipped - TARGET) ** 2).mean()
    assert float(loss().value_loss) == pytest.approx(expected, rel=1e-5)


def test_the_total_weighs_the_parts_and_the_diagnostics_follow_their_names() -> None:
    parts = loss()
    assert float(parts.entropy) == pytest.approx(ENTROPY.mean(), rel=1e-6)
    expected = parts.actor_loss + CONFIG.vf_coef * parts.value_loss - CONFIG.ent_coef * parts.entropy
    assert float(parts.total) == pytest.approx(float(expected), rel=1e-6)
    assert np.array_equal(np.asarray(parts.diagnostics()), np.asarray([getattr(parts, n) for n in DIAGNOSTICS]))


def test_kl_and_clip_fraction_on_hand_made_ratios() -> None:
    parts = loss()
    expected_kl = np.mean((RATIO - 1.0) - np.log(RATIO))
    assert float(parts.approx_kl) == pytest.approx(expected_kl, rel=1e-5)
    assert float(parts.clip_fraction) == pytest.approx(np.mean(np.abs(RATIO - 1.0) > CONFIG.clip_eps))
    unchanged = loss(ratio=np.ones_like(RATIO))
    assert float(unchanged.approx_kl) == pytest.approx(0.0, abs=1e-7) and float(unchanged.clip_fraction) == 0.0


def test_zero_advantages_leave_the_actor_nothing_to_do() -> None:
    parts = loss(advantage=np.zeros_like(ADVANTAGE))
    assert float(parts.actor_loss) == 0.0
    grad = jax.grad(lambda lp: ppo_loss(lp, jnp.asarray(ENTROPY), jnp.asarray(NEW_VALUE),
                                        batch(np.zeros_like(ADVANTAGE)), warm_start_plugins().drift,
                                        CONFIG).actor_loss)(jnp.asarray(OLD_LOG_PROB + np.log(RATIO)))
    assert np.all(np.asarray(grad) == 0.0)


def test_the_clip_stops_the_gradient_where_the_ratio_left_the_trust_region() -> None:
    """A sample with a positive advantage and ratio above 1 + eps (or negative and below 1 - eps) gets no
    gradient; the others get the unclipped one, ratio * A / n."""
    eps, adv = CONFIG.clip_eps, normalised(ADVANTAGE)
    grad = np.asarray(jax.grad(lambda lp: ppo_loss(lp, jnp.asarray(ENTROPY), jnp.asarray(NEW_VALUE), batch(),
                                                   warm_start_plugins().drift, CONFIG).actor_loss)(
        jnp.asarray(OLD_LOG_PROB + np.log(RATIO))))
    outside = ((adv > 0) & (RATIO > 1.0 + eps)) | ((adv < 0) & (RATIO < 1.0 - eps))
    assert outside.any() and (~outside).any()
    assert np.all(grad[outside] == 0.0)
    np.testing.assert_allclose(grad[~outside], -(RATIO * adv)[~outside] / len(RATIO), rtol=1e-5, atol=1e-7)


def test_the_plug_in_slots_are_the_registrys() -> None:
    assert Plugins._fields == SLOTS == tuple(dict.fromkeys(t.plugin_field for t in TARGETS.values()))
    plugins = warm_start_plugins()
    for target in TARGETS.values():
        assert getattr(plugins, target.plugin_field).__name__ == target.function_name

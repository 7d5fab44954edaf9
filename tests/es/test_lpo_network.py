"""The ES-LPO network (workers/targets/kernels/lpo_network.py): its layout, its features, and that a zero network
is the lpo warm start's PPO drift up to the documented 1e-4 offset, in value and in gradient."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workers.targets.kernels import lpo as lpo_kernel
from workers.targets.kernels import lpo_network as net

EPSILON = 0.2


def _grid() -> tuple[jax.Array, jax.Array]:
    ratio, advantage = np.meshgrid(np.exp(np.linspace(-1.0, 1.0, 81)), np.linspace(-4.0, 4.0, 33))
    return jnp.asarray(ratio.ravel(), jnp.float32), jnp.asarray(advantage.ravel(), jnp.float32)


def _grad_ratio(drift: Callable[..., jax.Array], ratio: jax.Array, advantage: jax.Array) -> np.ndarray:
    return np.asarray(jax.grad(lambda r: jnp.sum(drift(r, advantage, EPSILON)))(ratio))


def _random_vector(scale: float, seed: int = 0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(net.PARAMETER_COUNT)).astype(np.float32)


def test_the_network_has_the_papers_1152_parameters_in_its_layout() -> None:
    assert net.PARAMETER_COUNT == 1152
    vector = np.arange(net.PARAMETER_COUNT, dtype=np.float32)
    hidden, output = net.unflatten(vector)
    assert hidden.shape == (8, 128) and output.shape == (128,)
    assert float(hidden[0, 1]) == 1.0 and float(hidden[1, 0]) == 128.0  # W1 row-major
    assert float(output[0]) == 1024.0  # then W2


@pytest.mark.parametrize("shape", [(1151,), (1153,), (1, 1152), (8, 144), ()])
def test_unflatten_refuses_any_other_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="1152"):
        net.unflatten(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="1152"):
        net.make_drift(np.zeros(shape, np.float32))


def test_the_features_are_the_papers_eight() -> None:
    x = np.asarray(net.features(jnp.array([1.5, 1.0]), jnp.array([2.0, -3.0])))
    log = np.log(1.5)
    expected = np.array([0.5, 0.25, log, log**2])
    np.testing.assert_allclose(x[0], np.concatenate([expected, 2.0 * expected]), rtol=1e-6)
    np.testing.assert_array_equal(x[1], np.zeros(8))  # at ratio 1 every feature is 0, whatever the advantage


def test_a_zero_network_is_ppos_drift_up_to_the_offset() -> None:
    ratio, advantage = _grid()
    ppo = np.asarray(net.ppo_clip_drift()(ratio, advantage, EPSILON))
    zero = np.asarray(net.make_drift(np.zeros(net.PARAMETER_COUNT, np.float32))(ratio, advantage, EPSILON))
    np.testing.assert_allclose(zero, np.maximum(ppo - net.OFFSET, 0.0), rtol=0, atol=1e-6)
    assert np.max(np.abs(zero - ppo)) <= net.OFFSET + 1e-6
    assert (ppo > 0.1).sum() > 100  # the grid reaches well into the clipped region


def test_a_zero_networks_gradient_in_the_ratio_is_ppos() -> None:
    """Equal wherever PPO's drift is 0 or clearly above the offset (the band 0 < ppo <= 1e-4 is the dead zone)."""
    ratio, advantage = _grid()
    ppo = np.asarray(net.ppo_clip_drift()(ratio, advantage, EPSILON))
    ppo_grad = _grad_ratio(net.ppo_clip_drift(), ratio, advantage)
    zero_grad = _grad_ratio(net.make_drift(np.zeros(net.PARAMETER_COUNT, np.float32)), ratio, advantage)
    where = (ppo == 0.0) | (ppo > 2 * net.OFFSET)
    assert where.mean() > 0.99
    np.testing.assert_allclose(zero_grad[where], ppo_grad[where], rtol=1e-5, atol=1e-6)
    assert np.abs(ppo_grad[where]).max() > 1.0  # the comparison sees PPO's slope, not only zeros


def test_the_drift_is_the_network_residual_on_ppo() -> None:
    ratio, advantage = _grid()
    vector = _random_vector(0.1)
    out = np.asarray(net.make_drift(vector)(ratio, advantage, EPSILON))
    residual = np.asarray(net.network(vector, ratio, advantage))
    ppo = np.asarray(net.ppo_clip_drift()(ratio, advantage, EPSILON))
    np.testing.assert_allclose(out, np.maximum(residual - net.OFFSET + ppo, 0.0), rtol=1e-5, atol=1e-6)
    assert np.abs(out - np.maximum(ppo - net.OFFSET, 0.0)).max() > 0.01  # the network does change the drift


def test_a_random_network_obeys_the_lpo_targets_rules() -> None:
    """No bias and the offset's dead zone: zero with a zero gradient at ratio 1, non-negative, a true gradient and
    per-sample, as the lpo kernel checks a code candidate."""
    drift = net.make_drift(_random_vector(0.1, seed=1))
    lpo_kernel.check_rules(drift)
    lpo_kernel.check_gradient(drift)
    lpo_kernel.check_invariance(drift, {"m": 512})
    assert all(np.all(np.isfinite(x)) for x in lpo_kernel.probe(drift))


def test_a_population_vmapped_over_its_vectors_is_each_member() -> None:
    ratio, advantage = _grid()
    vectors = jnp.stack([jnp.zeros(net.PARAMETER_COUNT), _random_vector(0.1, 2), _random_vector(0.3, 3)])
    together = jax.jit(jax.vmap(net.network_drift, in_axes=(0, None, None, None)))(vectors, ratio, advantage,
                                                                                    EPSILON)
    for k, vector in enumerate(vectors):
        np.testing.assert_allclose(together[k], net.network_drift(vector, ratio, advantage, EPSILON), rtol=1e-5,
                                   atol=1e-6)

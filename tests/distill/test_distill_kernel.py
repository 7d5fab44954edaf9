"""The distillation kernel (workers/targets/kernels/lpo_distill.py), in-process on project code: the paper's grid,
the gradient map (d/dr relu(drift)), the network at any width, and the fit: distilling the warm start (PPO's clip)
gives a student whose map matches it on the grid, and a fit to another teacher moves the student towards it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workers.targets import load_function, lpo
from workers.targets.kernels import lpo_distill as distill
from workers.targets.kernels import lpo_network as net


def test_the_grid_is_the_papers_at_any_size() -> None:
    ratio, advantage = distill.grid(1024, 1024)
    assert ratio.shape == advantage.shape == (1024 * 1024,) and ratio.dtype == advantage.dtype == np.float32
    assert advantage.min() == -8.0 and advantage.max() == pytest.approx(8.0 - 16 / 1024)
    assert np.log(ratio.min()) == pytest.approx(-2.0) and np.log(ratio.max()) == pytest.approx(2.0 - 4 / 1024)
    # The paper's lpo_distil.py: A = arange(-512, 512) / 64, r = exp(arange(-512, 512) / 256), advantage-major.
    np.testing.assert_allclose(advantage[::1024], np.arange(-512, 512) / 64)
    np.testing.assert_allclose(ratio[:1024], np.exp(np.arange(-512, 512) / 256), rtol=1e-6)
    small_ratio, _ = distill.grid(64, 64)
    assert 1.0 in small_ratio  # r = 1 is on the grid


def test_the_map_is_the_ratio_gradient_of_the_relu_of_the_drift() -> None:
    ratio, advantage = distill.grid(64, 64)
    warm = load_function(lpo.WARM_START, lpo.TARGET)
    g = distill.gradient_map(warm, ratio, advantage)
    # PPO's clip: the gradient is A where the clip is active (r > 1.2 with A > 0, r < 0.8 with A < 0), else 0.
    active = ((ratio > 1.2) & (advantage > 0)) | ((ratio < 0.8) & (advantage < 0))
    np.testing.assert_allclose(g, np.where(active, advantage, 0.0), atol=1e-6)
    # The loss gradient per sample is g - A: the same for every drift up to the map.
    manual = np.asarray(jax.grad(lambda r: jnp.sum(-(r * advantage - jax.nn.relu(warm(r, advantage, 0.2)))))(
        jnp.asarray(ratio)))
    np.testing.assert_allclose(manual, g - advantage, atol=1e-6)


def test_width_128_is_es_network_and_other_widths_have_its_layout() -> None:
    rng = np.random.default_rng(0)
    vector = (0.1 * rng.standard_normal(net.PARAMETER_COUNT)).astype(np.float32)
    ratio, advantage = distill.grid(16, 16)
    np.testing.assert_array_equal(np.asarray(net.network_drift(vector, ratio, advantage, 0.2)),
                                  np.asarray(net.network_drift(vector, ratio, advantage, 0.2, 128)))
    small = (0.1 * rng.standard_normal(net.parameter_count(16))).astype(np.float32)
    hidden, output = net.unflatten(small, 16)
    assert net.parameter_count(16) == 144 and hidden.shape == (8, 16) and output.shape == (16,)
    with pytest.raises(ValueError, match="144"):
        net.unflatten(small[:-1], 16)


def test_distilling_the_warm_start_gives_a_student_that_matches_it_on_the_grid() -> None:
    ratio, advantage = distill.grid(256, 256)
    teacher = distill.gradient_map(load_function(lpo.WARM_START, lpo.TARGET), ratio, advantage)
    for width in (128, 32):
        fitted = distill.fit(teacher, ratio, advantage, width, steps=50, learning_rate=1e-4,
                             final_learning_rate=1e-5, seed=0)
        assert fitted.vector.shape == (net.parameter_count(width),) and fitted.vector.dtype == np.float32
        student = distill.network_map(fitted.vector, width, ratio, advantage)
        assert fitted.final_mse == pytest.approx(float(np.mean((student - teacher) ** 2)), abs=1e-9)
        assert fitted.final_mse <= 1e-4 * fitted.teacher_mean_square
        assert np.mean(np.abs(student - teacher) <= 1e-3) >= 0.999  # on 99.9% of the grid, within 1e-3


def test_a_fit_moves_the_student_towards_another_teacher() -> None:
    ratio, advantage = distill.grid(64, 64)
    rng = np.random.default_rng(1)
    teacher_vector = (0.3 * rng.standard_normal(net.parameter_count(16))).astype(np.float32)
    teacher = distill.network_map(teacher_vector, 16, ratio, advantage)
    fitted = distill.fit(teacher, ratio, advantage, 32, steps=400, learning_rate=1e-2, final_learning_rate=1e-3,
                         seed=0)
    assert fitted.initial_mse > 0.0
    assert fitted.final_mse < 0.3 * fitted.initial_mse, fitted
    assert np.isfinite(fitted.vector).all()

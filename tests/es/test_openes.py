"""OpenES (service/proposers/es.py): it climbs a toy quadratic, its antithetic pairs mirror each other in order,
its ranks are centered, its state survives JSON, and a resumed generation asks the identical population."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
from pydantic import ValidationError

from service.proposers.es import (
    ESSettings,
    ESState,
    ask,
    centered_ranks,
    generation_rng,
    gradient_estimate,
    initial_state,
    tell,
)

SETTINGS = ESSettings(population=32, generations=400)


Fitness = Callable[[np.ndarray], np.ndarray]


def _quadratic(target: np.ndarray) -> Fitness:
    return lambda population: -np.sum((population - target) ** 2, axis=1)


def _run(state: ESState, settings: ESSettings, fitness: Fitness, generations: int) -> ESState:
    for _ in range(generations):
        population = ask(state, settings)
        state = tell(state, settings, population, fitness(population))
    return state


def test_openes_converges_on_a_toy_quadratic() -> None:
    target = np.random.default_rng(0).uniform(-1.0, 1.0, 10)
    state = _run(initial_state(SETTINGS, 10, seed=7), SETTINGS, _quadratic(target), SETTINGS.generations)
    assert np.linalg.norm(np.asarray(state.mean) - target) < 0.01 < 0.5 * np.linalg.norm(target)
    assert state.generation == state.step == SETTINGS.generations


def test_openes_maximises_fitness() -> None:
    """One generation on a linear fitness moves the mean along its gradient (up, not down)."""
    direction = np.ones(5)
    state = initial_state(SETTINGS, 5, seed=1)
    population = ask(state, SETTINGS)
    after = tell(state, SETTINGS, population, population @ direction)
    assert float(np.asarray(after.mean) @ direction) > 0.0


def test_antithetic_pairs_are_ordered_member_2i_plus_and_2i_plus_1_minus() -> None:
    settings = ESSettings(population=8)
    mean = np.linspace(-1.0, 1.0, 6)
    state = initial_state(settings, 6, seed=3, mean=mean).model_copy(update={"sigma": 0.05, "generation": 4})
    population = ask(state, settings)
    eps = generation_rng(3, 4).standard_normal((4, 6))
    assert population.shape == (8, 6)
    np.testing.assert_allclose(population[0::2], mean + 0.05 * eps, rtol=0, atol=1e-12)
    np.testing.assert_allclose(population[1::2], mean - 0.05 * eps, rtol=0, atol=1e-12)
    np.testing.assert_allclose(population[0::2] + population[1::2], np.tile(2 * mean, (4, 1)), rtol=0, atol=1e-12)


def test_the_gradient_estimate_of_a_linear_fitness_is_its_gradient() -> None:
    w, sigma = np.array([1.0, -2.0, 0.5]), 0.03
    eps = np.random.default_rng(0).standard_normal((10_000, 3))
    population = np.empty((20_000, 3))
    population[0::2], population[1::2] = 0.2 + sigma * eps, 0.2 - sigma * eps
    estimate = gradient_estimate(population, population @ w, sigma)
    np.testing.assert_allclose(estimate, w, atol=0.05)


@pytest.mark.parametrize("size", [2, 3, 16, 64, 101])
def test_centered_ranks_lie_in_half_open_range_and_sum_to_zero(size: int) -> None:
    fitness = np.random.default_rng(size).standard_normal(size) * 100.0
    ranks = centered_ranks(fitness)
    assert ranks.min() == -0.5 and ranks.max() == 0.5
    assert abs(ranks.sum()) < 1e-12
    assert np.array_equal(np.argsort(ranks), np.argsort(fitness))


def test_tied_fitnesses_share_their_rank_and_non_finite_ranks_last() -> None:
    ranks = centered_ranks(np.array([500.0, 500.0, 10.0, np.nan, 20.0, -np.inf]))
    assert ranks[0] == ranks[1] == 0.4  # ranks 4 and 5 of 0..5, averaged: 4.5 / 5 - 0.5
    assert ranks[3] == ranks[5] == -0.4  # NaN and -inf tie below every finite fitness
    assert ranks[2] < ranks[4] < ranks[0]
    assert abs(ranks.sum()) < 1e-12 and np.all(np.abs(ranks) <= 0.5)


def test_a_pair_of_equal_fitness_adds_nothing_to_the_gradient() -> None:
    settings = ESSettings(population=4)
    state = initial_state(settings, 3, seed=5)
    population = ask(state, settings)
    estimate = gradient_estimate(population, centered_ranks(np.array([1.0, 1.0, 2.0, 0.0])), state.sigma)
    eps_second_pair = (population[2] - population[3]) / (2 * state.sigma)
    np.testing.assert_allclose(estimate, eps_second_pair * (1.0 / (4 * state.sigma)), rtol=1e-12)


def test_sigma_and_the_learning_rate_decay_to_their_floors() -> None:
    state = initial_state(SETTINGS, 4, seed=0)
    flat = lambda population: np.zeros(len(population))  # noqa: E731
    one = _run(state, SETTINGS, flat, 1)
    assert one.sigma == pytest.approx(0.03 * 0.99) and one.lr == pytest.approx(0.03 * 0.99)
    many = _run(state, SETTINGS, flat, 400)  # 0.03 * 0.99^400 < 0.01 and < 1e-3
    assert many.sigma == SETTINGS.sigma_limit and many.lr == SETTINGS.lr_limit


def test_the_state_round_trips_through_json_and_a_resumed_generation_asks_the_same_population() -> None:
    target = np.full(10, 0.3)
    state = _run(initial_state(SETTINGS, 10, seed=11), SETTINGS, _quadratic(target), 5)
    stored = json.dumps(state.to_dict())
    restored = ESState.from_dict(json.loads(stored))
    assert restored == state
    assert np.array_equal(ask(restored, SETTINGS), ask(state, SETTINGS))
    # A crash after asking: the resumed run continues exactly as the uninterrupted one.
    assert _run(restored, SETTINGS, _quadratic(target), 3) == _run(state, SETTINGS, _quadratic(target), 3)


def test_generations_and_seeds_ask_different_populations() -> None:
    state = initial_state(SETTINGS, 4, seed=1)
    other_seed = initial_state(SETTINGS, 4, seed=2)
    next_generation = state.model_copy(update={"generation": 1})
    first = ask(state, SETTINGS)
    assert not np.array_equal(first, ask(other_seed, SETTINGS))
    assert not np.array_equal(first, ask(next_generation, SETTINGS))


def test_settings_refuse_an_odd_population() -> None:
    with pytest.raises(ValidationError, match="even"):
        ESSettings(population=63)


@pytest.mark.parametrize("change", [
    {"mean": [0.0, float("nan")]},
    {"m": [0.0]},
    {"v": [0.0, -1.0]},
    {"sigma": 0.0},
    {"unknown": 1},
])
def test_a_stored_state_is_validated(change: dict) -> None:
    data = {**initial_state(SETTINGS, 2, seed=0).to_dict(), **change}
    with pytest.raises(ValidationError):
        ESState.from_dict(data)


def test_tell_refuses_a_population_that_is_not_this_states() -> None:
    settings = ESSettings(population=4)
    state = initial_state(settings, 3, seed=0)
    population = ask(state, settings)
    with pytest.raises(ValueError, match="shape"):
        tell(state, settings, population[:2], np.zeros(2))
    with pytest.raises(ValueError, match="fitness"):
        tell(state, settings, population, np.zeros(3))
    with pytest.raises(ValueError, match="mirror"):
        tell(state, settings, population + 1.0, np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        tell(state, settings, np.where(population > 0, np.inf, population), np.zeros(4))


def test_a_population_told_as_float32_gives_almost_the_same_step() -> None:
    """The trainer evaluates float32 members; telling them as such barely moves the result."""
    settings = ESSettings(population=16)
    state = initial_state(settings, 8, seed=4)
    population = ask(state, settings)
    fitness = -np.sum(population**2, axis=1) + population[:, 0]
    exact = tell(state, settings, population, fitness)
    rounded = tell(state, settings, population.astype(np.float32), fitness)
    np.testing.assert_allclose(rounded.mean, exact.mean, atol=1e-5)

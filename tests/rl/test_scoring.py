"""Scores are sound: 1.0 for the warm start, 0.0 for random, and flagged (not huge) when the warm start
is within noise of random; the random baseline counts whole episodes, long ones included."""

from __future__ import annotations

import numpy as np
import pytest

from workers.rl.envs import get_config
from workers.rl.random_policy import random_policy_returns
from workers.rl.scoring import normalised_score
from workers.vocabulary import ScoreBasis


def test_the_warm_start_scores_one_and_a_random_policy_zero() -> None:
    warm, random = [190.0, 210.0], [20.0, 21.0]
    assert normalised_score(200.0, warm, random, 0.0) == (pytest.approx(1.0), ScoreBasis.normalised)
    assert normalised_score(20.5, warm, random, 0.0)[0] == pytest.approx(0.0)
    # Negative returns (Acrobot): the warm start at -100, random at -500.
    assert normalised_score(-100.0, [-90.0, -110.0], [-500.0, -500.0], -500.0)[0] == pytest.approx(1.0)


def test_a_warm_start_within_noise_of_random_gives_a_flagged_return_ratio_not_a_huge_score() -> None:
    # Early in a short profile: the warm start barely beats random and the seeds disagree.
    warm, random = [0.9, 1.5], [1.0, 1.1]
    value, basis = normalised_score(6.0, warm, random, 0.0)
    assert basis is ScoreBasis.return_ratio
    assert value == pytest.approx(6.0 / 1.2)
    # The old formula would have divided by 0.15: a score of 33.
    assert (6.0 - 1.05) / (1.2 - 1.05) > 30
    # A warm start and a random policy that both earn nothing: the scale stays at one unit of return, and the
    # warm start itself still scores 1.0.
    assert normalised_score(3.0, [0.0, 0.0], [0.0, 0.0], 0.0) == (pytest.approx(4.0), ScoreBasis.return_ratio)
    assert normalised_score(-500.0, [-500.0], [-500.0], -500.0) == (pytest.approx(1.0), ScoreBasis.return_ratio)


def test_a_warm_start_clearly_worse_than_random_is_flagged_too() -> None:
    value, basis = normalised_score(50.0, [10.0, 11.0], [40.0, 41.0], 0.0)
    assert basis is ScoreBasis.return_ratio
    assert value > 1.0  # a candidate better than the warm start scores above 1, never negative


def test_the_random_baseline_counts_whole_long_episodes() -> None:
    """Freeway's episodes last 2,500 steps: a fixed-length rollout saw none of them end and reported 0."""
    config = get_config("Freeway-MinAtar", "smoke")
    returns = random_policy_returns("Freeway-MinAtar", config, [0])
    assert len(returns) == 1
    assert all(np.isfinite(returns))
    # A random chicken crosses the road now and then in 2,500 steps; zero would mean no episode was counted.
    assert all(r > 0.0 for r in returns)

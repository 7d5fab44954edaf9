"""Scoring, on the worker: raw training arrays into returns, curves and normalised scores (NumPy only).

The trainer returns, per lane, the sum of returns and the number of episodes that ended in each
update. Here they become the mean final return per learning rate and seed, a learning curve, and
the score (R - R_random) / (R_warm - R_random), with both baselines measured on the same seeds and
profile: 1.0 is as good as the hand-made algorithm, 0.0 no better than acting at random. Values that
no honest training run can produce (a CartPole episode above 500) are refused here.
"""

from __future__ import annotations

import math

import numpy as np


class ImpossibleResult(ValueError):
    """Raw arrays that no honest training run produces."""


def check_returns(return_sum: np.ndarray, episodes: np.ndarray, return_range: tuple[float, float],
                  max_episodes_per_update: int) -> None:
    """Refuse episode counts and mean episode returns outside what the environment allows."""
    if not (np.all(np.isfinite(return_sum)) and np.all(np.isfinite(episodes))):
        raise ImpossibleResult("the returns are not finite")
    if np.any(episodes < 0) or np.any(episodes > max_episodes_per_update) or np.any(episodes != np.round(episodes)):
        raise ImpossibleResult("impossible episode counts")
    low, high = return_range
    ended = episodes > 0
    means = np.where(ended, return_sum / np.where(ended, episodes, 1.0), 0.0)
    slack = 1e-3 * max(1.0, abs(low), abs(high) if math.isfinite(high) else 1.0)
    if np.any(ended & ((means < low - slack) | (means > high + slack))):
        raise ImpossibleResult(f"an episode return outside the environment's range [{low:g}, {high:g}]")


def final_returns(ret_sum: np.ndarray, ret_n: np.ndarray) -> np.ndarray:
    """Mean return of the episodes that finished in the last tenth of training, per leading index.

    The window grows backwards when no episode finished in it (long episodes, short smoke runs).
    """
    num_updates = ret_sum.shape[-1]
    window = max(1, math.ceil(num_updates / 10))
    out = np.zeros(ret_sum.shape[:-1], np.float64)
    for idx in np.ndindex(*ret_sum.shape[:-1]):
        w = window
        while ret_n[idx][-w:].sum() == 0 and w < num_updates:
            w = min(num_updates, w * 2)
        n = ret_n[idx][-w:].sum()
        out[idx] = ret_sum[idx][-w:].sum() / n if n > 0 else 0.0
    return out


def learning_curve(ret_sum: np.ndarray, ret_n: np.ndarray, points: int) -> list[float]:
    """Mean episode return over `points` equal slices of training (ret_* are [seed, update])."""
    num_updates = ret_sum.shape[-1]
    edges = np.linspace(0, num_updates, min(points, num_updates) + 1).astype(int)
    curve, last = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        n = ret_n[:, lo:hi].sum()
        if n > 0:
            last = float(ret_sum[:, lo:hi].sum() / n)
        curve.append(last)
    return curve


def diagnostic_curves(diagnostics: np.ndarray, names: tuple[str, ...], points: int) -> dict[str, list[float]]:
    """PPO's loss parts ([seed, update, part]) as one curve per part: the mean over seeds and over `points`
    equal slices of training."""
    num_updates = diagnostics.shape[1]
    edges = np.linspace(0, num_updates, min(points, num_updates) + 1).astype(int)
    per_update = diagnostics.mean(axis=0)
    return {name: [float(per_update[lo:hi, k].mean()) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
            for k, name in enumerate(names)}


def normalised_score(candidate_return: float, random_return: float, warm_return: float) -> float:
    """(R - R_random) / (R_warm - R_random); the warm start scores 1.0, a random policy 0.0."""
    spread = warm_return - random_return
    if abs(spread) < 1e-6:
        spread = 1e-6 if spread >= 0 else -1e-6
    return float((candidate_return - random_return) / spread)

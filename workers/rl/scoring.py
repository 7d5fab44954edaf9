"""Scoring, on the worker: raw training arrays into returns, curves and normalised scores (NumPy only).

The trainer returns, per lane, the sum of returns and the number of episodes that ended in each
update. Here they become the final and the whole-training mean return per learning rate and seed, a
learning curve, and a seed's score (R - R_random) / (R_warm - R_random) against the anchor's means
(`workers/anchor.py`): 1.0 is as good as the hand-made algorithm, 0.0 no better than acting at random
(a return ratio, flagged, when the warm start is within noise of random). Values that no honest
training run can produce (a CartPole episode above 500) are refused here.
"""

from __future__ import annotations

import math

import numpy as np

from workers.vocabulary import ScoreBasis


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


def mean_returns(ret_sum: np.ndarray, ret_n: np.ndarray) -> np.ndarray:
    """Mean return of every episode that finished during training, per leading index: the area under the
    learning curve (episode-weighted), a metric that rewards learning fast as well as ending well."""
    total_n = ret_n.sum(axis=-1)
    return np.where(total_n > 0, ret_sum.sum(axis=-1) / np.where(total_n > 0, total_n, 1.0), 0.0)


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


def seed_noise(warm_returns: list[float], random_returns: list[float]) -> float:
    """The standard error of (warm mean - random mean) across seeds (0 with a single seed)."""
    def variance_of_mean(values: list[float]) -> float:
        return float(np.var(values, ddof=1)) / len(values) if len(values) > 1 else 0.0

    return math.sqrt(variance_of_mean(warm_returns) + variance_of_mean(random_returns))


def normalised_score(candidate_return: float, warm_returns: list[float], random_returns: list[float],
                     return_floor: float) -> tuple[float, ScoreBasis]:
    """The candidate's score against the warm start and a random policy on the same seeds, and its basis.

    Normally (R - R_random) / (R_warm - R_random): the warm start scores 1.0, a random policy 0.0. When
    the warm start is not clearly better than random (R_warm - R_random within two standard errors of
    seed noise, as early in a short profile or on a hard environment), dividing by that difference would
    blow any score up; the score is then the return ratio (R - floor) / (R_warm - floor) from the
    environment's lowest possible return (the paper's return / R_warm on MinAtar and CartPole), flagged
    `return_ratio`. Written as 1 + (R - R_warm) / scale with the scale kept above the noise and one unit
    of return, so the warm start still scores exactly 1.0 when it sits at the floor itself.
    """
    warm, random = float(np.mean(warm_returns)), float(np.mean(random_returns))
    noise = seed_noise(warm_returns, random_returns)
    spread = warm - random
    if spread > 2.0 * noise and spread > 1e-6 * max(1.0, abs(warm)):
        return float((candidate_return - random) / spread), ScoreBasis.normalised
    scale = max(warm - return_floor, 2.0 * noise, 1.0)
    return float(1.0 + (candidate_return - warm) / scale), ScoreBasis.return_ratio

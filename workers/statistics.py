"""The uncertainty of a score, on the worker (NumPy and the standard library only): intervals, improvement, verdicts.

A candidate's per-seed normalised scores are compared with the anchor's (the warm start's own artifact
trained on many seeds, whose mean scores 1.0 by construction) on each environment:

- `score`: the mean over environments of the mean over seeds (1.0 is the warm start);
- `ci`: a two-sided interval for that score that also carries the anchor's own uncertainty, from a
  stratified bootstrap (seeds resampled within each environment, candidate and anchor apart, as rliable
  does) when every environment has at least `MIN_BOOTSTRAP_SEEDS` seeds, and otherwise a normal interval
  that borrows the anchor's per-seed spread as the noise model (a bootstrap of two seeds is degenerate);
- `p_improvement`: P(a candidate seed beats an anchor seed), the Mann-Whitney form, averaged over
  environments (rliable's probability of improvement);
- `iqm`: the interquartile mean of all per-seed scores across environments (rliable's aggregate);
- `verdict`: `better` when the interval lies above 1, `worse` when below, else `inconclusive`.

A race looks at the same candidate several times; `looks` splits the error rate across them
(Bonferroni), so the chance of a wrong `better` stays within 1 − confidence over the whole race.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from workers.results import Comparison
from workers.vocabulary import Verdict

MIN_BOOTSTRAP_SEEDS = 8  # below this many seeds an environment's bootstrap is degenerate: borrow the anchor's noise
BOOTSTRAP_REPS = 2000


def iqm(values: np.ndarray) -> float:
    """The interquartile mean (rliable's IQM, SciPy's `trim_mean(x, 0.25)`: a quarter cut from each end)."""
    ordered = np.sort(np.asarray(values, np.float64).ravel())
    cut = int(0.25 * ordered.size)
    return float(np.mean(ordered[cut:ordered.size - cut]))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 over all pairs of one environment's seeds (the Mann-Whitney U statistic / n·m)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    greater = (x[:, None] > y[None, :]).sum() + 0.5 * (x[:, None] == y[None, :]).sum()
    return float(greater / (len(x) * len(y)))


def stratified_bootstrap_means(per_env: Sequence[np.ndarray], reps: int, rng: np.random.Generator) -> np.ndarray:
    """`reps` bootstrap replicates of the mean over environments of the mean over seeds, with seeds resampled
    within each environment."""
    total = np.zeros(reps)
    for values in per_env:
        values = np.asarray(values, np.float64)
        idx = rng.integers(0, len(values), size=(reps, len(values)))
        total += values[idx].mean(axis=1)
    return total / len(per_env)


def _variance(values: np.ndarray) -> float:
    return float(np.var(values, ddof=1)) if len(values) > 1 else 0.0


def compare(candidate: Sequence[Sequence[float]], anchor: Sequence[Sequence[float]], confidence: float = 0.95,
            looks: int = 1, seed: int = 0) -> Comparison:
    """A candidate's per-seed normalised scores against the anchor's, environment by environment (same order)."""
    if len(candidate) != len(anchor) or not candidate:
        raise ValueError("one list of per-seed scores per environment, for the candidate and the anchor alike")
    cand = [np.asarray(c, np.float64) for c in candidate]
    anch = [np.asarray(a, np.float64) for a in anchor]
    if any(len(c) == 0 for c in cand) or any(len(a) < 2 for a in anch):
        raise ValueError("every environment needs candidate seeds and at least two anchor seeds")
    alpha = (1.0 - confidence) / max(1, looks)
    score = float(np.mean([c.mean() for c in cand]))
    anchor_mean = float(np.mean([a.mean() for a in anch]))
    if min(len(c) for c in cand) >= MIN_BOOTSTRAP_SEEDS:
        rng = np.random.default_rng(seed)
        diff = (stratified_bootstrap_means(cand, BOOTSTRAP_REPS, rng)
                - stratified_bootstrap_means(anch, BOOTSTRAP_REPS, rng))
        low, high = np.quantile(diff, [alpha / 2, 1 - alpha / 2])
        method = "bootstrap"
    else:
        # The candidate's own spread from a few seeds is no estimate; the anchor's is (and a candidate whose seeds
        # disagree more than the anchor's keeps its larger spread).
        var = sum(max(_variance(c), _variance(a)) / len(c) + _variance(a) / len(a)
                  for c, a in zip(cand, anch, strict=True)) / len(cand) ** 2
        half = NormalDist().inv_cdf(1 - alpha / 2) * math.sqrt(var)
        low, high = score - anchor_mean - half, score - anchor_mean + half
        method = "normal, anchor noise"
    ci = (1.0 + float(low), 1.0 + float(high))
    verdict = Verdict.better if ci[0] > 1.0 else Verdict.worse if ci[1] < 1.0 else Verdict.inconclusive
    return Comparison(
        score=score, ci=ci, confidence=confidence, looks=looks, method=method, verdict=verdict,
        p_improvement=float(np.mean([probability_of_improvement(c, a) for c, a in zip(cand, anch, strict=True)])),
        iqm=iqm(np.concatenate(cand)), seeds=min(len(c) for c in cand),
    )

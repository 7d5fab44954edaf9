"""The uncertainty of a score: checked against SciPy's references on fixed arrays, and on known effects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from workers.statistics import compare, iqm, probability_of_improvement, stratified_bootstrap_means
from workers.vocabulary import Verdict

RNG = np.random.default_rng(20261203)
CANDIDATE = RNG.normal(1.1, 0.3, 24)
ANCHOR = RNG.normal(1.0, 0.3, 32)


def test_probability_of_improvement_is_the_mann_whitney_statistic() -> None:
    u = stats.mannwhitneyu(CANDIDATE, ANCHOR).statistic
    assert probability_of_improvement(CANDIDATE, ANCHOR) == pytest.approx(u / (len(CANDIDATE) * len(ANCHOR)))
    assert probability_of_improvement(np.ones(3), np.ones(4)) == 0.5


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    values = np.array([-100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])
    assert iqm(values) == pytest.approx(3.5)


def test_bootstrap_matches_scipy_percentile_interval_on_one_environment() -> None:
    ours = stratified_bootstrap_means([CANDIDATE], 40_000, np.random.default_rng(1))
    theirs = stats.bootstrap((CANDIDATE,), np.mean, n_resamples=40_000, method="percentile",
                             random_state=np.random.default_rng(2)).confidence_interval
    assert np.quantile(ours, 0.025) == pytest.approx(theirs.low, abs=0.01)
    assert np.quantile(ours, 0.975) == pytest.approx(theirs.high, abs=0.01)


def test_stratified_bootstrap_resamples_within_each_environment() -> None:
    """Two environments: the replicates' spread is that of the average of two independent means."""
    a, b = RNG.normal(0, 1, 16), RNG.normal(10, 3, 16)
    replicates = stratified_bootstrap_means([a, b], 40_000, np.random.default_rng(3))
    expected_sd = 0.5 * np.sqrt(np.var(a) / 16 + np.var(b) / 16)
    assert replicates.mean() == pytest.approx((a.mean() + b.mean()) / 2, abs=0.02)
    assert replicates.std() == pytest.approx(expected_sd, rel=0.05)


def test_a_copy_of_the_anchor_is_inconclusive_and_a_clear_effect_is_decided() -> None:
    same = compare([ANCHOR[:16] / ANCHOR.mean()], [ANCHOR / ANCHOR.mean()])
    assert same.verdict is Verdict.inconclusive and same.ci[0] < 1.0 < same.ci[1]
    worse = compare([np.full(8, 0.3) + RNG.normal(0, 0.05, 8)], [ANCHOR / ANCHOR.mean()])
    assert worse.verdict is Verdict.worse and worse.p_improvement < 0.1
    better = compare([RNG.normal(1.8, 0.3, 16)], [ANCHOR / ANCHOR.mean()])
    assert better.verdict is Verdict.better and better.method == "bootstrap" and better.p_improvement > 0.9


def test_few_seeds_borrow_the_anchor_noise_instead_of_a_degenerate_interval() -> None:
    """Two identical seeds have no spread of their own: the interval is the anchor's noise, not a point."""
    anchor = ANCHOR / ANCHOR.mean()
    result = compare([[1.2, 1.2]], [anchor])
    assert result.method == "normal, anchor noise" and result.seeds == 2
    half = 1.96 * np.sqrt(np.var(anchor, ddof=1) / 2 + np.var(anchor, ddof=1) / len(anchor))
    assert result.ci == pytest.approx((1.2 - half, 1.2 + half), abs=1e-3)
    assert result.verdict is Verdict.inconclusive


def test_more_looks_widen_the_interval() -> None:
    anchor = [ANCHOR / ANCHOR.mean()]
    one, three = compare([CANDIDATE[:4]], anchor), compare([CANDIDATE[:4]], anchor, looks=3)
    assert three.ci[0] < one.ci[0] and three.ci[1] > one.ci[1]

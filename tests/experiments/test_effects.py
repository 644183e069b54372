"""Paired effects at a handful of seeds: the Student-t interval, and when an effect is established."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pytest
from scipy import stats

from sista_monai.experiments import effects
from sista_monai.experiments.effects import effect_cell, established, paired_effect


def test_t_interval_of_one_to_five_by_hand() -> None:
    effect = paired_effect([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5)
    # mean 3, sd = sqrt(10 / 4) = 1.5811, t(0.975, 4) = 2.7764: 3 ± 2.7764 · 1.5811 / sqrt(5) = 3 ± 1.9632
    assert effect["mean"] == 3.0
    assert (effect["t_low"], effect["t_high"]) == pytest.approx((1.0368, 4.9632), abs=1e-4)
    low, high = stats.t.interval(0.95, 4, loc=3.0, scale=stats.sem([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert (effect["t_low"], effect["t_high"]) == pytest.approx((low, high), rel=1e-12)
    assert effect["p"] == pytest.approx(stats.ttest_1samp([1, 2, 3, 4, 5], 0.0).pvalue)  # 0.0132
    assert {"low", "high"} <= set(effect)  # the bootstrap interval stays
    assert established(effect)
    assert effect_cell(effect) == "**+3.000 [+1.037, +4.963], p 0.013 (better in 5 of 5)** ✓"


def test_bootstrap_excludes_zero_where_the_t_interval_does_not() -> None:
    differences = [0.02, 0.05, -0.01, 0.04, 0.03]
    effect = paired_effect(differences, [0.0] * 5)
    # mean 0.026, sd = sqrt(0.00212 / 4) = 0.023022, half-width 2.7764 · 0.023022 / sqrt(5) = 0.028585
    assert effect["mean"] == pytest.approx(0.026)
    assert (effect["t_low"], effect["t_high"]) == pytest.approx((-0.002585, 0.054585), abs=1e-6)
    assert effect["low"] > 0  # the percentile bootstrap interval (≈ [0.006, 0.042]) excludes 0 ...
    assert effect["t_low"] < 0 < effect["t_high"]  # ... the t-interval does not
    assert effect["p"] == pytest.approx(0.065, abs=1e-3)
    assert not established(effect)
    assert effect_cell(effect) == "+0.026 [-0.003, +0.055], p 0.065 (better in 4 of 5)"


@pytest.mark.parametrize(
    ("t_low", "t_high", "p", "expected"),
    [
        (0.01, 0.05, 0.04, True),  # interval above 0 and p < 0.05
        (-0.05, -0.01, 0.01, True),  # below 0
        (-0.01, 0.05, 0.04, False),  # interval reaches 0
        (0.01, 0.05, 0.05, False),  # p not below 0.05
        (0.01, 0.05, float("nan"), False),  # no spread: p undefined
        (float("nan"), float("nan"), float("nan"), False),  # one seed
    ],
)
def test_established_needs_both_conditions(t_low: float, t_high: float, p: float, expected: bool) -> None:
    assert established({"mean": 0.0, "t_low": t_low, "t_high": t_high, "p": p}) is expected


def test_established_agrees_with_the_t_test_on_data() -> None:
    # a one-sample t-test: the t 95 % interval excludes 0 exactly when p < 0.05
    for differences in ([0.1, 0.2, 0.15, 0.12, 0.18], [0.1, -0.2, 0.15, 0.0, 0.05], [-0.3, -0.1, -0.2, -0.25, -0.2]):
        effect = paired_effect(differences, [0.0] * 5)
        assert (effect["t_low"] > 0 or effect["t_high"] < 0) == (effect["p"] < 0.05) == established(effect)


def test_one_seed_and_no_spread() -> None:
    one = paired_effect([0.7], [0.5])
    assert math.isnan(one["t_low"]) and math.isnan(one["p"]) and not established(one)
    assert effect_cell(one) == "+0.200 [n/a], p n/a (better in 1 of 1)"
    flat = paired_effect([2.0, 3.0], [1.0, 2.0])
    assert (flat["t_low"], flat["t_high"]) == (1.0, 1.0) and math.isnan(flat["p"]) and not established(flat)
    assert effect_cell(None) == "n/a" and not established(None)


def _exact_bootstrap_means(differences: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Every one of the n ** n equally likely resamples: its sorted means and their cumulative probabilities."""
    values = np.array(differences)
    n = values.size
    means = np.sort([values[list(draw)].mean() for draw in itertools.product(range(n), repeat=n)])
    return means, np.arange(1, means.size + 1) / means.size


def _exact_quantile(means: np.ndarray, cdf: np.ndarray, level: float) -> float:
    return float(means[np.searchsorted(cdf, level)])


@pytest.mark.parametrize("seed", range(5))
def test_bootstrap_interval_is_the_exact_percentile_interval_of_four_differences(seed: int) -> None:
    differences = [1.0, 2.0, 4.0, 8.0]
    means, cdf = _exact_bootstrap_means(differences)  # 4 ** 4 = 256 resamples
    # by hand: P(mean <= 1.25) = (1 + 4) / 256 = 0.0195 and P(mean <= 1.5) = 11 / 256 = 0.043 (1,1,2,2 in 6 orders),
    # so the 2.5 % point is 1.5; P(mean >= 7) = 5 / 256 and P(mean >= 6.5) = 9 / 256 (8,8,8,2), so the 97.5 % is 6.5
    assert (_exact_quantile(means, cdf, 0.025), _exact_quantile(means, cdf, 0.975)) == (1.5, 6.5)
    assert cdf[means < 1.5].max() < 0.02 and cdf[means <= 1.5].max() > 0.04  # both points lie on wide plateaus,
    assert cdf[means < 6.5].max() < 0.97 and cdf[means <= 6.5].max() > 0.98  # so no quantile rule moves them
    effect = paired_effect(differences, [0.0] * 4, seed=seed)
    # a normal interval (1.12, 6.38), the 90 % one (1.75, 6.06), resampling without replacement (3.75, 3.75) or the
    # t-interval would all fail this
    assert (effect["low"], effect["high"]) == pytest.approx((1.5, 6.5), abs=1e-12)


def test_bootstrap_interval_of_five_differences_meets_exact_enumeration(monkeypatch: pytest.MonkeyPatch) -> None:
    differences = [0.3, -0.1, 0.8, 0.05, 0.4]  # resampled means on a grid of 0.01
    means, cdf = _exact_bootstrap_means(differences)  # 5 ** 5 = 3125 resamples
    low, high = _exact_quantile(means, cdf, 0.025), _exact_quantile(means, cdf, 0.975)
    assert (low, high) == pytest.approx((0.03, 0.57))
    monkeypatch.setattr(effects, "BOOTSTRAP_RESAMPLES", 200_000)
    effect = paired_effect(differences, [0.0] * 5)
    # within half a grid step: the 90 % interval (0.07, 0.54) or a normal one (0.018, 0.562) is a step or more off
    assert (effect["low"], effect["high"]) == pytest.approx((low, high), abs=0.005)


def test_paired_effect_hand_computed() -> None:
    effect = paired_effect([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    # t = 2 / (1 / sqrt(3)) = sqrt(12) with 2 degrees of freedom, whose CDF is 1/2 + t / (2 sqrt(2 + t^2))
    t = math.sqrt(12.0)
    assert effect["p"] == pytest.approx(2 * (0.5 - t / (2 * math.sqrt(2 + t * t))), rel=1e-9)
    # resampled means of three seeds fall on multiples of 1/3 in [1, 3]; P(mean = 1) = P(mean = 3) = 1/27 > 2.5 %
    assert (effect["mean"], effect["low"], effect["high"], effect["better"], effect["n"]) == (2.0, 1.0, 3.0, 3, 3)
    # t 95 % interval: 2 ± t(0.975, 2) · 1 / sqrt(3), t(0.975, 2) = 4.302653
    assert (effect["t_low"], effect["t_high"]) == pytest.approx(
        (2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3))
    )
    assert math.isnan(paired_effect([1.0, 2.0], [1.0, 2.0])["p"])  # no spread
    assert paired_effect([float("nan")], [0.0]) is None
    with pytest.raises(ValueError):
        paired_effect([1.0, 2.0], [1.0])

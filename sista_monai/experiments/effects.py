"""Paired effects between two variants over seeds, with intervals that hold at a handful of seeds.

With ``n`` = 5 seeds the percentile bootstrap 95 % interval of a mean is too narrow: it resamples five numbers,
whose spread understates the population's (the plug-in variance has ``n`` in its denominator, and the
resampled means take few distinct values), and covers the true mean only about 83 % of the time. The Student-t
interval (``n - 1`` degrees of freedom) is exact for normal differences and is what an effect is judged on here;
the bootstrap interval is kept beside it in ``summary.json``.

An effect is **established** when its t 95 % interval excludes 0 *and* the two-sided paired t-test gives
``p < 0.05`` (:func:`established`). For a one-sample t-test on the paired differences the two conditions agree
by construction (the interval excludes 0 exactly when ``|t| > t(0.975, n - 1)``); both are checked so that the
rule reads as it is stated, and a difference without spread (``p`` undefined) is never established.

The one-variant statistic beside them: :func:`_mean_std`, the mean ± sample std over seeds of the finite values
(the cells of the ablation's tables and plots).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

__all__ = ["ALPHA", "BOOTSTRAP_RESAMPLES", "ESTABLISHED_LEGEND", "effect_cell", "established", "paired_effect"]

BOOTSTRAP_RESAMPLES = 10000
ALPHA = 0.05
"""Two-sided level: 95 % intervals, and ``p < ALPHA`` for an established effect."""

ESTABLISHED_LEGEND = (
    "**bold ✓**: established, i.e. the t 95 % interval of the mean difference excludes 0 and the paired t-test "
    "gives p < 0.05; a cell without the mark is not established at this number of seeds (its interval reaches 0, "
    "or its differences have no spread)."
)
"""The legend line of the effects table."""


def paired_effect(values: Sequence[float], baseline: Sequence[float], seed: int = 0) -> dict[str, float] | None:
    """Mean per-seed difference with a Student-t and a bootstrap 95 % interval and a paired t-test.

    Args:
        values: the variant's values, one per seed.
        baseline: the baseline's values for the same seeds (same order).
        seed: seed of the bootstrap resampling (the interval is reproducible).

    Returns:
        ``{"mean", "t_low", "t_high", "low", "high", "p", "better", "n"}``: the mean difference; the Student-t
        95 % interval of the mean, ``mean ± t(0.975, n - 1) · sd / √n`` with the sample standard deviation ``sd``
        (NaN with one seed; ``[mean, mean]`` when the differences have no spread); the percentile bootstrap 95 %
        interval of the mean (10,000 resamples of the seeds); the two-sided p-value of the paired t-test (NaN
        with fewer than two seeds or no spread); the number of seeds where the variant scored higher; and the
        number of seed pairs with both values finite. ``None`` without any.

    Raises:
        ValueError: ``values`` and ``baseline`` differ in length.
    """
    import numpy as np
    from scipy import stats

    differences = np.array(
        [v - b for v, b in zip(values, baseline, strict=True) if math.isfinite(v) and math.isfinite(b)]
    )
    if differences.size == 0:
        return None
    mean = float(differences.mean())
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, differences.size, size=(BOOTSTRAP_RESAMPLES, differences.size))].mean(axis=1)
    low, high = np.percentile(means, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    p = t_low = t_high = float("nan")
    if differences.size > 1:
        half_width = float(stats.t.ppf(1 - ALPHA / 2, differences.size - 1)) * float(
            differences.std(ddof=1) / math.sqrt(differences.size)
        )
        t_low, t_high = mean - half_width, mean + half_width
        if float(differences.std()) > 0:
            p = float(stats.ttest_1samp(differences, 0.0).pvalue)
    return {
        "mean": mean,
        "t_low": t_low,
        "t_high": t_high,
        "low": float(low),
        "high": float(high),
        "p": p,
        "better": int((differences > 0).sum()),
        "n": int(differences.size),
    }


def established(effect: Mapping[str, float] | None) -> bool:
    """Whether an effect (:func:`paired_effect`) is established: its t 95 % interval excludes 0 and ``p < 0.05``.

    NaN bounds or p-value (one seed, no spread) never establish an effect.
    """
    if effect is None:
        return False
    excludes_zero = effect["t_low"] > 0 or effect["t_high"] < 0
    return bool(excludes_zero and effect["p"] < ALPHA)


def _signed(value: float) -> str:
    return f"{round(value, 3) + 0.0:+.3f}"  # + 0.0: no "-0.000" for a value that rounds to zero


def effect_cell(effect: Mapping[str, float] | None) -> str:
    """``mean [t 95 % interval], p (better in k of n)``, bold with a ✓ when :func:`established`; ``n/a`` for None."""
    if effect is None:
        return "n/a"
    interval = "[n/a]" if math.isnan(effect["t_low"]) else f"[{_signed(effect['t_low'])}, {_signed(effect['t_high'])}]"
    p = "n/a" if math.isnan(effect["p"]) else f"{effect['p']:.3f}"
    text = f"{_signed(effect['mean'])} {interval}, p {p} (better in {effect['better']} of {effect['n']})"
    return f"**{text}** ✓" if established(effect) else text


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan"), 0
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0, len(finite)

"""Statistics over seeds: t-intervals, paired bootstrap ratios with censoring, log-log slopes.

Conventions: 95% two-sided intervals; `n` counts finite values only; an interval needs n >= 2
(with n = 1 the bounds are NaN, never a zero-width interval that looks certain).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and Student-t interval: mean ± t_{(1+level)/2, n-1} · s / sqrt(n), s with ddof 1."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(sps.t.ppf((1 + level) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class Ratio:
    """A ratio of means over paired seeds, with a bootstrap interval and the censoring's direction.

    bound: "exact" (no censored run), "lower" (only numerators censored: the true ratio is at
    least this), "upper" (only denominators censored: at most this), "unknown" (both).
    """

    ratio: float
    low: float
    high: float
    n: int
    bound: str


def paired_bootstrap_ratio(
    num: Sequence[float],
    den: Sequence[float],
    num_censored: Sequence[bool] | None = None,
    den_censored: Sequence[bool] | None = None,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> Ratio:
    """mean(num) / mean(den) over pairs (one pair per seed), with a percentile bootstrap CI.

    Pairs are resampled together (seed indices with replacement). A censored value is the run's
    length (the target was not reached by then, so the true value is larger): it enters as that
    lower bound, and `bound` says which way the ratio is then biased. Speed-up = steps(none) /
    steps(BN): a censored `none` run can only make BN look slower than it is.
    """
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.shape} and {b.shape}")
    ca = np.zeros(a.shape, bool) if num_censored is None else np.asarray(num_censored, bool)
    cb = np.zeros(b.shape, bool) if den_censored is None else np.asarray(den_censored, bool)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b, ca, cb = a[ok], b[ok], ca[ok], cb[ok]
    n = len(a)
    bound = {(False, False): "exact", (True, False): "lower", (False, True): "upper"}.get(
        (bool(ca.any()), bool(cb.any())), "unknown"
    )
    if n == 0 or b.mean() <= 0:
        return Ratio(math.nan, math.nan, math.nan, n, bound)
    ratio = float(a.mean() / b.mean())
    if n == 1:
        return Ratio(ratio, math.nan, math.nan, 1, bound)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = a[idx].mean(1) / b[idx].mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Ratio(ratio, float(lo), float(hi), n, bound)


def paired_difference_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """mean(a - b) over pairs, with a t-interval on the differences; pairs with a NaN dropped."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return mean_ci(x - y, level)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log(y) on log(x), over the points where both are positive, finite."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2 or len(np.unique(x[ok])) < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def fmt_interval(iv: Interval, fmt: str = ".3f") -> str:
    """'0.123 [0.100, 0.146]', or just the mean when there is no interval, or '—'."""
    if iv.n == 0 or not math.isfinite(iv.mean):
        return "—"
    if not math.isfinite(iv.low):
        return f"{iv.mean:{fmt}}"
    return f"{iv.mean:{fmt}} [{iv.low:{fmt}}, {iv.high:{fmt}}]"

"""Statistics over seeds: t-intervals on means, on per-seed log ratios and on per-seed slopes;
their p-values, Holm's correction over cells, and power.

Conventions: 95% two-sided intervals; `n` counts finite values only; an interval needs n >= 2
(with n = 1 the bounds are NaN, never a zero-width interval that looks certain). Every interval
is a Student t interval on one number per seed (a paired difference, a log ratio, a slope), so it
holds its level at 3-10 seeds when those numbers are roughly normal; the percentile bootstraps
this module once had over seeds did not (25% false positives at 3 seeds). Measured coverage and
false-positive rates: tests/base/test_coverage.py and docs/statistics.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special


@dataclass(frozen=True)
class Interval:
    """mean and its t-interval over n values; se = sd / sqrt(n) (NaN below n = 2)."""

    mean: float
    low: float
    high: float
    n: int
    se: float = math.nan


def t_quantile(n: int, level: float = 0.95) -> float:
    """t_{(1+level)/2, n-1}: the half-width of a level interval in standard errors (scipy's
    Student-t inverse CDF, the ufunc behind scipy.stats.t.ppf, a hundred times faster)."""
    return float(special.stdtrit(n - 1, (1 + level) / 2))


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
    se = float(x.std(ddof=1) / math.sqrt(n))
    half = t_quantile(n, level) * se
    return Interval(mean, mean - half, mean + half, n, se)


def p_value(iv: Interval, null: float = 0.0) -> float:
    """Two-sided p of the one-sample t-test of iv.mean against `null` (NaN below 2 values).

    Consistent with the interval: p < 1 - level exactly when the level interval excludes null.
    """
    if iv.n < 2 or not math.isfinite(iv.se):
        return math.nan
    d = iv.mean - null
    if iv.se == 0:
        return 1.0 if d == 0 else 0.0
    return float(2 * special.stdtr(iv.n - 1, -abs(d) / iv.se))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family).

    Rejecting where the adjusted p < alpha keeps the family-wise error rate <= alpha over the
    finite p's, whatever their dependence: p_(i) (ascending, i from 0) is scaled by (m - i),
    and the adjusted values are made non-decreasing.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled) if m else scaled
    return out


def paired_difference_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """mean(a - b) over pairs, with a t-interval on the differences; pairs with a NaN dropped."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return mean_ci(x - y, level)


# --------------------------------------------------------------------------- ratios


@dataclass(frozen=True)
class Ratio:
    """A ratio over paired seeds: exp of the mean per-seed log ratio (a geometric mean), with
    exp of the t-interval's bounds, and the censoring's direction.

    bound: "exact" (no censored run), "lower" (only numerators censored: the true ratio is at
    least this; `high` is inf, a one-sided bound), "upper" (only denominators censored: at most
    this; `low` is 0), "unknown" (both, in some seeds), "none reached" (every run of both sides
    censored: nothing measured). log_sd: sd of the per-seed log ratios; p: two-sided p of
    "ratio = 1" (the t-test on the log ratios).
    """

    ratio: float
    low: float
    high: float
    n: int
    bound: str
    log_sd: float = math.nan
    p: float = math.nan


def _bound(num_censored: np.ndarray, den_censored: np.ndarray) -> str:
    if len(num_censored) and num_censored.all() and den_censored.all():
        return "none reached"
    key = (bool(num_censored.any()), bool(den_censored.any()))
    return {(False, False): "exact", (True, False): "lower", (False, True): "upper"}.get(
        key, "unknown"
    )


def paired_log_ratio(
    num: Sequence[float],
    den: Sequence[float],
    num_censored: Sequence[bool] | None = None,
    den_censored: Sequence[bool] | None = None,
    level: float = 0.95,
) -> Ratio:
    """exp(mean log(num / den)) over pairs (one pair per seed), with exp of its t-interval.

    Pairs with a non-positive or non-finite value are dropped. A censored value is the run's
    length (the target was not reached by then, so the true value is larger): it enters as that
    lower bound, and `bound` says which way the ratio is then biased. Speed-up = steps(none) /
    steps(BN): a censored `none` run can only make BN look slower than it is, so the ratio and
    its low end stay valid lower bounds and the high end is dropped (inf).
    """
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.shape} and {b.shape}")
    ca = np.zeros(a.shape, bool) if num_censored is None else np.asarray(num_censored, bool)
    cb = np.zeros(b.shape, bool) if den_censored is None else np.asarray(den_censored, bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(a / b)
    ok = np.isfinite(logs) & (a > 0) & (b > 0)
    bound = _bound(ca[ok], cb[ok])
    iv = mean_ci(logs[ok], level)
    if iv.n == 0:
        return Ratio(math.nan, math.nan, math.nan, 0, bound)
    low, high = math.exp(iv.low), math.exp(iv.high)
    if bound == "lower":
        high = math.inf
    elif bound == "upper":
        low = 0.0
    sd = iv.se * math.sqrt(iv.n)
    return Ratio(math.exp(iv.mean), low, high, iv.n, bound, sd, p_value(iv))


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


# --------------------------------------------------------------------------- power


@dataclass(frozen=True)
class Power:
    """What n seeds can detect, for a paired estimate with standard error `se` over n seeds.

    mde: the minimum detectable effect, two-sided alpha 0.05 at 80% power:
    (t_{1-alpha/2, n-1} + t_{power, n-1}) · se (the standard paired-t formula, with
    se = sd of the paired differences / sqrt(n)). seeds_needed: the smallest n' whose mde,
    with the same sd (se scaled by sqrt(n / n')), reaches |effect|; None when the effect is 0 or
    would need more than MAX_SEEDS.
    """

    mde: float
    seeds_needed: int | None


MAX_SEEDS = 10_000


def _mde_factor(n: int, alpha: float, power: float) -> float:
    return float(special.stdtrit(n - 1, 1 - alpha / 2) + special.stdtrit(n - 1, power))


def power_analysis(
    se: float, n: int, effect: float, alpha: float = 0.05, power: float = 0.8
) -> Power:
    """mde and seeds_needed (see Power) from a standard error over n >= 2 seeds; NaN/None below."""
    if n < 2 or not math.isfinite(se):
        return Power(math.nan, None)
    mde = _mde_factor(n, alpha, power) * se
    if not math.isfinite(effect) or effect == 0:
        return Power(mde, None)
    sd = se * math.sqrt(n)
    # mde(n') decreases with n': bisect on [2, MAX_SEEDS]
    if _mde_factor(MAX_SEEDS, alpha, power) * sd / math.sqrt(MAX_SEEDS) > abs(effect):
        return Power(mde, None)
    lo, hi = 2, MAX_SEEDS
    while lo < hi:
        mid = (lo + hi) // 2
        if _mde_factor(mid, alpha, power) * sd / math.sqrt(mid) <= abs(effect):
            hi = mid
        else:
            lo = mid + 1
    return Power(mde, lo)


# --------------------------------------------------------------------------- trend


@dataclass(frozen=True)
class SlopeFit:
    """The line effect = intercept + slope · x, fitted per seed, with t-intervals over seeds.

    slope, intercept: means of the per-seed least-squares fits (for seeds with every x, the fit
    to the per-x means); low, high, se: the t-interval of the per-seed slopes; band_low,
    band_high: the t-interval of the per-seed fitted values at each x; n: seeds with a slope
    (two x's or more); p: two-sided p of "slope = 0".
    """

    slope: float
    intercept: float
    low: float
    high: float
    se: float
    n: int
    band_low: np.ndarray
    band_high: np.ndarray
    p: float = math.nan


def line_fits(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares per row of y (shape (rows, len(x))) over its finite values: (slopes,
    intercepts), NaN for a row with fewer than two distinct x's."""
    w = np.isfinite(y).astype(float)
    yz = np.nan_to_num(y)
    sw = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = (w * x).sum(1) / sw
        ym = (w * yz).sum(1) / sw
        dx = x - xm[:, None]
        sxx = (w * dx**2).sum(1)
        slope = (w * dx * (yz - ym[:, None])).sum(1) / sxx
    slope = np.where(sxx > 1e-12, slope, np.nan)
    return slope, ym - slope * xm


def seed_slopes(x: Sequence[float], effects: np.ndarray, level: float = 0.95) -> SlopeFit:
    """Slope of the effect against x: one least-squares slope per seed, then a t-interval.

    effects: shape (seeds, len(x)), one row per seed (NaN where that seed has no paired value
    at that x; a seed is fitted over the x's it has). Seeds are independent, so their slopes
    are too: the t-interval over them holds its level at 3 seeds (tests/base/test_coverage.py).
    """
    xs = np.asarray(x, dtype=float)
    e = np.asarray(effects, dtype=float).reshape(-1, len(xs))
    slopes, intercepts = line_fits(xs, e)
    ok = np.isfinite(slopes)
    iv = mean_ci(slopes[ok], level)
    fitted = intercepts[ok, None] + slopes[ok, None] * xs[None, :]
    bands = [mean_ci(fitted[:, j], level) for j in range(len(xs))]
    return SlopeFit(
        iv.mean,
        float(intercepts[ok].mean()) if ok.any() else math.nan,
        iv.low,
        iv.high,
        iv.se,
        iv.n,
        np.array([b.low for b in bands]),
        np.array([b.high for b in bands]),
        p_value(iv),
    )

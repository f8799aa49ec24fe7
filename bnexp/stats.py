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
    return float(sps.t.ppf(1 - alpha / 2, n - 1) + sps.t.ppf(power, n - 1))


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


def t_interval_se(iv: Interval, level: float = 0.95) -> float:
    """The standard error behind a mean_ci interval: half-width / t_{(1+level)/2, n-1}."""
    if iv.n < 2 or not math.isfinite(iv.low):
        return math.nan
    return (iv.high - iv.low) / 2 / float(sps.t.ppf((1 + level) / 2, iv.n - 1))


# --------------------------------------------------------------------------- trend


@dataclass(frozen=True)
class SlopeFit:
    """Least-squares line effect = intercept + slope · x over the per-x means of paired seeds.

    low, high: percentile bootstrap interval of the slope (seeds resampled with replacement, the
    per-x means and the line recomputed); se: the bootstrap standard deviation of the slope;
    band_low, band_high: the same interval for the fitted line at each x; n: seeds.
    """

    slope: float
    intercept: float
    low: float
    high: float
    se: float
    n: int
    band_low: np.ndarray
    band_high: np.ndarray


def _line_fits(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares per row of y (rows: fits), weights 0/1 in w; NaN without 2 x's."""
    sw = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = (w * x).sum(1) / sw
        ym = (w * np.nan_to_num(y)).sum(1) / sw
        dx = x - xm[:, None]
        sxx = (w * dx**2).sum(1)
        slope = (w * dx * (np.nan_to_num(y) - ym[:, None])).sum(1) / sxx
    slope = np.where(sxx > 1e-12, slope, np.nan)
    return slope, ym - slope * xm


def paired_bootstrap_slope(
    x: Sequence[float],
    effects: np.ndarray,
    n_boot: int = 4000,
    level: float = 0.95,
    seed: int = 0,
) -> SlopeFit:
    """Slope of the effect against x, with a paired bootstrap CI over seeds.

    effects: shape (seeds, len(x)), one row per seed (NaN where that seed has no paired value at
    that x). Each bootstrap sample draws seeds (rows) with replacement and refits the line to the
    per-x means of the drawn rows (an x no drawn seed has is left out; a sample with fewer than
    two x's is dropped). Deterministic for a given `seed`.
    """
    xs = np.asarray(x, dtype=float)
    e = np.asarray(effects, dtype=float).reshape(-1, len(xs))
    e = e[np.isfinite(e).any(1)]
    n = len(e)
    nan = np.full(len(xs), math.nan)

    def means(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # rows: (fits, seeds) -> per-x means (fits, x) and 0/1 weights where some seed has x
        vals = e[rows]  # (fits, seeds, x)
        have = np.isfinite(vals)
        cnt = have.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.where(have, vals, 0).sum(1) / cnt
        return m, (cnt > 0).astype(float)

    if n == 0:
        return SlopeFit(math.nan, math.nan, math.nan, math.nan, math.nan, 0, nan, nan)
    m, w = means(np.arange(n)[None, :])
    slope, intercept = (float(v[0]) for v in _line_fits(xs[None, :], m, w))
    if n < 2 or not math.isfinite(slope):
        return SlopeFit(slope, intercept, math.nan, math.nan, math.nan, n, nan, nan)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    bm, bw = means(idx)
    bs, bi = _line_fits(np.broadcast_to(xs, bm.shape), bm, bw)
    ok = np.isfinite(bs)
    bs, bi = bs[ok], bi[ok]
    q = [(1 - level) / 2, (1 + level) / 2]
    lo, hi = np.quantile(bs, q)
    band = np.quantile(bi[:, None] + bs[:, None] * xs[None, :], q, axis=0)
    return SlopeFit(
        slope, intercept, float(lo), float(hi), float(bs.std(ddof=1)), n, band[0], band[1]
    )

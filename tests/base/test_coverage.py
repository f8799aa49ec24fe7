"""The report's intervals and verdicts, measured by simulation with a known truth.

Every interval the report shows is drawn DRAWS times at n = 3, 5 and 10 seeds from a model whose
true value is known, and must cover it at 93-97% (nominal 95%; the binomial standard error at
2,000 draws is 0.49 points, so the band is about ±4 SE around 95). Each verdict, run on data
where the effect is absent, must call it supported or contradicted at most 6% of the time (5%
nominal, +2 SE); the Holm-corrected decision over several cells must keep the chance of any
false verdict in the family at most 6%, where uncorrected per-cell verdicts would not.

The verdict functions decide with `bnexp.report.family.judge_cells` on the p-value of the very
interval they print, so the checks call the same two steps. The generator is seeded: the figures are
reproducible, and docs/statistics.md quotes them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bnexp.report.family import BOTH, judge_cells
from bnexp.report.verdicts import RATIO_ALLOWED
from bnexp.stats import mean_ci, p_value, paired_difference_ci, paired_log_ratio, seed_slopes

DRAWS = 2000
SEEDS = (3, 5, 10)
COVER = (0.93, 0.97)
FPR_MAX = 0.06
LOG2_SIZES = np.log2([64.0, 128.0, 256.0, 512.0])


def rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([2026, *key])


def _decides(p: float, sign: float, allowed=BOTH) -> bool:
    """Would a one-cell verdict call this supported or contradicted?"""
    (verdict,), _ = judge_cells([p], [sign], [allowed])
    return verdict in ("supported", "contradicted")


# --------------------------------------------------------------------------- generators


def effect_pairs(g: np.random.Generator, n: int, effect: float) -> tuple[np.ndarray, np.ndarray]:
    """Final test accuracies of n paired seeds: a shared seed effect (the data order and init
    both arms share), arm noise, and `effect` = acc(BN) - acc(none)."""
    seed = g.normal(0.0, 0.01, n)
    none = 0.50 + seed + g.normal(0.0, 0.006, n)
    return none, none - seed * 0.3 + effect + g.normal(0.0, 0.006, n)


def step_pairs(g: np.random.Generator, n: int, log_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps to target of n paired seeds, log-normal around 600 (none) and 600 / exp(log_ratio)
    (BN), with a shared seed factor: the true speed-up (geometric mean) is exp(log_ratio)."""
    seed = g.normal(0.0, 0.3, n)
    none = 600 * np.exp(seed + g.normal(0.0, 0.25, n))
    bn = 600 * np.exp(-log_ratio + 0.5 * seed + g.normal(0.0, 0.25, n))
    return np.round(none), np.round(bn)


def slope_effects(g: np.random.Generator, n: int, slope: float) -> np.ndarray:
    """Effects of n seeds at 4 batch sizes: 0.02 + slope · log2(b / 64) + a per-seed slope
    (seeds differ in how fast the effect fades) + noise per run; a missing cell now and then."""
    x = LOG2_SIZES - LOG2_SIZES[0]
    own = g.normal(0.0, 0.004, (n, 1))
    e = 0.02 + (slope + own) * x + g.normal(0.0, 0.008, (n, len(x)))
    e[g.random(e.shape) < 0.05] = np.nan  # a run that diverged
    return e


# --------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("n", SEEDS)
def test_paired_difference_interval_covers_at_95(n):
    g, truth = rng(1, n), 0.012
    hits = 0
    for _ in range(DRAWS):
        none, bn = effect_pairs(g, n, truth)
        iv = paired_difference_ci(bn, none)
        hits += iv.low <= truth <= iv.high
    assert COVER[0] <= hits / DRAWS <= COVER[1], f"n={n}: coverage {hits / DRAWS:.3f}"


@pytest.mark.parametrize("n", SEEDS)
def test_speedup_interval_covers_the_geometric_mean_ratio_at_95(n):
    g, truth = rng(2, n), math.log(5.0)
    hits = 0
    for _ in range(DRAWS):
        none, bn = step_pairs(g, n, truth)
        r = paired_log_ratio(none, bn)
        # steps are whole numbers: the rounding moves log ratios by < 0.1%, far inside the CI
        hits += r.low <= math.exp(truth) <= r.high
    assert COVER[0] <= hits / DRAWS <= COVER[1], f"n={n}: coverage {hits / DRAWS:.3f}"


@pytest.mark.parametrize("n", SEEDS)
def test_censored_speedup_keeps_a_valid_lower_bound(n):
    """none runs cut at 900 steps (about a quarter of them): the true ratio is >= the bound
    in at least 95% of draws (the bound is conservative: censoring only lowers it)."""
    g, truth = rng(3, n), math.log(2.0)
    held = censored = 0
    for _ in range(DRAWS):
        none, bn = step_pairs(g, n, truth)
        cut = none > 900
        r = paired_log_ratio(np.minimum(none, 900), bn, cut, np.zeros(n, bool))
        censored += r.bound == "lower"
        held += r.low <= math.exp(truth)
    assert censored > DRAWS * 0.3  # the censored case is exercised
    assert held / DRAWS >= 0.95, f"n={n}: lower bound held in {held / DRAWS:.3f}"


@pytest.mark.parametrize("n", SEEDS)
def test_trend_slope_interval_and_band_cover_at_95(n):
    g, truth = rng(4, n), -0.004
    x = LOG2_SIZES - LOG2_SIZES[0]
    hits = band = 0
    for _ in range(DRAWS):
        fit = seed_slopes(x, slope_effects(g, n, truth))
        hits += fit.low <= truth <= fit.high
        band += fit.band_low[-1] <= 0.02 + truth * x[-1] <= fit.band_high[-1]
    assert COVER[0] <= hits / DRAWS <= COVER[1], f"n={n}: slope coverage {hits / DRAWS:.3f}"
    assert COVER[0] <= band / DRAWS <= COVER[1], f"n={n}: band coverage {band / DRAWS:.3f}"


# --------------------------------------------------------------------------- false positives


@pytest.mark.parametrize("n", SEEDS)
def test_each_verdict_under_the_null_errs_at_most_6_percent(n):
    g = rng(5, n)
    x = LOG2_SIZES - LOG2_SIZES[0]
    errs = {"regularization": 0, "speedup": 0, "trend": 0}
    for _ in range(DRAWS):
        none, bn = effect_pairs(g, n, 0.0)
        iv = mean_ci(bn - none)
        errs["regularization"] += _decides(p_value(iv), iv.mean)
        a, b = step_pairs(g, n, 0.0)
        r = paired_log_ratio(a, b)
        errs["speedup"] += _decides(r.p, math.log(r.ratio), RATIO_ALLOWED[r.bound])
        fit = seed_slopes(x, slope_effects(g, n, 0.0))
        errs["trend"] += _decides(fit.p, -fit.slope)
    rates = {k: v / DRAWS for k, v in errs.items()}
    assert max(rates.values()) <= FPR_MAX, f"n={n}: false-positive rates {rates}"
    assert min(rates.values()) >= 0.03, f"n={n}: suspiciously few rejections {rates}"


@pytest.mark.parametrize("n", SEEDS)
def test_holm_keeps_the_family_wise_error_over_six_cells(n):
    """Six null cells (three batch sizes x two lrs, say): one false verdict anywhere is an
    error of the family. Per-cell 95% verdicts err in about 26% of families; Holm's in <= 6%."""
    g, cells = rng(6, n), 6
    holm_err = raw_err = 0
    for _ in range(DRAWS):
        ivs = [mean_ci(np.subtract(*effect_pairs(g, n, 0.0)[::-1])) for _ in range(cells)]
        ps, signs = [p_value(iv) for iv in ivs], [iv.mean for iv in ivs]
        verdicts, _ = judge_cells(ps, signs, [BOTH] * cells)
        holm_err += any(v != "not supported" for v in verdicts)
        raw_err += any(p < 0.05 for p in ps)
    assert holm_err / DRAWS <= FPR_MAX, f"n={n}: family-wise error {holm_err / DRAWS:.3f}"
    assert raw_err / DRAWS > 0.2, f"n={n}: uncorrected {raw_err / DRAWS:.3f}"


def test_the_verdicts_detect_a_real_effect():
    """The checks above cannot pass by never deciding: at 10 seeds an effect of twice the
    paired sd is found in most draws."""
    g = rng(7)
    found = sum(
        _decides(p_value(iv), iv.mean)
        for iv in (mean_ci(np.subtract(*effect_pairs(g, 10, 0.02)[::-1])) for _ in range(500))
    )
    assert found / 500 > 0.8

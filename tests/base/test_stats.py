"""bnexp.stats against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bnexp.stats import (
    fmt_interval,
    loglog_slope,
    mean_ci,
    paired_bootstrap_ratio,
    paired_bootstrap_slope,
    paired_difference_ci,
    power_analysis,
)

# Student t quantiles t_{0.975, df}, from tables
T975 = {2: 4.302652729911275, 3: 3.182446305284263}


def test_mean_ci_is_the_t_interval():
    iv = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = T975[3] * math.sqrt(5 / 3) / 2  # s = sqrt(sum((x - 2.5)^2) / 3) = sqrt(5/3), n = 4
    assert iv.n == 4 and iv.mean == pytest.approx(2.5)
    assert iv.low == pytest.approx(2.5 - half, abs=1e-12), f"low off by {iv.low - (2.5 - half):.3g}"
    assert iv.high == pytest.approx(2.5 + half, abs=1e-12), (
        f"high off by {iv.high - (2.5 + half):.3g}"
    )


def test_mean_ci_drops_nan_and_gives_no_interval_for_one_value():
    iv = mean_ci([float("nan"), 7.0])
    assert iv.n == 1 and iv.mean == 7.0 and math.isnan(iv.low) and math.isnan(iv.high)
    assert fmt_interval(iv) == "7.000"
    assert mean_ci([]).n == 0 and fmt_interval(mean_ci([])) == "—"


def test_paired_difference_ci_by_hand():
    iv = paired_difference_ci([0.1, 0.2, 0.3], [0.0, 0.1, 0.1])  # differences .1, .1, .2
    s = math.sqrt(((0.1 - 0.4 / 3) ** 2 * 2 + (0.2 - 0.4 / 3) ** 2) / 2)
    half = T975[2] * s / math.sqrt(3)
    assert iv.mean == pytest.approx(0.4 / 3)
    assert (iv.low, iv.high) == pytest.approx(
        (0.4 / 3 - half, 0.4 / 3 + half), abs=1e-9
    )  # inputs rounded in binary


def test_bootstrap_ratio_of_means_and_its_exact_percentiles():
    # Two pairs (2, 1) and (4, 1): resamples give ratio 2 (p 1/4), 3 (p 1/2) or 4 (p 1/4),
    # so the 2.5th and 97.5th percentiles are 2 and 4.
    r = paired_bootstrap_ratio([2.0, 4.0], [1.0, 1.0], n_boot=4000)
    assert r.ratio == pytest.approx(3.0) and r.n == 2 and r.bound == "exact"
    assert (r.low, r.high) == (2.0, 4.0)
    # constant per-pair ratio: every resample gives it
    r = paired_bootstrap_ratio([100.0, 200.0, 300.0], [10.0, 20.0, 30.0])
    assert (r.ratio, r.low, r.high) == pytest.approx((10.0, 10.0, 10.0))


def test_bootstrap_pairs_are_resampled_together():
    # Perfectly paired values give a tight interval; unpaired resampling would not.
    a = np.array([10.0, 100.0, 1000.0])
    r = paired_bootstrap_ratio(a * 5, a)
    assert r.high - r.low < 1e-9, f"paired ratios are all 5, interval width {r.high - r.low:.3g}"


def test_censoring_sets_the_bound_direction():
    none_steps, bn_steps = [500.0, 600.0, 1000.0], [100.0, 100.0, 100.0]
    lower = paired_bootstrap_ratio(none_steps, bn_steps, num_censored=[False, False, True])
    assert lower.bound == "lower" and lower.ratio == pytest.approx(700 / 100)
    upper = paired_bootstrap_ratio(none_steps, bn_steps, den_censored=[True, False, False])
    assert upper.bound == "upper"
    both = paired_bootstrap_ratio(none_steps, bn_steps, [True, False, False], [False, True, False])
    assert both.bound == "unknown"


def test_bootstrap_rejects_unpaired_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap_ratio([1.0, 2.0], [1.0])


def test_loglog_slope():
    m = np.array([4, 8, 16, 32, 64])
    assert loglog_slope(m, 3 * m**-0.5) == pytest.approx(-0.5, abs=1e-12)
    assert loglog_slope([1, 2, 4, 8], [0.0, 2.0, 4.0, 8.0]) == pytest.approx(
        1.0
    )  # the zero is left out
    assert math.isnan(loglog_slope([2, 2], [1, 3]))


# t_{0.975, df} and t_{0.80, df}, from tables
T80 = {2: 1.0606601717798212, 6: 0.9057, 7: 0.8960}
T975_67 = {6: 2.4469, 7: 2.3646}


def test_power_minimum_detectable_effect_and_seeds_needed():
    # se 0.01 over 3 seeds: mde = (t_.975,2 + t_.80,2) * se
    p = power_analysis(0.01, 3, 0.02)
    assert p.mde == pytest.approx((T975[2] + T80[2]) * 0.01)
    # sd = 0.01 * sqrt(3); n' = 7: (2.4469 + 0.9057) * sd / sqrt(7) = 0.0220 > 0.02;
    # n' = 8: (2.3646 + 0.8960) * sd / sqrt(8) = 0.0200 <= 0.02
    sd = 0.01 * math.sqrt(3)
    assert (T975_67[6] + T80[6]) * sd / math.sqrt(7) > 0.02
    assert (T975_67[7] + T80[7]) * sd / math.sqrt(8) < 0.02
    assert p.seeds_needed == 8
    assert power_analysis(0.01, 3, 0.0).seeds_needed is None  # no effect: never settled
    assert math.isnan(power_analysis(0.01, 1, 0.02).mde)  # one seed: no power to state


def test_paired_bootstrap_slope_against_a_loop_with_polyfit():
    x = np.log2([16, 32, 64, 128])
    e = np.array(
        [[0.04, 0.02, 0.00, np.nan], [0.05, 0.03, 0.01, 0.0], [0.03, 0.02, 0.01, 0.01],
         [0.06, 0.01, 0.02, -0.01]]
    )  # fmt: skip
    fit = paired_bootstrap_slope(x, e, n_boot=300, seed=3)
    means = np.nanmean(e, axis=0)
    assert fit.slope == pytest.approx(np.polyfit(x, means, 1)[0]) and fit.n == 4
    # the same seed draws, refitted one by one with np.polyfit on the drawn seeds' nanmeans
    idx = np.random.default_rng(3).integers(0, 4, size=(300, 4))
    slopes = []
    for rows in idx:
        m = np.nanmean(e[rows], axis=0) if not np.isnan(e[rows]).all(0).any() else None
        if m is None:  # column 3 missing from every drawn seed: fit the other sizes
            keep = ~np.isnan(e[rows]).all(0)
            m, xs = np.nanmean(e[rows][:, keep], axis=0), x[keep]
        else:
            xs = x
        slopes.append(np.polyfit(xs, m, 1)[0])
    assert (fit.low, fit.high) == pytest.approx(tuple(np.quantile(slopes, [0.025, 0.975])))
    assert fit.se == pytest.approx(np.std(slopes, ddof=1))
    assert fit.band_low[0] <= fit.intercept + fit.slope * x[0] <= fit.band_high[0]

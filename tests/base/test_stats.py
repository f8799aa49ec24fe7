"""bnexp.stats against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from bnexp.stats import (
    fmt_interval,
    holm,
    loglog_slope,
    mean_ci,
    p_value,
    paired_difference_ci,
    paired_log_ratio,
    power_analysis,
    seed_slopes,
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


def test_log_ratio_is_the_t_interval_of_per_seed_log_ratios_by_hand():
    # pairs (2, 1), (4, 1), (3, 1): log ratios ln 2, ln 4, ln 3
    logs = np.log([2.0, 4.0, 3.0])
    m, sd = logs.mean(), logs.std(ddof=1)
    half = T975[2] * sd / math.sqrt(3)
    r = paired_log_ratio([2.0, 4.0, 3.0], [1.0, 1.0, 1.0])
    assert r.ratio == pytest.approx(24 ** (1 / 3))  # the geometric mean of 2, 4, 3
    assert (r.low, r.high) == pytest.approx((math.exp(m - half), math.exp(m + half)))
    assert r.n == 3 and r.bound == "exact" and r.log_sd == pytest.approx(sd)
    t = m / (sd / math.sqrt(3))  # p of the t-test, two-sided, 2 df: 1 - t / sqrt(2 + t^2)
    assert r.p == pytest.approx(1 - t / math.sqrt(2 + t * t))
    # constant per-pair ratio: no spread, a zero-width interval and p 0
    r = paired_log_ratio([100.0, 200.0, 300.0], [10.0, 20.0, 30.0])
    assert (r.ratio, r.low, r.high, r.p) == pytest.approx((10.0, 10.0, 10.0, 0.0))
    assert math.isnan(paired_log_ratio([2.0], [1.0]).low)  # one pair: no interval


def test_censoring_sets_the_bound_direction_and_drops_the_other_end():
    none_steps, bn_steps = [500.0, 600.0, 1000.0], [100.0, 100.0, 100.0]
    lower = paired_log_ratio(none_steps, bn_steps, num_censored=[False, False, True])
    assert lower.bound == "lower" and lower.ratio == pytest.approx((5 * 6 * 10) ** (1 / 3))
    assert lower.high == math.inf and 1 < lower.low < lower.ratio
    upper = paired_log_ratio(none_steps, bn_steps, den_censored=[True, False, False])
    assert upper.bound == "upper" and upper.low == 0.0 and math.isfinite(upper.high)
    both = paired_log_ratio(none_steps, bn_steps, [True, False, False], [False, True, False])
    assert both.bound == "unknown"
    nothing = paired_log_ratio([200.0, 200.0], [200.0, 200.0], [True, True], [True, True])
    assert nothing.bound == "none reached"


def test_log_ratio_rejects_unpaired_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        paired_log_ratio([1.0, 2.0], [1.0])


def test_p_value_agrees_with_the_interval():
    iv = mean_ci([0.1, 0.2, 0.3, 0.25])
    assert p_value(iv) == pytest.approx(2 * sps.t.sf(iv.mean / iv.se, 3))
    # the 95% interval's end at 0 is exactly p = 0.05
    x = np.array([1.0, 2.0, 4.0])
    shifted = mean_ci(x - mean_ci(x).low)
    assert shifted.low == pytest.approx(0, abs=1e-12) and p_value(shifted) == pytest.approx(0.05)
    assert math.isnan(p_value(mean_ci([1.0])))


def test_holm_by_hand():
    # sorted p .01, .03, .04 scaled by 3, 2, 1: .03, .06, .04 -> made monotone .03, .06, .06
    adj = holm([0.04, 0.01, float("nan"), 0.03])
    assert adj[[1, 3, 0]] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adj[2])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]).shape == (0,)


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


def test_seed_slopes_against_polyfit_per_seed_and_a_t_interval():
    x = np.log2([16, 32, 64, 128])
    e = np.array(
        [[0.04, 0.02, 0.00, np.nan], [0.05, 0.03, 0.01, 0.0], [0.03, 0.02, 0.01, 0.01],
         [0.06, 0.01, 0.02, -0.01]]
    )  # fmt: skip
    fit = seed_slopes(x, e)
    # each seed fitted over the sizes it has (seed 0: the first three)
    per_seed = [np.polyfit(x[np.isfinite(r)], r[np.isfinite(r)], 1) for r in e]
    slopes = np.array([c[0] for c in per_seed])
    half = T975[3] * slopes.std(ddof=1) / 2
    assert fit.slope == pytest.approx(slopes.mean()) and fit.n == 4
    assert (fit.low, fit.high) == pytest.approx((slopes.mean() - half, slopes.mean() + half))
    assert fit.se == pytest.approx(slopes.std(ddof=1) / 2)
    assert fit.intercept == pytest.approx(np.mean([c[1] for c in per_seed]))
    at0 = np.array([c[1] + c[0] * x[0] for c in per_seed])
    assert (fit.band_low[0], fit.band_high[0]) == pytest.approx(
        (at0.mean() - T975[3] * at0.std(ddof=1) / 2, at0.mean() + T975[3] * at0.std(ddof=1) / 2)
    )
    one = seed_slopes(x, e[:1])  # one seed: a slope, no interval
    assert one.n == 1 and math.isnan(one.low) and one.slope == pytest.approx(slopes[0])

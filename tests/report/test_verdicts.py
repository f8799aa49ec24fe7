"""The BN verdicts against hand computations on small hand-written results folders: matched fit,
the trend's slope and bootstrap CI, one BN variant, ours ≡ torch's, power, each one's best lr."""

from __future__ import annotations

import math

import numpy as np
import pytest
from report_synthetic import write_results
from test_tables import T975_2, tables_of

from bnexp.report import all_claims, build_report, load_summary
from bnexp.report.effects import equivalence_table, matched_fit
from bnexp.report.verdicts import equivalence

TARGET = {"metric": "train_acc", "value": 0.95}
T80_2 = 1.0606601717798212  # Student t_{0.80, 2}
T975_3 = 3.182446305284263


def of(claims, kind):
    return [c for c in claims if c.claim == kind]


# --------------------------------------------------------------------------- matched fit

G_NONE, G_BN = [0.06, 0.07, 0.08], [0.02, 0.02, 0.03]  # gaps where each run meets the target


def matched_runs(bn_reaching=3):
    """none meets train_acc >= 0.95 at step 20, BN at step 10; seed 3 of none never does."""
    runs = []
    for s in range(4):
        none_rows = [(0, 0.5, 0.5, 1.0, 1.0), (10, 0.9, 0.8, 0.3, 0.5)]
        if s < 3:
            none_rows += [(20, 0.96, 0.96 - G_NONE[s], 0.1, 0.1 + G_NONE[s]), (30, 0.99, 0.9, 0, 1)]
        runs.append({"norm": "none", "batch_size": 64, "seed": s, "gen_gap": 0.05,
                     "steps_to_target": 20 if s < 3 else None, "metrics": none_rows})  # fmt: skip
        g = G_BN[s] if s < 3 else 0.02
        reach = s < bn_reaching or s == 3
        bn_rows = [(0, 0.5, 0.5, 1.0, 1.0), (10, 0.97 if reach else 0.9, 0.97 - g, 0.08, 0.08 + g)]
        gap = [0.05, 0.04, 0.06, 0.05][s]
        runs.append({"norm": "torch", "batch_size": 64, "seed": s, "gen_gap": gap,
                     "steps_to_target": 10 if reach else None, "metrics": bn_rows})  # fmt: skip
    return runs


def test_matched_fit_is_the_first_evaluation_meeting_each_runs_target(tmp_path):
    res = write_results(tmp_path / "m", matched_runs())
    tables = tables_of(res)
    df = load_summary(res)
    from bnexp.report import run_csvs

    metrics = run_csvs(res, df, "metrics.csv")
    fit = matched_fit(metrics, dict.fromkeys(df["run_id"], TARGET)).set_index("run_id")
    none0, bn0 = df.loc[0, "run_id"], df.loc[1, "run_id"]
    assert fit.loc[none0, "fit_step"] == 20 and fit.loc[bn0, "fit_step"] == 10
    assert fit.loc[none0, "fit_gen_gap"] == pytest.approx(G_NONE[0])
    assert fit.loc[none0, "fit_loss_gap"] == pytest.approx(G_NONE[0])
    assert math.isnan(fit.loc[df.loc[6, "run_id"], "fit_gen_gap"])  # none, seed 3: never
    # a loss target is met when <= value: BN's train loss 0.08 at step 10
    loss = matched_fit(metrics, {bn0: {"metric": "train_loss", "value": 0.09}})
    assert loss["fit_step"].tolist() == [10.0]

    reg = tables["regularization"]
    bn = reg[reg["norm"] == "torch"].iloc[0]
    diffs = np.array(G_NONE) - np.array(G_BN)  # .04, .05, .05: seed 3 left out (none never met)
    half = T975_2 * diffs.std(ddof=1) / math.sqrt(3)
    assert bn["fit_effect_mean"] == pytest.approx(diffs.mean())
    assert (bn["fit_effect_ci_low"], bn["fit_effect_ci_high"]) == pytest.approx(
        (diffs.mean() - half, diffs.mean() + half)
    )
    assert bn["fit_effect_n"] == 3 and bn["effect_n"] == 4
    assert reg[reg["norm"] == "none"].iloc[0]["fit_excluded"] == 1

    (claim,) = of(all_claims(tables, TARGET), "regularization")
    assert claim.basis == "matched fit" and claim.verdict == "supported"
    assert claim.estimate == pytest.approx(diffs.mean()) and claim.n == 3
    assert "1 run(s) that never reached it left out" in claim.text
    # final gaps 0.05 vs 0.05, 0.04, 0.06, 0.05: effect 0, stated alongside
    assert claim.details["final_effect"] == pytest.approx(0.0) and claim.details["final_n"] == 4
    # power: (t_.975,2 + t_.80,2) * sd / sqrt(3)
    assert claim.mde == pytest.approx((T975_2 + T80_2) * diffs.std(ddof=1) / math.sqrt(3))


def test_regularization_falls_back_to_final_gaps_with_the_caveat(tmp_path):
    # BN meets the target in seeds 0 and 3 only: one pair (seed 0) where both did
    tables = tables_of(write_results(tmp_path / "f", matched_runs(bn_reaching=1)))
    (claim,) = of(all_claims(tables, TARGET), "regularization")
    assert claim.basis == "final" and "at the end of training" in claim.text
    assert "1 of 4 did" in claim.text and claim.details["matched_fit_n"] == 1
    # final effect 0.05 - (0.05, 0.04, 0.06, 0.05) = 0, .01, -.01, 0: inconclusive, with power
    d = np.array([0.0, 0.01, -0.01, 0.0])
    assert claim.estimate == pytest.approx(0.0, abs=1e-12) and claim.verdict == "not supported"
    assert claim.mde == pytest.approx((T975_3 + 0.9784723123633045) * d.std(ddof=1) / 2)
    assert claim.seeds_needed is None  # an observed effect of 0: no number of seeds settles it


# --------------------------------------------------------------------------- trend

EFFECTS = {0: [0.04, 0.02, 0.00], 1: [0.05, 0.03, 0.01], 2: [0.03, 0.02, 0.01]}  # at 16, 32, 64


def trend_runs():
    runs = []
    for s, eff in EFFECTS.items():
        for b, e in zip((16, 32, 64), eff, strict=True):
            runs.append({"norm": "none", "batch_size": b, "seed": s, "gen_gap": 0.02 + e})
            runs.append({"norm": "torch", "batch_size": b, "seed": s, "gen_gap": 0.02})
    return runs


def test_trend_slope_and_paired_bootstrap_ci(tmp_path):
    tables = tables_of(write_results(tmp_path / "t", trend_runs()))
    tr = tables["trend"]
    assert set(tr["basis"]) == {"final"}  # no run meets the target: no matched fit
    means = np.mean(list(EFFECTS.values()), axis=0)  # .04, .0233, .0067
    assert tr.sort_values("x")["effect_mean"].to_numpy() == pytest.approx(means)
    slope = (means[2] - means[0]) / 2  # three equally spaced log2 sizes: (y3 - y1) / 2
    r = tr.iloc[0]
    assert r["slope"] == pytest.approx(slope) and r["slope_seeds"] == 3
    # every seed's own slope is -0.02, -0.02 or -0.01, and the slope of means is their mean:
    # every bootstrap slope lies in [-0.02, -0.01]
    assert -0.02 - 1e-12 <= r["slope_ci_low"] <= slope <= r["slope_ci_high"] <= -0.01 + 1e-12
    again = tables_of(write_results(tmp_path / "t2", trend_runs()))["trend"]
    assert again["slope_ci_low"].tolist() == tr["slope_ci_low"].tolist()  # seeded bootstrap
    (claim,) = of(all_claims(tables, TARGET), "trend")
    assert claim.verdict == "supported" and claim.details["direction"] == "fades"
    assert " — fades (slope < 0" in claim.text and claim.norm == "torch"
    assert claim.estimate == pytest.approx(slope) and claim.mde > 0


def test_a_matched_fit_trend_leaves_out_the_sizes_without_matched_fit(tmp_path):
    """No BN never reaches the target at batch 64 (say its lr does not train there): the trend
    of matched-fit gaps is fitted over 16 and 32, and says that 64 was left out."""
    runs = []
    for s, eff in EFFECTS.items():
        for b, e in zip((16, 32, 64), eff, strict=True):
            reach = b != 64
            gn, gb = 0.02 + e, 0.02  # gaps at the matched-fit row
            none_rows = [(0, 0.1, 0.1, 2.0, 2.0), (10, 0.97 if reach else 0.3, 0.97 - gn, 0.1, 0.1)]
            bn_rows = [(0, 0.1, 0.1, 2.0, 2.0), (10, 0.97, 0.97 - gb, 0.1, 0.1)]
            at = {"batch_size": b, "seed": s}
            runs.append(
                {"norm": "none", **at, "gen_gap": gn, "metrics": none_rows,
                 "steps_to_target": 10 if reach else None}
            )  # fmt: skip
            runs.append(
                {"norm": "torch", **at, "gen_gap": gb, "metrics": bn_rows, "steps_to_target": 10}
            )
    tables = tables_of(write_results(tmp_path / "l", runs))
    fit = tables["trend"][tables["trend"]["basis"] == "matched fit"].sort_values("x")
    assert fit["x"].tolist() == [16, 32] and set(fit["left_out"]) == {"64"}
    slope = np.mean([EFFECTS[s][1] - EFFECTS[s][0] for s in EFFECTS])  # two sizes 1 log2 apart
    assert fit["slope"].iloc[0] == pytest.approx(slope)
    (claim,) = of(all_claims(tables, TARGET), "trend")
    assert claim.basis == "matched fit" and claim.estimate == pytest.approx(slope)
    assert "(64 left out: no matched fit there)" in claim.text


def test_a_falling_effect_that_is_not_positive_is_not_fading(tmp_path):
    """Effects <= 0 that fall further (BN's gap the larger, more so at large batches) have a
    negative slope, yet no regularization fades: not "fades", and not supported."""
    runs = []
    for s, eff in EFFECTS.items():
        for b, e in zip((16, 32, 64), eff, strict=True):
            runs.append({"norm": "none", "batch_size": b, "seed": s, "gen_gap": 0.1 + e - 0.05})
            runs.append({"norm": "torch", "batch_size": b, "seed": s, "gen_gap": 0.1})
    (claim,) = of(all_claims(tables_of(write_results(tmp_path / "n", runs)), TARGET), "trend")
    assert claim.estimate == pytest.approx((0.0067 - 0.04) / 2, abs=1e-3)  # slope as before
    assert claim.ci_high < 0 and claim.verdict == "not supported"
    assert claim.details["direction"] == "falls" and "falls below zero" in claim.text


def test_a_trend_over_two_seeds_is_not_determined(tmp_path):
    """Every seed's slope is -0.02 or -0.01, yet a bootstrap over 2 seeds is no CI."""
    runs = [r for r in trend_runs() if r["seed"] < 2]
    (claim,) = of(all_claims(tables_of(write_results(tmp_path / "two", runs)), TARGET), "trend")
    assert claim.n == 2 and claim.estimate < 0
    assert claim.verdict == "not determined" and "not determined with 2 seeds" in claim.text


def test_a_trend_of_final_gaps_at_unequal_fit_is_not_determined(tmp_path):
    """Final gaps of networks at unequal fit differ for reasons that are not BN's: when a
    regularization verdict says so, the slope of those gaps is not a verdict either."""
    tables = tables_of(write_results(tmp_path / "t", trend_runs()))
    from bnexp.report.verdicts import trend

    (fair,) = trend(tables["trend"])
    (unfair,) = trend(tables["trend"], unequal_fit=True)
    assert fair.verdict == "supported"
    assert unfair.verdict == "not determined" and "not comparable" in unfair.text
    assert unfair.details["direction"] == "fades" and unfair.estimate == fair.estimate


def test_ghost_trend_against_full_batch_statistics(tmp_path):
    runs = [{"norm": "none", "batch_size": 64, "seed": s, "gen_gap": 0.1} for s in range(3)]
    for s in range(3):
        for m, g in ((16, 0.02), (32, 0.03), (64, 0.04)):
            runs.append({"norm": "custom", "batch_size": 64, "seed": s, "ghost": m,
                         "gen_gap": g + 0.001 * s})  # fmt: skip
    res = write_results(tmp_path / "g", runs, swept=("norm", "seed", "ghost"))
    tr = tables_of(res)["trend"]
    g = tr[tr["kind"] == "ghost"].sort_values("x")
    # gap(64) - gap(m) = .02, .01, 0 in every seed: slope -0.01 per doubling, no spread at all
    assert g["effect_mean"].to_numpy() == pytest.approx([0.02, 0.01, 0.0], abs=1e-12)
    assert g["slope"].iloc[0] == pytest.approx(-0.01)
    assert (g["slope_ci_low"].iloc[0], g["slope_ci_high"].iloc[0]) == pytest.approx((-0.01, -0.01))
    (claim,) = of(all_claims(tables_of(res), TARGET), "trend")
    assert claim.norm == "custom" and claim.details == {"kind": "ghost", "direction": "fades"}


@pytest.mark.slow
def test_trend_plot_is_written(tmp_path):
    res = write_results(tmp_path / "p", trend_runs())
    report = build_report(res)
    assert (res / "plots" / "effect_vs_batch.png").read_bytes()[:4] == b"\x89PNG"
    assert (res / "tables" / "trend.csv").exists()
    assert any(c.claim == "trend" for c in report.claims)


# --------------------------------------------------------------------------- one BN, ours ≡ torch's

STEPS = {"none": [100, 110, 120, 130], "torch": [20, 22, 24, 26], "custom": [20, 22, 25, 26]}
ACC = {"none": [0.9] * 4, "torch": [0.9] * 4, "custom": [0.90, 0.92, 0.88, 0.91]}


def both_runs(acc=ACC):
    return [
        {"norm": n, "batch_size": 64, "seed": s, "gen_gap": 0.05 if n == "none" else 0.03,
         "steps_to_target": STEPS[n][s], "test_acc": acc[n][s]}
        for n in ("none", "torch", "custom") for s in range(4)
    ]  # fmt: skip


def test_one_verdict_per_claim_judges_torchs_bn(tmp_path):
    claims = all_claims(tables_of(write_results(tmp_path / "o", both_runs())), TARGET)
    for kind in ("speedup", "regularization"):
        (c,) = of(claims, kind)
        assert c.norm == "torch" and "BN = torch" in c.text
    (speed,) = of(claims, "speedup")
    assert speed.estimate == pytest.approx(115 / 23)


def test_ours_equals_torchs_check(tmp_path):
    df = load_summary(write_results(tmp_path / "e", both_runs()))
    eq = equivalence_table(df)
    pooled = eq[eq["scope"] == "all cells"].iloc[0]
    rel = np.array([0, 0, 1 / 24, 0])  # (custom - torch) / torch steps
    half = T975_3 * rel.std(ddof=1) / 2
    assert (pooled["steps_rel_diff_ci_low"], pooled["steps_rel_diff_ci_high"]) == pytest.approx(
        (rel.mean() - half, rel.mean() + half)
    )
    acc = np.array([0.0, 0.02, -0.02, 0.01])
    assert pooled["test_acc_diff_mean"] == pytest.approx(acc.mean())
    steps, test_acc = equivalence(eq)
    # steps CI [-2.3%, +4.4%] inside ±10%; accuracy CI [-0.025, +0.030] leaves ±0.01, holds 0
    assert (steps.verdict, test_acc.verdict) == ("equivalent", "not determined")
    assert "not determined with 4 pairs" in steps.text
    shifted = {**ACC, "custom": [0.95, 0.951, 0.949, 0.95]}
    eq = equivalence_table(load_summary(write_results(tmp_path / "d", both_runs(shifted))))
    assert equivalence(eq)[1].verdict == "differs"


# --------------------------------------------------------------------------- best lr


def test_verdicts_use_each_variants_best_lr(tmp_path):
    spec = {  # (norm, lr) -> steps to target per seed, final gaps per seed
        ("none", 0.1): ([50, 60, 70], [0.05, 0.06, 0.07]),
        ("none", 0.5): ([None] * 3, [0.2, 0.2, 0.2]),
        ("torch", 0.1): ([40, 40, 40], [0.01, 0.01, 0.01]),
        ("torch", 0.5): ([10, 12, 14], [0.03, 0.03, 0.04]),
    }
    runs = [
        {"norm": n, "lr": lr, "batch_size": 64, "seed": s, "steps_to_target": st[s],
         "gen_gap": gaps[s]}
        for (n, lr), (st, gaps) in spec.items() for s in range(3)
    ]  # fmt: skip
    res = write_results(tmp_path / "b", runs, swept=("norm", "seed", "lr"))
    claims = all_claims(tables_of(res), TARGET)
    (speed,) = of(claims, "speedup")
    # none at 0.1 (60 on average) vs torch at 0.5 (12): 5x
    assert speed.estimate == pytest.approx(5.0) and speed.details == {"lr_none": 0.1, "lr_bn": 0.5}
    (reg,) = of(claims, "regularization")
    # gaps of none at 0.1 minus torch at 0.5, by seed: .02, .03, .03
    assert reg.estimate == pytest.approx(np.mean([0.02, 0.03, 0.03]))
    assert "each at its best lr: none 0.1, torch 0.5" in reg.text

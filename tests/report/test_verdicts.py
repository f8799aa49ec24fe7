"""The BN verdicts against hand computations on small hand-written results folders: matched fit
(a column), the final-test-accuracy verdict of fitted networks, the trend's per-seed slopes and
t-interval, one BN variant, ours ≡ torch's, power, each one's best lr (speed: fewest steps;
regularization: validation accuracy, or no choice without a validation split)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from report_synthetic import write_results
from test_tables import T975_2, tables_of

from bnexp.report import all_claims, build_report, load_summary
from bnexp.report.effects import equivalence_table, matched_fit
from bnexp.report.verdicts import _fit_note, equivalence

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

    # matched fit is a column, not the verdict: the verdict reads final test accuracy, and
    # these networks end at 0.94-0.95 train accuracy, short of measure.fit (0.97)
    (claim,) = of(all_claims(tables, TARGET), "regularization")
    assert claim.basis == "final test acc" and claim.verdict == "not determined"
    assert "not determined: not fitted (train acc 0.94 < 0.97)" in claim.text
    assert claim.details["matched_fit_gap_effect"] == pytest.approx(diffs.mean())


def fitted_runs(none_acc, bn_acc):
    """Runs that fit the training set (train acc 0.99) with the given final test accuracies."""
    return [
        {"norm": norm, "batch_size": 64, "seed": s, "test_acc": a, "gen_gap": 0.99 - a}
        for norm, accs in (("none", none_acc), ("torch", bn_acc)) for s, a in enumerate(accs)
    ]  # fmt: skip


def test_regularization_reads_final_test_accuracy_of_fitted_networks(tmp_path):
    none, bn = [0.90, 0.91, 0.92, 0.90], [0.92, 0.92, 0.94, 0.93]
    tables = tables_of(write_results(tmp_path / "f", fitted_runs(none, bn)))
    (claim,) = of(all_claims(tables, TARGET), "regularization")
    d = np.array(bn) - np.array(none)  # .02, .01, .02, .03
    se = d.std(ddof=1) / 2
    assert claim.estimate == pytest.approx(d.mean()) and claim.n == 4
    assert (claim.ci_low, claim.ci_high) == pytest.approx(
        (d.mean() - T975_3 * se, d.mean() + T975_3 * se)
    )
    assert claim.verdict == "supported" and claim.basis == "final test acc"
    # power from the same spread and the same t quantile as the interval
    assert claim.mde == pytest.approx((T975_3 + 0.9784723123633045) * se)
    # the measured fit is the verdict's gate: with measure.fit 0.995 the same runs are unfitted
    (strict,) = of(all_claims(tables, TARGET, fit=0.995), "regularization")
    assert strict.verdict == "not determined" and "(train acc 0.99 < 0.995)" in strict.text


def test_regularization_also_reads_the_curve_at_the_lowest_train_loss_both_reach(tmp_path):
    """none's train loss falls to 0.2, BN's to 0.05: both are read where train loss <= 0.2."""
    runs = []
    for s in range(3):
        none_rows = [(0, 0.1, 0.1, 2.0, 2.0), (10, 0.99, 0.80 + s / 100, 0.2, 0.9)]
        bn_rows = [(0, 0.1, 0.1, 2.0, 2.0), (5, 0.99, 0.85 + s / 50, 0.15, 0.7),
                   (10, 0.99, 0.70, 0.05, 1.5)]  # fmt: skip
        runs.append({"norm": "none", "batch_size": 64, "seed": s, "gen_gap": 0.19,
                     "test_acc": 0.80, "metrics": none_rows})  # fmt: skip
        runs.append({"norm": "torch", "batch_size": 64, "seed": s, "gen_gap": 0.29,
                     "test_acc": 0.70, "metrics": bn_rows})  # fmt: skip
    res = write_results(tmp_path / "c", runs)
    report = build_report(res)  # the trajectory comes from metrics.csv (build_report reads it)
    (claim,) = of(report.claims, "regularization")
    # at train loss 0.2: none's row at step 10, BN's first row <= 0.2 at step 5
    d = np.array([0.85 + s / 50 - (0.80 + s / 100) for s in range(3)])
    assert claim.details["curve_acc_effect"] == pytest.approx(d.mean())
    assert "at the lowest train loss both reach" in claim.text
    assert claim.estimate == pytest.approx(-0.10)  # the final reading, the verdict's


# --------------------------------------------------------------------------- trend

EFFECTS = {0: [0.04, 0.02, 0.00], 1: [0.05, 0.03, 0.01], 2: [0.03, 0.02, 0.01]}  # at 16, 32, 64


def trend_runs(shift=0.0, bn_train=0.99, seeds=EFFECTS):
    """Fitted runs (train acc 0.99, or bn_train for BN at batch 64) whose test acc(BN) - test
    acc(none) is EFFECTS[seed] + shift at batch sizes 16, 32, 64."""
    runs = []
    for s in seeds:
        for b, e in zip((16, 32, 64), EFFECTS[s], strict=True):
            bn_acc = 0.9 + e + shift
            train = bn_train if b == 64 else 0.99
            runs.append({"norm": "none", "batch_size": b, "seed": s, "test_acc": 0.9,
                         "gen_gap": 0.09})  # fmt: skip
            runs.append({"norm": "torch", "batch_size": b, "seed": s, "test_acc": bn_acc,
                         "gen_gap": train - bn_acc})  # fmt: skip
    return runs


# every seed's own slope per doubling: -0.02, -0.02, -0.01
SEED_SLOPES = np.array([-0.02, -0.02, -0.01])


def test_trend_is_the_t_interval_of_per_seed_slopes(tmp_path):
    tables = tables_of(write_results(tmp_path / "t", trend_runs()))
    tr = tables["trend"]
    assert set(tr["basis"]) == {"final test acc"}
    means = np.mean(list(EFFECTS.values()), axis=0)  # .04, .0233, .0067
    assert tr.sort_values("x")["effect_mean"].to_numpy() == pytest.approx(means)
    r = tr.iloc[0]
    half = T975_2 * SEED_SLOPES.std(ddof=1) / math.sqrt(3)
    assert r["slope"] == pytest.approx(SEED_SLOPES.mean()) and r["slope_seeds"] == 3
    assert (r["slope_ci_low"], r["slope_ci_high"]) == pytest.approx(
        (SEED_SLOPES.mean() - half, SEED_SLOPES.mean() + half)
    )
    (claim,) = of(all_claims(tables, TARGET), "trend")
    assert claim.verdict == "supported" and claim.details["direction"] == "fades"
    assert " — fades; these seeds detect" in claim.text and claim.norm == "torch"
    assert claim.estimate == pytest.approx(SEED_SLOPES.mean()) and claim.mde > 0


def test_a_trend_where_an_arm_has_not_fitted_is_not_determined(tmp_path):
    tables = tables_of(write_results(tmp_path / "u", trend_runs(bn_train=0.65)))
    (claim,) = of(all_claims(tables, TARGET), "trend")
    assert claim.verdict == "not determined" and claim.mde is None
    assert "not determined: not fitted (train acc 0.65 < 0.97 at 64)" in claim.text


def test_a_falling_effect_that_is_not_positive_is_not_fading(tmp_path):
    """Effects <= 0 that fall further (BN the less accurate, more so at large batches) have a
    negative slope, yet no regularization fades: not "fades", and not supported."""
    tables = tables_of(write_results(tmp_path / "n", trend_runs(shift=-0.05)))
    (claim,) = of(all_claims(tables, TARGET), "trend")
    assert claim.estimate == pytest.approx(SEED_SLOPES.mean())  # the slope as before
    assert claim.ci_high < 0 and claim.verdict == "not supported"
    assert claim.details["direction"] == "falls" and "falls below zero" in claim.text


def test_a_trend_over_two_seeds_states_its_interval_and_judges_it(tmp_path):
    """Two seeds give a t-interval with 1 df (wide but calibrated): printed and judged, never
    printed and then called too few seeds."""
    tables = tables_of(write_results(tmp_path / "two", trend_runs(seeds=(0, 2))))
    (claim,) = of(all_claims(tables, TARGET), "trend")
    slopes = np.array([-0.02, -0.01])
    half = 12.706204736174698 * slopes.std(ddof=1) / math.sqrt(2)  # t_{0.975, 1}
    assert claim.n == 2 and (claim.ci_low, claim.ci_high) == pytest.approx(
        (slopes.mean() - half, slopes.mean() + half)
    )
    assert claim.verdict == "not supported" and f"[{claim.ci_low:+.4f}, " in claim.text
    assert "3 or more" not in claim.text and "needs" not in claim.text


def test_ghost_trend_against_full_batch_statistics(tmp_path):
    runs = [{"norm": "none", "batch_size": 64, "seed": s, "gen_gap": 0.1} for s in range(3)]
    for s in range(3):
        for m, g in ((16, 0.02), (32, 0.03), (64, 0.04)):
            acc = 0.94 - g - 0.001 * s
            runs.append({"norm": "custom", "batch_size": 64, "seed": s, "ghost": m,
                         "test_acc": acc, "gen_gap": 0.99 - acc})  # fmt: skip
    res = write_results(tmp_path / "g", runs, swept=("norm", "seed", "ghost"))
    tr = tables_of(res)["trend"]
    g = tr[tr["kind"] == "ghost"].sort_values("x")
    # acc(m) - acc(64) = .02, .01, 0 in every seed: slope -0.01 per doubling, no spread at all
    assert g["effect_mean"].to_numpy() == pytest.approx([0.02, 0.01, 0.0], abs=1e-12)
    assert g["slope"].iloc[0] == pytest.approx(-0.01)
    assert (g["slope_ci_low"].iloc[0], g["slope_ci_high"].iloc[0]) == pytest.approx((-0.01, -0.01))
    (claim,) = of(all_claims(tables_of(res), TARGET), "trend")
    assert claim.norm == "custom" and claim.details["kind"] == "ghost"
    assert claim.details["direction"] == "fades"


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


def lr_runs(val=None):
    """none and torch at lrs 0.1 and 0.5, fitted (train acc 0.99); val: (norm, lr) -> val acc."""
    spec = {  # (norm, lr) -> steps to target per seed, final test acc per seed
        ("none", 0.1): ([50, 60, 70], [0.90, 0.91, 0.92]),
        ("none", 0.5): ([None] * 3, [0.80, 0.80, 0.80]),
        ("torch", 0.1): ([40, 40, 40], [0.95, 0.95, 0.96]),
        ("torch", 0.5): ([10, 12, 14], [0.93, 0.93, 0.94]),
    }
    return [
        {"norm": n, "lr": lr, "batch_size": 64, "seed": s, "steps_to_target": st[s],
         "test_acc": acc[s], "gen_gap": 0.99 - acc[s],
         **({"val_acc": val[(n, lr)]} if val else {})}
        for (n, lr), (st, acc) in spec.items() for s in range(3)
    ]  # fmt: skip


def test_speed_picks_each_variants_lr_by_steps_and_regularization_makes_no_test_choice(
    tmp_path,
):
    res = write_results(tmp_path / "b", lr_runs(), swept=("norm", "seed", "lr"))
    claims = all_claims(tables_of(res), TARGET)
    (speed,) = of(claims, "speedup")
    # none at 0.1 (50, 60, 70) vs torch at 0.5 (10, 12, 14): 5x in every seed
    assert speed.estimate == pytest.approx(5.0)
    assert (speed.details["lr_none"], speed.details["lr_bn"]) == (0.1, 0.5)
    # no validation split: no lr is chosen on test numbers; each lr cell judged, one sentence
    regs = of(claims, "regularization")
    assert sorted(c.cell["train.lr"] for c in regs) == [0.1, 0.5]
    assert "no validation split, so no lr is chosen" in regs[0].text
    assert "2 cells, Holm-corrected" in regs[0].text


def test_regularization_picks_each_arms_lr_on_validation_accuracy(tmp_path):
    # validation prefers 0.1 for none and 0.5 for torch (the test set would prefer torch 0.1)
    val = {("none", 0.1): 0.9, ("none", 0.5): 0.8, ("torch", 0.1): 0.90, ("torch", 0.5): 0.95}
    res = write_results(tmp_path / "v", lr_runs(val), swept=("norm", "seed", "lr"))
    (reg,) = of(all_claims(tables_of(res), TARGET), "regularization")
    # none at 0.1 (.90, .91, .92) vs torch at 0.5 (.93, .93, .94), by seed: .03, .02, .02
    assert reg.estimate == pytest.approx(np.mean([0.03, 0.02, 0.02]))
    assert "each arm at its best lr on validation accuracy" in reg.text
    assert "(lr 0.1 vs 0.5)" in reg.text and "no validation split" not in reg.text


# --------------------------------------------------------------------------- one source of words


def test_a_censored_speedup_reads_the_same_everywhere(tmp_path):
    """No run reached the target: "not determined: no run reached the target", with no ratio,
    in claims.json, report.md and the terminal alike (the Claim's text is the one source)."""
    import json
    import re

    from rich.console import Console

    from bnexp.report import print_report

    runs = [
        {"norm": n, "batch_size": 64, "seed": s, "gen_gap": 0.05, "steps_to_target": None}
        for n in ("none", "torch") for s in range(3)
    ]  # fmt: skip
    res = write_results(tmp_path / "c", runs)
    report = build_report(res)
    (speed,) = of(report.claims, "speedup")
    assert speed.verdict == "not determined" and speed.estimate is None
    assert "not determined: no run reached the target" in speed.text and "×" not in speed.text
    saved = json.loads((res / "claims.json").read_text(encoding="utf-8"))
    assert [c["text"] for c in saved] == [c.text for c in report.claims]
    md = (res / "report.md").read_text(encoding="utf-8")
    console = Console(record=True, width=200, force_terminal=False)
    print_report(report, console)

    def words(text: str) -> str:
        return " ".join(re.sub(r"\*\*", "", text).split())

    shown = words(console.export_text())
    for sentence in report.sentences:
        assert f"- {sentence}\n" in md
        assert words(sentence) in shown, sentence


def test_the_budget_is_stated_from_the_config():
    from bnexp.report.verdicts import budget_text

    assert budget_text({"train": {"steps": 2400, "epochs": 10}}, []) == "2400 steps, lr rule none"
    sqrt = {"train": {"epochs": 40, "lr_scaling": {"rule": "sqrt"}}}
    assert budget_text(sqrt, ["batch_size"]) == "40 epochs, lr rule sqrt"
    swept = ["batch_size", "train.lr_scaling.rule"]
    assert budget_text(sqrt, swept) == "40 epochs, lr rule per cell"
    assert budget_text({}, []) == ""


def test_cells_that_hold_the_same_runs_are_one_cell(tmp_path):
    """A swept key the runs ignore (here the ghost size: the BN runs at 16 and 32 share their
    ids, as population statistics' runs do) plans one set of runs in two cells: the report
    judges it once (one cell in the Holm family, its key null) and never compares it with
    itself. By hand: BN - none = .02, .03, .01 by seed."""
    runs = [{"norm": "none", "batch_size": 64, "seed": s, "ghost": m, "run_id": f"none{s}",
             "test_acc": 0.90, "gen_gap": 0.09} for m in (16, 32) for s in range(3)]
    runs += [{"norm": "custom", "batch_size": 64, "seed": s, "ghost": m, "run_id": f"pop{s}",
              "test_acc": 0.90 + d, "gen_gap": 0.09 - d}
             for m in (16, 32) for s, d in enumerate((0.02, 0.03, 0.01))]  # fmt: skip
    res = write_results(tmp_path / "shared", runs, swept=("norm", "seed", "ghost"))
    report = build_report(res)
    (reg,) = of(report.claims, "regularization")
    assert reg.n == 3 and reg.estimate == pytest.approx(0.02)
    assert "ghost_batch_size=null" in reg.text and "cells" not in reg.text  # one cell, no Holm
    assert reg.to_dict()["cell"] == {"batch_size": 64, "model.ghost_batch_size": None}
    assert not of(report.claims, "ghost_batch") and not of(report.claims, "trend")
    assert len(load_summary(res)) == 12 and len(report.summary) == 6  # each run once


def test_a_fit_just_below_the_bar_is_never_shown_as_the_bar():
    assert _fit_note(0.65, 0.97) == "not fitted (train acc 0.65 < 0.97)"
    assert _fit_note(0.966, 0.97) == "not fitted (train acc 0.966 < 0.97)"  # .2f: "0.97 < 0.97"
    assert _fit_note(0.96995, 0.97) == "not fitted (train acc 0.9699 < 0.97)"  # .4f rounds down
    assert _fit_note(0.97, 0.97) is None and _fit_note(float("nan"), 0.97) is not None

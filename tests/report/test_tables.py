"""The result tables against numbers computed by hand from the synthetic folder (no plots)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from report_synthetic import GAP, make_results

from bnexp.report import compute_tables, load_summary, run_config, run_csvs
from bnexp.report.cells import merge_shared_cells
from bnexp.report.effects import matched_fit, with_matched_fit
from bnexp.report.load import run_targets
from bnexp.report.tables import PAIR_COUNTS, for_csv

T975_2 = 4.302652729911275  # Student t_{0.975, 2}: three seeds


def tables_of(results):
    df = load_summary(results)
    target = run_config(results, df)["measure"]["target"]
    metrics = run_csvs(results, df, "metrics.csv")
    df = with_matched_fit(df, matched_fit(metrics, run_targets(results, df)))
    probes = run_csvs(results, df, "probes.csv")
    noise = run_csvs(results, df, "bn_noise.csv")
    return compute_tables(df, probes, noise, target)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return tables_of(make_results(tmp_path_factory.mktemp("tables") / "exp"))


def _row(frame: pd.DataFrame, **where) -> pd.Series:
    sel = np.logical_and.reduce([frame[k] == v for k, v in where.items()])
    assert sel.sum() == 1, f"expected one row for {where}, found {sel.sum()}"
    return frame[sel].iloc[0]


def test_speedup_numbers_and_censoring(tables):
    speed = tables["speedup"]
    none = _row(speed, norm="none", batch_size=64, **{"train.lr": 0.1})
    assert (none["runs"], none["reached"], none["censored"]) == (3, 2, 1)
    # the censored run enters as its length (200): a lower bound on the mean, shown as such
    assert none["steps_mean"] == pytest.approx(140.0)
    assert none["steps_to_target"] == "≥ 140 (1/3 > 200)"
    bn = _row(speed, norm="torch", batch_size=64, **{"train.lr": 0.1})
    # the geometric mean of the per-seed ratios 100/10, 120/20, 200/20 (the censored run at its
    # length): a lower bound, so the interval keeps its low end only
    logs = np.log([10.0, 6.0, 10.0])
    half = T975_2 * logs.std(ddof=1) / math.sqrt(3)
    assert bn["speedup"] == pytest.approx(600 ** (1 / 3)) and bn["speedup_bound"] == "lower"
    assert bn["speedup_ci_low"] == pytest.approx(math.exp(logs.mean() - half))
    assert bn["speedup_ci_high"] == math.inf
    assert bn["speedup_vs_none"] == f"≥ {600 ** (1 / 3):.2f}× (≥ {bn['speedup_ci_low']:.2f})"
    exact = _row(speed, norm="torch", batch_size=32, **{"train.lr": 0.1})
    ratios = np.array([150, 160, 170]) / 30
    assert exact["speedup"] == pytest.approx(np.exp(np.log(ratios).mean()))
    assert exact["speedup_bound"] == "exact"
    t = T975_2 * 10 / math.sqrt(3)  # s = 10 for (150, 160, 170)
    low = _row(speed, norm="none", batch_size=32, **{"train.lr": 0.1})
    assert (low["steps_ci_low"], low["steps_ci_high"]) == pytest.approx((160 - t, 160 + t))
    # diverged runs never reached: censored at the cell's full length (200 steps), not at the
    # diverged step
    div = _row(speed, norm="none", batch_size=32, **{"train.lr": 0.5})
    assert div["diverged"] == 3 and div["steps_to_target"] == "> 200 (3/3 censored)"


def test_best_lr_and_divergence(tables):
    best = tables["best_lr"]
    none32 = _row(best, norm="none", batch_size=32)
    assert none32["best_lr"] == 0.1 and none32["diverged_at"] == "0.5 (3/3)"
    assert none32["smallest_diverged_lr"] == 0.5
    torch32 = _row(best, norm="torch", batch_size=32)
    assert torch32["best_lr"] == 0.5 and torch32["diverged_at"] == "none"
    # none at its best lr (0.1: 150, 160, 170) vs torch at its best (0.5: 15, 16, 17)
    assert torch32["speedup_at_best_lr"] == pytest.approx(10.0)
    assert torch32["speedup_at_best_lr_pairs"] == 3


def test_regularization_effect_is_paired_by_seed(tables):
    reg = tables["regularization"]
    bn = _row(reg, norm="torch", batch_size=64, **{"train.lr": 0.1})
    diffs = np.array(GAP["none"]) - np.array(GAP["torch"])  # .02, .03, .02
    half = T975_2 * diffs.std(ddof=1) / math.sqrt(3)
    assert bn["effect_mean"] == pytest.approx(diffs.mean())
    assert (bn["effect_ci_low"], bn["effect_ci_high"]) == pytest.approx(
        (diffs.mean() - half, diffs.mean() + half)
    )
    assert bn["effect_n"] == 3
    assert bn["gen_gap_mean"] == pytest.approx(np.mean(GAP["torch"]))
    # the diverged none cell is left out of the gaps and counted
    div = _row(reg, norm="none", batch_size=32, **{"train.lr": 0.5})
    assert div["runs"] == 0 and div["diverged"] == 3


def test_ghost_batch_sweep_gets_its_effect(tmp_path):
    reg = tables_of(make_results(tmp_path / "ghost", ghost=True))["regularization"]
    assert "model.ghost_batch_size" in reg.columns
    small = _row(
        reg, norm="torch", batch_size=64, **{"train.lr": 0.1, "model.ghost_batch_size": 16}
    )
    # gap(32) - gap(16) = -0.01 in every seed, by construction
    assert small["effect_vs_full_stats_mean"] == pytest.approx(-0.01)
    assert small["effect_vs_full_stats_n"] == 3
    # test acc = 0.99 - gap: acc(16) - acc(full-batch statistics, 32) = -0.01 in every seed
    assert small["acc_effect_vs_full_stats_mean"] == pytest.approx(-0.01)


def test_bn_noise_slopes(tables):
    bn = tables["bn_noise"]
    assert bn["mean_noise_slope"].to_numpy() == pytest.approx(-0.5)
    assert bn["var_noise_slope"].to_numpy() == pytest.approx(-0.5)
    # the measured mini-batch size, not the training batch size
    assert set(bn["batch_size"]) == {4, 16, 64}


def test_pair_counts_stay_out_of_the_csv_files(tables):
    for name, frame in tables.items():
        kept = for_csv(frame)
        assert not set(PAIR_COUNTS) & set(kept.columns), name
        assert list(kept.columns) == [c for c in frame.columns if c not in PAIR_COUNTS], name


def test_a_run_shared_by_several_cells_is_one_pair_per_seed_in_each():
    """A no-BN run planned in two ghost cells (a shared baseline) is one row of each cell, read
    at that cell's own common train-loss level: never a product of the cells (which would count
    3 seeds as 9 and shrink the interval)."""
    from bnexp.report.effects import COMMON_COLUMNS, at_common_loss, with_common_loss

    rows, metrics = [], []
    for seed in range(3):
        for ghost in (16, 32):
            for norm in ("none", "custom"):
                rid = f"none{seed}" if norm == "none" else f"g{ghost}s{seed}"
                rows.append(
                    {
                        "run_id": rid,
                        "norm": norm,
                        "seed": seed,
                        "batch_size": 64,
                        "model.ghost_batch_size": ghost,
                        "diverged": False,
                    }
                )
        for rid, low in [(f"none{seed}", 0.5), (f"g16s{seed}", 0.2), (f"g32s{seed}", 0.3)]:
            for step, loss in enumerate([1.0, low]):
                metrics.append(
                    {
                        "run_id": rid,
                        "step": step,
                        "train_loss": loss,
                        "test_acc": 0.5 + 0.1 * step,
                        "test_loss": 2.0 - step,
                    }
                )
    df = pd.DataFrame(rows)
    out = with_common_loss(df, at_common_loss(pd.DataFrame(metrics), df))
    assert len(out) == len(df) == 12
    none = out[out["norm"] == "none"]
    assert none["common_train_loss"].tolist() == [0.5] * 6  # the level both arms reach
    assert set(COMMON_COLUMNS) <= set(out.columns)


def test_only_cells_that_hold_the_very_same_runs_merge():
    """As cifar10_regularization.yaml plans them: under bn_stats=population the ghost size is
    ignored (one run id per seed at every size), under bn_stats=batch it is not; none ignores
    both keys but shares its runs with cells whose BN runs differ, so those cells stay."""
    rows = []
    for stats in ("batch", "population"):
        for m in (16, 32):
            for seed in (0, 1):
                bn = f"pop{seed}" if stats == "population" else f"g{m}-{seed}"
                for norm, rid in (("none", f"none{seed}"), ("custom", bn)):
                    rows.append({"run_id": rid, "norm": norm, "seed": seed, "batch_size": 128,
                                 "model.bn_stats": stats, "model.ghost_batch_size": m})  # fmt: skip
    df = pd.DataFrame(rows)
    merged = merge_shared_cells(df)
    cells = merged[["model.bn_stats", "model.ghost_batch_size"]].drop_duplicates()
    assert cells.fillna(-1).values.tolist() == [["batch", 16], ["batch", 32], ["population", -1]]
    pop = merged[merged["model.bn_stats"] == "population"]
    assert sorted(pop["run_id"]) == ["none0", "none1", "pop0", "pop1"]  # each run once
    assert len(merged) == 12 and merge_shared_cells(merged).equals(merged)  # nothing left to merge
    assert merge_shared_cells(df[df["model.bn_stats"] == "batch"]).equals(
        df[df["model.bn_stats"] == "batch"]
    )

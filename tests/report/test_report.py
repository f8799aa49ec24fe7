"""`bnexp report` on a synthetic results folder: every table with its columns, every plot a PNG."""

from __future__ import annotations

import math

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from bnexp.cli import app
from bnexp.report import build_report
from bnexp.results import SUMMARY_COLUMNS
from bnexp.run.probes import NOISE_COLUMNS, PROBE_COLUMNS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# steps_to_target by (norm, batch_size, lr) -> per seed; None = never reached (censored)
STEPS = {
    ("none", 64, 0.1): [100, 120, None],
    ("torch", 64, 0.1): [10, 20, 20],
    ("none", 64, 0.5): [80, 90, 100],
    ("torch", 64, 0.5): [8, 9, 10],
    ("none", 32, 0.1): [150, 160, 170],
    ("torch", 32, 0.1): [30, 30, 30],
    ("none", 32, 0.5): [None, None, None],  # diverged
    ("torch", 32, 0.5): [15, 16, 17],
}
GAP = {"none": [0.05, 0.06, 0.07], "torch": [0.03, 0.03, 0.05]}


def make_results(root, ghost: bool = False):
    """A results folder in the layout bnexp run writes, with hand-chosen numbers."""
    root.mkdir(parents=True)
    rows = []
    for (norm, bs, lr), steps in STEPS.items():
        for ghost_size in [16, 32] if ghost else [None]:
            for seed, s in enumerate(steps):
                diverged = norm == "none" and lr == 0.5 and bs == 32
                rid = f"{norm}-{bs}-{lr}-{seed}-{ghost_size}"
                gap = GAP[norm][seed] + (0.01 if ghost_size == 16 else 0.0)
                row = {
                    "run_id": rid,
                    "norm": norm,
                    "batch_size": bs,
                    "lr": lr,
                    "seed": seed,
                    "final_train_acc": 0.99,
                    "final_test_acc": 0.99 - gap,
                    "final_train_loss": 0.05,
                    "final_test_loss": 0.05 + 2 * gap,
                    "gen_gap": gap,
                    "loss_gap": 2 * gap,
                    "best_test_acc": 0.99 - gap,
                    "steps_to_target": s,
                    "epochs_to_target": None if s is None else s / 10,
                    "time_to_target_s": None if s is None else s / 100,
                    "diverged": diverged,
                    "diverged_step": 7 if diverged else None,
                    "steps": 7 if diverged else 200,
                    "epochs": 20,
                    "wall_s": 3.0,
                    "train_s": 2.0,
                    "eval_s": 1.0,
                    "device": "cpu",
                    "model.norm": norm,
                    "train.batch_size": bs,
                    "train.lr": lr,
                    "train.seed": seed,
                }
                if ghost:
                    row["model.ghost_batch_size"] = ghost_size
                rows.append(row)
                run = root / "runs" / rid
                run.mkdir(parents=True)
                (run / "config.yaml").write_text(
                    yaml.safe_dump({"measure": {"target": {"metric": "train_acc", "value": 0.95}}})
                )
                steps_axis = np.arange(0, 201, 50)
                pd.DataFrame(
                    {
                        "epoch": steps_axis / 10,
                        "step": steps_axis,
                        "lr": lr,
                        "train_loss": 1 / (1 + steps_axis),
                        "train_acc": steps_axis / 200,
                        "test_acc": steps_axis / 210,
                        "test_loss": 1.0,
                    }
                ).to_csv(run / "metrics.csv", index=False)
                probes = []
                sites = ["z", "z_tilde"] if norm != "none" else ["z"]
                for step in (0, 10, 20):
                    for site in sites:
                        for unit in ("0", "all"):
                            r = {
                                "step": step,
                                "layer": 3,
                                "site": site,
                                "unit": unit,
                                "p15": -1 + step / 100,
                                "p50": step / 100,
                                "p85": 1 + step / 100,
                                "mean": step / 100,
                                "std": 0.5,
                            }
                            if unit == "all" and step:
                                r.update(drift_p50=0.1 if site == "z" else 0.01, drift_std=0.02)
                            probes.append(r)
                    if step:
                        probes.append(
                            {
                                "step": step,
                                "layer": 3,
                                "site": "ics",
                                "unit": "all",
                                "ics_l2": 0.1,
                                "ics_cos": 0.9,
                                "grad_norm": 1.0,
                            }
                        )
                pd.DataFrame(probes, columns=PROBE_COLUMNS).to_csv(run / "probes.csv", index=False)
                if norm != "none":
                    noise = [
                        {
                            "layer": layer,
                            "batch_size": m,
                            "samples": 10,
                            "channels": 4,
                            "n_train": 1000,
                            "mean_noise": m**-0.5,
                            "var_noise": (2 / m) ** 0.5,
                            "expected_mean_noise": m**-0.5,
                        }
                        for layer in (1, 2)
                        for m in (4, 16, 64)
                    ]
                    pd.DataFrame(noise, columns=NOISE_COLUMNS).to_csv(
                        run / "bn_noise.csv", index=False
                    )
    columns = SUMMARY_COLUMNS + [c for c in rows[0] if c not in SUMMARY_COLUMNS]
    pd.DataFrame(rows, columns=columns).to_csv(root / "summary.csv", index=False)
    return root


EXPECTED_COLUMNS = {
    "speedup": [
        "batch_size",
        "train.lr",
        "norm",
        "runs",
        "reached",
        "censored",
        "diverged",
        "steps_to_target",
        "steps_mean",
        "steps_ci_low",
        "steps_ci_high",
        "epochs_mean",
        "time_s_mean",
        "speedup",
        "speedup_ci_low",
        "speedup_ci_high",
        "speedup_bound",
        "speedup_pairs",
        "speedup_vs_none",
        "time_speedup",
        "best_lr",
        "diverged_at",
    ],
    "best_lr": [
        "batch_size",
        "norm",
        "best_lr",
        "steps_at_best_lr",
        "diverged_at",
        "smallest_diverged_lr",
        "speedup_at_best_lr",
        "speedup_at_best_lr_ci_low",
        "speedup_at_best_lr_ci_high",
    ],
    "regularization": [
        "batch_size",
        "train.lr",
        "norm",
        "runs",
        "diverged",
        "gen_gap_mean",
        "gen_gap_ci_low",
        "gen_gap_ci_high",
        "loss_gap_mean",
        "loss_gap_ci_low",
        "loss_gap_ci_high",
        "effect_mean",
        "effect_ci_low",
        "effect_ci_high",
    ],
    "bn_noise": [
        "norm",
        "layer",
        "batch_size",
        "runs",
        "mean_noise_mean",
        "mean_noise_ci_low",
        "var_noise_mean",
        "expected_mean_noise",
        "mean_noise_slope",
        "var_noise_slope",
        "expected_slope",
    ],
    "shift": [
        "batch_size",
        "train.lr",
        "norm",
        "site",
        "layer",
        "runs",
        "drift_p50_mean",
        "drift_p50_ci_low",
        "drift_std_mean",
        "drift_p50_rel_mean",
    ],
    "ics": [
        "batch_size",
        "train.lr",
        "norm",
        "layer",
        "runs",
        "ics_l2_mean",
        "ics_cos_mean",
        "ics_rel_mean",
    ],
}
PLOTS = ["accuracy", "speedup", "gen_gap", "bn_noise", "shift_percentiles", "shift_drift", "ics"]


def _row(frame: pd.DataFrame, **where) -> pd.Series:
    sel = np.logical_and.reduce([frame[k] == v for k, v in where.items()])
    assert sel.sum() == 1, f"expected one row for {where}, found {sel.sum()}"
    return frame[sel].iloc[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One synthetic results folder and its report, shared by the tests below (plots take seconds)."""
    results = make_results(tmp_path_factory.mktemp("report") / "exp")
    return results, build_report(results)


@pytest.fixture
def results(built):
    return built[0]


def test_report_writes_every_table_and_plot(built):
    results, report = built
    for name, columns in EXPECTED_COLUMNS.items():
        frame = pd.read_csv(results / "tables" / f"{name}.csv")
        missing = [c for c in columns if c not in frame.columns]
        assert not missing, f"tables/{name}.csv lacks {missing}"
    for name in PLOTS:
        path = results / "plots" / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, (
            f"{path}: shape {image.shape}"
        )
    md = (results / "report.md").read_text()
    for name in PLOTS:
        assert f"plots/{name}.png" in md
    assert "**Speed-up**" in md and "**Regularization**" in md and "**BN noise**" in md
    assert len(report.plots) == len(PLOTS)


def test_speedup_numbers_and_censoring(built):
    speed = built[1].tables["speedup"]
    none = _row(speed, norm="none", batch_size=64, **{"train.lr": 0.1})
    assert (none["runs"], none["reached"], none["censored"]) == (3, 2, 1)
    # the censored run enters as its length (200): a lower bound on the mean, shown as such
    assert (
        none["steps_mean"] == pytest.approx(140.0)
        and none["steps_to_target"] == "≥ 140 (1/3 > 200)"
    )
    bn = _row(speed, norm="torch", batch_size=64, **{"train.lr": 0.1})
    assert bn["speedup"] == pytest.approx(140 / (50 / 3)) and bn["speedup_bound"] == "lower"
    assert bn["speedup_vs_none"].startswith("≥ 8.40×")
    assert bn["speedup_ci_low"] <= bn["speedup"] <= bn["speedup_ci_high"]
    exact = _row(speed, norm="torch", batch_size=32, **{"train.lr": 0.1})
    assert exact["speedup"] == pytest.approx(160 / 30) and exact["speedup_bound"] == "exact"
    t = (
        4.302652729911275 * 10 / math.sqrt(3)
    )  # t_{0.975, 2} * s / sqrt(n), s = 10 for (150, 160, 170)
    low = _row(speed, norm="none", batch_size=32, **{"train.lr": 0.1})
    assert (low["steps_ci_low"], low["steps_ci_high"]) == pytest.approx((160 - t, 160 + t))
    # diverged runs never reached: censored at the cell's full length (200 steps), not at the diverged step
    div = _row(speed, norm="none", batch_size=32, **{"train.lr": 0.5})
    assert div["diverged"] == 3 and div["steps_to_target"] == "> 200 (3/3 censored)"


def test_best_lr_and_divergence(built):
    best = built[1].tables["best_lr"]
    none32 = _row(best, norm="none", batch_size=32)
    assert (
        none32["best_lr"] == 0.1
        and none32["diverged_at"] == "0.5 (3/3)"
        and none32["smallest_diverged_lr"] == 0.5
    )
    torch32 = _row(best, norm="torch", batch_size=32)
    assert torch32["best_lr"] == 0.5 and torch32["diverged_at"] == "none"
    # none at its best lr (0.1: 150, 160, 170) vs torch at its best (0.5: 15, 16, 17)
    assert torch32["speedup_at_best_lr"] == pytest.approx(10.0)


def test_regularization_effect_is_paired_by_seed(built):
    reg = built[1].tables["regularization"]
    bn = _row(reg, norm="torch", batch_size=64, **{"train.lr": 0.1})
    diffs = np.array(GAP["none"]) - np.array(GAP["torch"])  # .02, .03, .02
    half = 4.302652729911275 * diffs.std(ddof=1) / math.sqrt(3)
    assert bn["effect_mean"] == pytest.approx(diffs.mean())
    assert (bn["effect_ci_low"], bn["effect_ci_high"]) == pytest.approx(
        (diffs.mean() - half, diffs.mean() + half)
    )
    assert bn["gen_gap_mean"] == pytest.approx(np.mean(GAP["torch"]))
    # the diverged none cell is left out of the gaps and counted
    div = _row(reg, norm="none", batch_size=32, **{"train.lr": 0.5})
    assert div["runs"] == 0 and div["diverged"] == 3


def test_ghost_batch_sweep_gets_its_effect_and_plot(tmp_path):
    results = make_results(tmp_path / "ghost", ghost=True)
    report = build_report(results)
    reg = report.tables["regularization"]
    assert "model.ghost_batch_size" in reg.columns and "effect_vs_full_stats_mean" in reg.columns
    small = _row(
        reg, norm="torch", batch_size=64, **{"train.lr": 0.1, "model.ghost_batch_size": 16}
    )
    assert small["effect_vs_full_stats_mean"] == pytest.approx(
        -0.01
    )  # gap(32) - gap(16), by construction
    assert (results / "plots" / "gen_gap_ghost.png").read_bytes()[:8] == PNG_SIGNATURE


def test_bn_noise_slopes(built):
    bn = built[1].tables["bn_noise"]
    assert bn["mean_noise_slope"].to_numpy() == pytest.approx(-0.5)
    assert bn["var_noise_slope"].to_numpy() == pytest.approx(-0.5)
    assert set(bn["batch_size"]) == {
        4,
        16,
        64,
    }  # the measured mini-batch size, not the training batch size


def test_cli_report_and_its_error(results, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["report", str(results)])
    assert ok.exit_code == 0, ok.output
    assert "Speed-up" in ok.output and "report.md" in ok.output
    bad = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert bad.exit_code == 2
    assert "no summary.csv" in bad.output and "Traceback" not in bad.output


@pytest.mark.slow
def test_run_ends_with_the_report(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "model": {"arch": "mlp", "hidden": [8, 8], "activation": "sigmoid"},
                "train": {
                    "lr": 0.5,
                    "momentum": 0.9,
                    "batch_size": 128,
                    "epochs": 2,
                    "device": "cpu",
                },
                "measure": {
                    "target": {"metric": "train_acc", "value": 0.3},
                    "shift_probe": {"layer": 2, "every_steps": 3, "units": [0]},
                    "ics": {"layer": 2, "every_steps": 3},
                    "bn_noise": {"batch_sizes": [4, 16, 64], "samples": 10},
                },
                "sweep": {"model.norm": ["none", "torch"], "train.seed": [0, 1]},
            }
        )
    )
    out = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "results")])
    assert out.exit_code == 0, out.output
    res = tmp_path / "results" / "tiny"
    for name in ("speedup", "regularization", "bn_noise", "shift", "ics"):
        assert (res / "tables" / f"{name}.csv").exists(), name
    assert (res / "report.md").exists() and (res / "plots" / "shift_percentiles.png").exists()

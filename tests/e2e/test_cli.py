"""`bnexp run` / `bnexp validate` end to end through typer's CliRunner, into a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from bnexp.cli import app

runner = CliRunner()

TINY = """\
name: tiny
data: {dataset: digits}
model: {arch: mlp, hidden: [16, 8], activation: relu}
train: {lr: 0.1, batch_size: 128, epochs: 2}
measure:
  target: {metric: train_acc, value: 0.5}
sweep:
  model.norm: [none, custom, torch]
  train.seed: [0, 1]
"""

METRICS = ["epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]
TIMING = [
    "epoch",
    "step",
    "wall_s",
    "train_s",
    "eval_s",
]  # wall times apart: metrics.csv is byte-reproducible
SUMMARY = [
    "run_id",
    "norm",
    "batch_size",
    "lr",
    "seed",
    "final_train_acc",
    "final_test_acc",
    "final_train_loss",
    "final_test_loss",
    "gen_gap",
    "best_test_acc",
    "steps_to_target",
    "epochs_to_target",
    "time_to_target_s",
    "diverged",
    "wall_s",
]


def test_run_writes_the_results_contract(tmp_path: Path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--set", "train.epochs=3"])
    assert result.exit_code == 0, result.output
    root = out / "tiny"
    assert "# bnexp experiment" in (root / "experiment.yaml").read_text()
    assert yaml.safe_load((root / "experiment.yaml").read_text())["train"]["epochs"] == 3

    plan = pd.read_csv(root / "plan.csv")
    assert list(plan.columns) == ["run_id", "model.norm", "train.seed"] and len(plan) == 6

    summary = pd.read_csv(root / "summary.csv")
    missing = set(SUMMARY) - set(summary.columns)
    assert not missing, f"summary.csv lacks {missing}"
    assert sorted(summary.run_id) == sorted(plan.run_id)
    assert (
        summary.gen_gap - (summary.final_train_acc - summary.final_test_acc)
    ).abs().max() < 1e-12

    for rid in plan.run_id:
        run = root / "runs" / rid
        resolved = yaml.safe_load((run / "config.yaml").read_text())
        assert resolved["train"]["epochs"] == 3 and "sweep" not in resolved
        metrics = pd.read_csv(run / "metrics.csv")
        assert list(metrics.columns) == METRICS
        assert list(pd.read_csv(run / "timing.csv").columns) == TIMING
        assert list(metrics.epoch) == [0, 1, 2, 3]  # an evaluation before training, then each epoch
        s = json.loads((run / "summary.json").read_text())
        assert s["status"] == "complete" and s["run_id"] == rid
        assert s["final_test_acc"] == metrics.test_acc.iloc[-1]
        if s["steps_to_target"] is not None:  # the first evaluation meeting the target
            first = metrics[metrics.train_acc >= 0.5].iloc[0]
            assert s["steps_to_target"] == first.step

    # no terminal (a log file, CI): a line per finished run, as rich draws no bar there
    for k in range(1, 7):
        assert f"run {k}/6: " in result.output
    # the comparison table is printed, one row per norm
    for norm in ("none", "custom", "torch"):
        assert norm in result.output

    # rerunning skips what is done and changes nothing
    before = (root / "summary.csv").read_bytes()
    again = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--set", "train.epochs=3"])
    assert again.exit_code == 0 and "skipped 6 run(s)" in again.output, again.output
    assert (root / "summary.csv").read_bytes() == before


def test_unreached_target_leaves_the_cell_empty(tmp_path: Path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    args = [
        "run",
        str(cfg),
        "--out",
        str(tmp_path),
        "--set",
        "train.epochs=1",
        "--set",
        "measure.target.value=1.01",
        "--set",
        "sweep.model.norm=[none]",
        "--set",
        "sweep.train.seed=[0]",
    ]
    assert runner.invoke(app, args).exit_code == 0
    summary = pd.read_csv(tmp_path / "tiny" / "summary.csv", keep_default_na=False)
    assert summary.steps_to_target.tolist() == [""] and summary.epochs_to_target.tolist() == [""]


def test_validate_misspelt_key_one_line_exit_2(tmp_path: Path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(TINY.replace("batch_size", "batch_sise"))
    result = runner.invoke(app, ["validate", str(cfg)])
    assert result.exit_code == 2
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1, result.output
    assert "bad.yaml:4: train.batch_sise: unknown key; did you mean 'batch_size'?" in lines[0]
    assert "Traceback" not in result.output


def test_validate_prints_the_plan(tmp_path: Path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    result = runner.invoke(app, ["validate", str(cfg)])
    assert result.exit_code == 0 and "6 run(s)" in result.output and "model.norm" in result.output


def test_dry_run_writes_nothing(tmp_path: Path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    result = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "r"), "--dry-run"])
    assert result.exit_code == 0 and "missing" in result.output
    assert not (tmp_path / "r").exists()


def test_help_explains_every_option():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    for option in ("--out", "--set", "--dry-run"):
        assert option in result.output
    assert runner.invoke(app, ["--help"]).exit_code == 0

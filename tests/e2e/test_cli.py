"""`bnexp run` / `bnexp validate` end to end through typer's CliRunner, into a temporary folder."""

from __future__ import annotations

import json
import sys
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


def test_validate_counts_a_shared_run_once(tmp_path: Path):
    """none ignores the ghost size: one none run per seed serves both ghost cells, so 2 ghost
    sizes x (none, custom) x 2 seeds plan 8 cells x seeds but train 6 distinct runs."""
    cfg = tmp_path / "ghost.yaml"
    sweep = "  model.norm: [none, custom, torch]\n  train.seed: [0, 1]\n"
    cfg.write_text(
        TINY.replace(sweep, "  model.norm: [none, custom]\n  model.ghost_batch_size: [4, 8]\n"
                     "  train.seed: [0, 1]\n")
    )  # fmt: skip
    result = runner.invoke(app, ["validate", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "6 distinct run(s) in 8 planned cells x seeds" in " ".join(result.output.split())


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


# --------------------------------------------------------------------------- models, trust


def _tiny_images(root: Path, classes: int = 2) -> str:
    """train/test npz of 16 8x8 RGB images; the YAML data line for them."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 8, 8, 3)).astype(np.uint8)
    y = np.arange(16) % classes
    for name in ("train", "test"):
        np.savez(root / f"{name}.npz", x=x, y=y)
    return f"data: {{dataset: npz, train: {root}/train.npz, test: {root}/test.npz}}\n"


def resnet20_flops(side: int, classes: int) -> int:
    """ResNet-20's forward FLOPs on one side x side image, by hand: 2 per multiply-add of each
    3x3 conv (maps side, side/2, side/4) and of the linear head."""

    def conv(c_in, c_out, s):
        return 2 * c_in * c_out * 9 * s * s

    return (conv(3, 16, side) + 6 * conv(16, 16, side) + conv(16, 32, side // 2)
            + 5 * conv(32, 32, side // 2) + conv(32, 64, side // 4) + 5 * conv(64, 64, side // 4)
            + 2 * 64 * classes)


def test_validate_prints_parameters_and_flops_counted_by_hand(tmp_path: Path):
    cfg = tmp_path / "r.yaml"
    cfg.write_text(
        "name: r\n" + _tiny_images(tmp_path)
        + "model: {arch: resnet, depth: 20, norm: torch}\n"
        + "train: {batch_size: 8, steps: 10}\n"
    )
    result = runner.invoke(app, ["validate", str(cfg)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output

    forward = resnet20_flops(8, 2)
    params = 269_722 - 64 * 8 - 8  # the paper's ResNet-20 with a 2-class head
    assert "resnet-20, norm torch" in result.output and f"{params:,}" in result.output
    assert f"{forward / 1e6:.3g} MFLOPs" in result.output
    total = 3 * forward * 10 * 8
    assert f"about {total / 1e9:.3g} GFLOPs" in result.output


def test_validate_a_factory_that_cannot_be_imported_one_line_exit_2(tmp_path: Path):
    cfg = tmp_path / "f.yaml"
    cfg.write_text("name: f\n" + _tiny_images(tmp_path) + 'model: {factory: "nets/no.py:make"}\n')
    result = runner.invoke(app, ["validate", str(cfg)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "model.factory:" in lines[0] and "no file" in lines[0], lines


EVIL = """\
from pathlib import Path

from torch import nn

Path(__file__).with_name("imported.txt").write_text("this code ran")


def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
"""


def test_repro_and_report_import_no_code_named_in_a_results_folder(tmp_path: Path):
    """A results folder whose config.yaml names a factory that writes a file when imported:
    report never imports it; repro refuses (exit 2, writes nothing) unless --trust-code."""
    (tmp_path / "evil.py").write_text(EVIL)
    cfg = tmp_path / "e.yaml"
    cfg.write_text(
        "name: e\n" + _tiny_images(tmp_path)
        + 'model: {factory: "evil.py:make", norm: torch}\n'
        + "train: {batch_size: 8, epochs: 1, device: cpu}\n"
    )
    out = tmp_path / "results"
    assert runner.invoke(app, ["run", str(cfg), "--out", str(out)]).exit_code == 0
    marker = tmp_path / "imported.txt"
    marker.unlink()  # the user's own run imported it, as asked
    for name in [n for n in sys.modules if n.startswith("bnexp_factory_")]:
        del sys.modules[name]  # as in a new process: an import would run the file again
    before = sorted(p for p in out.rglob("*") if p.is_file())
    rid = pd.read_csv(out / "e" / "plan.csv")["run_id"][0]

    result = runner.invoke(app, ["repro", str(out / "e"), rid])
    assert result.exit_code == 2, result.output
    assert str(tmp_path / "evil.py") in result.output and "--trust-code" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not marker.exists()
    assert sorted(p for p in out.rglob("*") if p.is_file()) == before

    assert runner.invoke(app, ["report", str(out / "e")]).exit_code == 0
    assert not marker.exists()

    result = runner.invoke(app, ["repro", str(out / "e"), rid, "--trust-code"])
    assert result.exit_code == 0, result.output
    assert marker.exists() and "reproduced" in result.output


def test_validate_sizes_cifar10_from_its_published_shape_without_the_files(tmp_path: Path):
    """A GPU study planned on a machine without CIFAR-10: 32x32x3 images, 10 classes, 5000
    training images per class."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"name: c\ndata: {{dataset: cifar10, root: {tmp_path}/none, train_per_class: 100}}\n"
        "model: {arch: resnet, depth: 20, norm: torch}\ntrain: {batch_size: 100, epochs: 2}\n"
    )
    result = runner.invoke(app, ["validate", str(cfg)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "269,722" in result.output and "cifar10: not on disk, sized from" in result.output
    forward = resnet20_flops(32, 10)
    assert f"{forward / 1e6:.3g} MFLOPs" in result.output
    assert f"about {3 * forward * 2 * 100 * 10 / 1e9:.3g} GFLOPs" in result.output


def test_run_with_a_factory_that_returns_no_module_fails_before_training(tmp_path: Path):
    (tmp_path / "bad.py").write_text("def make():\n    return 42\n")
    cfg = tmp_path / "b.yaml"
    cfg.write_text("name: b\n" + _tiny_images(tmp_path) + 'model: {factory: "bad.py:make"}\n')
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(cfg), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"error: model.factory: {tmp_path / 'bad.py'}:make: returned type int, "
                     "expected a torch.nn.Module"], lines
    assert not list(out.glob("b/runs/*/metrics.csv"))

"""The studies of issue 21 (a fixed step budget, a validation split) load, plan the runs they
say, and run end to end for a couple of steps on a few real images each."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bnexp.cli import app
from bnexp.config import expand, load_experiment

REPO = Path(__file__).resolve().parents[2]
STUDIES = REPO / "configs" / "studies"


def _run(name: str, out: Path, *overrides: str) -> pd.DataFrame:
    args = ["run", str(STUDIES / f"{name}.yaml"), "--out", str(out), "--workers", "1"]
    args += ["--set", "train.device=cpu", *(a for o in overrides for a in ("--set", o))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / name / "summary.csv")


@pytest.mark.parametrize(
    "name, planned, runs",
    [
        # 5 arms (none; ghost 16, 32, 128; population, one run for its 3 ghost cells) x 3 lr x 12
        ("cifar10_regularization", 2 * 2 * 3 * 3 * 12, 5 * 3 * 12),
        ("cifar10_batch_fixed_steps", 2 * 4 * 4 * 3, 2 * 4 * 4 * 3),
        ("catvnoncat_course_val", 240, 240),
        ("catvnoncat_standardized_val", 240, 240),
    ],
)
def test_studies_validate_and_plan_their_runs(name, planned, runs):
    exp, _ = load_experiment(STUDIES / f"{name}.yaml")
    plan = expand(exp)
    assert len(plan) == planned and len({r.run_id for r in plan}) == runs
    assert all(r.config.data.val_fraction is not None for r in plan)


def _cifar(shared_data: Path) -> list[str]:
    folder = shared_data / "cifar10-subset"
    return [f"data.train={folder / 'train.npz'}", f"data.test={folder / 'test.npz'}",
            "data.train_per_class=13", "data.test_per_class=5"]  # fmt: skip


@pytest.mark.slow
def test_regularization_study_runs_two_steps(shared_data, tmp_path):
    # 13 per class, 10% held out: round(1.3) = 1 per class for validation, 120 to train on
    # seeds trained together, too: every arm can be (the study leaves it off, for speed)
    df = _run("cifar10_regularization", tmp_path, *_cifar(shared_data), "train.steps=2",
              "sweep.train.lr=[0.05]", "sweep.train.seed=[0, 1]",
              "train.vectorize_seeds=true")  # fmt: skip
    assert len(df) == 2 * 2 * 3 * 2 and df["run_id"].nunique() == 5 * 2
    assert (df["steps"] == 2).all() and (df["seeds_together"] == 2).all()
    assert df["final_val_acc"].between(0, 1).all() and df["best_val_epoch"].notna().all()
    pop = df[(df["model.norm"] == "custom") & (df["model.bn_stats"] == "population")]
    assert pop["run_id"].nunique() == 2  # the 3 ghost cells share each seed's run
    run_dir = tmp_path / "cifar10_regularization" / "runs" / df.run_id[0]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics.columns[-2:]) == ["val_loss", "val_acc"]
    assert metrics["step"].tolist() == [0, 1, 2]  # 120 images < batch 128: a step an epoch


@pytest.mark.slow
def test_batch_fixed_steps_study_takes_the_same_steps_at_every_batch_size(shared_data, tmp_path):
    df = _run("cifar10_batch_fixed_steps", tmp_path, *_cifar(shared_data), "train.steps=3",
              "sweep.train.batch_size=[64, 512]", "sweep.train.lr=[0.05]",
              "sweep.train.seed=[0]")  # fmt: skip
    assert len(df) == 4 and (df["steps"] == 3).all()
    # 120 training images: 2 steps an epoch at batch 64, 1 (of 120) at batch 512
    assert df.groupby("batch_size")["epochs"].first().to_dict() == {64: 2, 512: 3}
    assert df["final_val_acc"].between(0, 1).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["catvnoncat_course_val", "catvnoncat_standardized_val"])
def test_catvnoncat_val_studies_one_full_batch_epoch(shared_data, tmp_path, name):
    df = _run(name, tmp_path, f"data.root={shared_data / 'catvnoncat'}", "train.epochs=1",
              "sweep.train.batch_size=[168]", "sweep.train.lr=[0.01]",
              "sweep.train.seed=[0]")  # fmt: skip
    assert len(df) == 3 and set(df["norm"]) == {"none", "custom", "torch"}
    # 168 training images left after the 41 held out: one full batch
    assert (df["steps"] == 1).all() and df["final_val_acc"].between(0, 1).all()

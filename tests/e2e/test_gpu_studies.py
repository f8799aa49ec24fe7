"""The literature-scale GPU studies (configs/studies/gpu/) validate as shipped and each of their
networks takes a training step on the CPU, on tiny CIFAR-10 files in the real on-disk format."""

from __future__ import annotations

from pathlib import Path

import pytest
from data.test_data_cifar10 import make_cifar_folder

from bnexp.config import expand, load_experiment
from bnexp.training.train import train_run

GPU_STUDIES = sorted((Path(__file__).resolve().parents[2] / "configs/studies/gpu").glob("*.yaml"))


def test_there_are_gpu_studies_for_both_depths_and_both_questions():
    names = {p.stem for p in GPU_STUDIES}
    assert {"resnet20_batch", "resnet20_ghost", "resnet44_batch", "resnet44_ghost"} <= names


@pytest.mark.parametrize("path", GPU_STUDIES, ids=lambda p: p.stem)
def test_a_gpu_study_validates_as_shipped(path):
    exp, _ = load_experiment(path)
    runs = expand(exp)
    assert len(runs) >= 15  # 5 seeds of at least three arms
    assert {r.config.model.arch for r in runs} == {"resnet"}
    assert all(r.config.data.augment is not None for r in runs)
    assert all(r.config.train.lr_schedule.rule == "cosine" for r in runs)
    assert all(r.config.train.steps is not None for r in runs)  # a fixed step budget


@pytest.mark.slow
@pytest.mark.parametrize("path", GPU_STUDIES, ids=lambda p: p.stem)
def test_each_arm_of_a_gpu_study_takes_a_step_on_the_cpu(tmp_path, path):
    """Every norm arm of the study's first cell trains one step through train_run (batch 64 so
    that the 200 training images of the tiny files hold a batch)."""
    make_cifar_folder(tmp_path / "cifar")
    exp, raw = load_experiment(path)
    cell = {"train.seed": [0]}
    if "train.batch_size" in raw["sweep"]:
        cell["train.batch_size"] = [64]
    if "model.ghost_batch_size" in raw["sweep"]:
        cell["model.ghost_batch_size"] = [16]
    overrides = [
        f"data.root={tmp_path / 'cifar'}",
        "train.device=cpu",
        "train.steps=1",
        "train.eval_every_steps=null",
        "train.eval_batch_size=100",
        *(f"sweep.{key}={values}" for key, values in cell.items()),
    ]
    if "train.batch_size" not in raw["sweep"]:
        overrides.append("train.batch_size=64")
    exp, _ = load_experiment(path, overrides)
    runs = expand(exp)
    assert {r.config.model.norm for r in runs} == set(raw["sweep"]["model.norm"])
    for r in runs:
        summary = train_run(r.config, tmp_path / r.run_id)
        assert summary.steps == 1, r.run_id

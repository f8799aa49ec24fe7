"""The training loop's rules: batches, targets, pairing, binary tasks."""

from __future__ import annotations

import json

import pandas as pd
import torch

from bnexp.config import RunConfig, TargetConfig
from bnexp.data import Dataset
from bnexp.run.train import batches_of_epoch, loss_and_correct, target_reached, train_run


def test_a_final_batch_of_one_is_dropped():
    g = torch.Generator().manual_seed(0)
    chunks = batches_of_epoch(129, 64, g)
    assert [len(c) for c in chunks] == [64, 64]
    chunks = batches_of_epoch(130, 64, torch.Generator().manual_seed(0))
    assert [len(c) for c in chunks] == [64, 64, 2]
    assert sorted(torch.cat(chunks).tolist()) == list(range(130))


def test_target_direction():
    row = {"train_acc": 0.9, "test_acc": 0.8, "train_loss": 0.3, "test_loss": 0.5}
    assert target_reached(TargetConfig(metric="train_acc", value=0.9), row)
    assert not target_reached(TargetConfig(metric="test_acc", value=0.81), row)
    assert target_reached(TargetConfig(metric="train_loss", value=0.3), row)
    assert not target_reached(TargetConfig(metric="test_loss", value=0.4), row)


def test_binary_loss_and_threshold_zero():
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    y = torch.tensor([1, 0, 0, 0])
    loss, correct = loss_and_correct(logits, y, binary=True)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), y.float())
    assert torch.allclose(loss, expected) and int(correct) == 3


def _toy_binary(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8)
    y = (x.float().mean((1, 2, 3)) > 127).long()
    return Dataset(
        "toy",
        x,
        y,
        x[:16],
        y[:16],
        ("non-cat", "cat"),
        binary=True,
        mean=torch.full((3,), 0.5),
        std=torch.full((3,), 0.25),
    )


def test_paired_runs_share_data_order_and_eval_every_steps(tmp_path):
    data = _toy_binary()
    cfg = RunConfig.model_validate(
        {
            "model": {"hidden": [8], "norm": "none"},
            "train": {"batch_size": 16, "epochs": 2, "eval_every_steps": 2, "device": "cpu"},
        }
    )
    s1 = train_run(cfg, tmp_path / "a", data=data)
    s2 = train_run(cfg, tmp_path / "b", data=data)
    m1, m2 = (
        pd.read_csv(tmp_path / "a" / "metrics.csv"),
        pd.read_csv(tmp_path / "b" / "metrics.csv"),
    )
    assert m1.step.tolist() == [0, 2, 4, 6, 8]  # 4 steps an epoch, evaluated every 2 steps
    assert m1.equals(m2)  # same seed, same run
    assert s1.steps == 8 and s1.final_train_loss == s2.final_train_loss
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["device"] == "cpu"


def test_uint8_batches_are_standardized_per_channel():
    data = _toy_binary()
    x = data.prepare(data.x_train[:2])
    manual = (data.x_train[:2].float() / 255 - 0.5) / 0.25
    assert x.dtype == torch.float32 and torch.allclose(x, manual)

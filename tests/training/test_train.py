"""The training loop's rules: batches, targets, pairing, binary tasks, determinism."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from bnexp.config import RunConfig, TargetConfig
from bnexp.data import Dataset
from bnexp.training.train import batches_of_epoch, loss_and_correct, target_reached, train_run


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


def _cfg(norm: str = "none", seed: int = 0, **train) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"hidden": [8, 8], "norm": norm},
            "train": {"batch_size": 16, "epochs": 2, "device": "cpu", "seed": seed, **train},
        }
    )


def test_same_config_twice_gives_the_same_bytes_and_eval_every_steps(tmp_path):
    data = _toy_binary()
    s1 = train_run(_cfg(eval_every_steps=2), tmp_path / "a", data=data)
    s2 = train_run(_cfg(eval_every_steps=2), tmp_path / "b", data=data)
    m1 = pd.read_csv(tmp_path / "a" / "metrics.csv")
    assert m1.step.tolist() == [0, 2, 4, 6, 8]  # 4 steps an epoch, evaluated every 2 steps
    # the same code path twice (train.deterministic): the promise is the same bytes
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (
        tmp_path / "b" / "metrics.csv"
    ).read_bytes()
    assert s1.steps == 8 and s1.final_train_loss == s2.final_train_loss
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["device"] == "cpu"


def test_paired_runs_share_initial_weights_and_data_order(tmp_path, monkeypatch):
    """none vs torch of one seed: the layers both have (every Linear weight, the head's bias)
    start equal, and every epoch visits the examples in the same order; another seed does not."""
    import bnexp.training.train as train_module

    initial: dict[str, dict] = {}
    orders: dict[str, list] = {}
    name = ["?"]
    real_init, real_batches = train_module.init_weights, train_module.batches_of_epoch

    def init_and_keep(model, seed):
        real_init(model, seed)
        initial[name[0]] = {k: v.clone() for k, v in model.state_dict().items()}

    def batches_and_keep(n, batch_size, gen):
        chunks = real_batches(n, batch_size, gen)
        orders.setdefault(name[0], []).append(torch.cat(chunks).tolist())
        return chunks

    monkeypatch.setattr(train_module, "init_weights", init_and_keep)
    monkeypatch.setattr(train_module, "batches_of_epoch", batches_and_keep)
    data = _toy_binary()
    runs = {"none": _cfg("none"), "torch": _cfg("torch"), "none seed 1": _cfg("none", seed=1)}
    summaries = {}
    for key, cfg in runs.items():
        name[0] = key
        summaries[key] = train_run(cfg, tmp_path / key.replace(" ", "_"), data=data)

    shared = [k for k in initial["none"] if k in initial["torch"]]
    assert shared == [
        "blocks.0.weight.weight",
        "blocks.1.weight.weight",
        "head.weight",
        "head.bias",
    ]
    for k in shared:  # the same generator draws: equal, not close
        assert torch.equal(initial["none"][k], initial["torch"][k]), k
    assert not torch.equal(initial["none"]["head.weight"], initial["none seed 1"]["head.weight"])
    assert len(orders["none"]) == 2 and orders["none"] == orders["torch"]
    assert orders["none"][0] != orders["none"][1], "each epoch draws a new permutation"
    assert orders["none"] != orders["none seed 1"]
    # and the pair is not the same run: BN changes what is computed from there
    assert summaries["none"].final_train_loss != summaries["torch"].final_train_loss


def test_uint8_batches_are_standardized_per_channel():
    data = _toy_binary()
    x = data.prepare(data.x_train[:2])
    manual = (data.x_train[:2].float() / 255 - 0.5) / 0.25
    assert x.dtype == torch.float32 and torch.allclose(x, manual)


def test_a_step_budget_ends_mid_epoch_and_scaled_lr_reaches_the_optimizer(tmp_path):
    """train.steps: exactly that many optimizer steps, the last evaluation where they end (a
    fractional epoch); lr_scaling: the optimizer's lr is train.lr * batch / base (linear)."""
    cfg = RunConfig.model_validate(
        {
            "model": {"hidden": [16]},
            "train": {
                "batch_size": 100,
                "steps": 30,
                "lr": 0.1,
                "lr_scaling": {"rule": "linear", "base_batch_size": 50},
                "device": "cpu",
            },
        }
    )
    s = train_run(cfg, tmp_path / "run")
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    # digits' 1,347 training images in batches of 100: 14 steps an epoch (the last of 47)
    assert s.steps == 30 and list(rows["step"]) == [0, 14, 28, 30]
    assert s.epochs == 3  # epochs started: two whole ones and 2 of the third's 14 steps
    assert rows["epoch"].iloc[-1] == pytest.approx(2 + 2 / 14, abs=1e-4)
    assert (rows["lr"] == 0.2).all()

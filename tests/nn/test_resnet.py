"""CIFAR ResNets (He et al. 2016 §4.2): sizes, shapes, option-A shortcuts, norms, training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bnexp.config import ModelConfig, RunConfig
from bnexp.nn.models import build_model, init_weights
from bnexp.nn.norm import BatchNorm2d
from bnexp.nn.resnet import BasicBlock, ResNet
from bnexp.training.train import train_run


def resnet(depth: int, norm: str, **kw) -> nn.Module:
    model = build_model(ModelConfig(arch="resnet", depth=depth, norm=norm, **kw), (3, 32, 32), 10)
    init_weights(model, 0)
    return model


def params_by_hand(depth: int, norm: str) -> int:
    """Counted from the paper's description: 3x3 convs 3->16, then n blocks of two convs per
    stage (16, 32, 64 channels), a BN (γ, β) or a conv bias per conv, a 64 -> 10 linear head."""
    n = (depth - 2) // 6
    convs = [(3, 16)]
    for before, width in [(16, 16), (16, 32), (32, 64)]:
        convs += [(before, width), (width, width)] + [(width, width)] * (2 * (n - 1))
    weights = sum(9 * a * b for a, b in convs)
    per_channel = sum(b for _, b in convs) * (2 if norm != "none" else 1)
    return weights + per_channel + 64 * 10 + 10


@pytest.mark.parametrize("depth, paper", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85),
                                          (110, 1.7)])
@pytest.mark.parametrize("norm", ["none", "torch", "custom"])
def test_parameter_count_is_the_papers(depth, paper, norm):
    count = sum(p.numel() for p in resnet(depth, norm).parameters())
    assert count == params_by_hand(depth, norm)
    assert round(count / 1e6, 2 if depth < 110 else 1) == paper
    if norm != "none":
        assert count == {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018,
                         110: 1_727_962}[depth]


def test_stage_shapes_and_layer_count():
    model = resnet(20, "torch")
    seen = []
    for stage in model.stages:
        stage.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:])))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert seen == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 20  # 6n+2 weight layers, n = 3
    assert all(len(stage) == 3 for stage in model.stages)


def test_option_a_shortcut_is_strided_and_zero_padded():
    block = BasicBlock(16, 32, 2, lambda c: nn.Identity(), bias=True)
    x = torch.randn(2, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    # parameter-free: the block's parameters are its two convs (weight + bias) and nothing else
    assert sum(p.numel() for p in block.parameters()) == 9 * 16 * 32 + 32 + 9 * 32 * 32 + 32


@pytest.mark.parametrize("norm, bn_type, bias", [("none", None, True),
                                                 ("torch", nn.BatchNorm2d, False),
                                                 ("custom", BatchNorm2d, False)])
def test_norm_applies_to_every_bn_layer(norm, bn_type, bias):
    model = resnet(20, norm)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all((c.bias is not None) == bias for c in convs)
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, BatchNorm2d))]
    assert len(bns) == (0 if bn_type is None else len(convs))
    assert all(type(b) is bn_type for b in bns)


def test_custom_controls_reach_every_layer():
    model = resnet(20, "custom", ghost_batch_size=4, eval_stats="batch")
    bns = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    assert len(bns) == 19 and all(b.ghost_batch_size == 4 and b.eval_stats == "batch"
                                  for b in bns)


@pytest.mark.slow
def test_torch_and_custom_compute_the_same_network():
    """Paired initial weights (every norm draws the same conv/linear weights), and our layer
    equals torch's in training and eval."""
    a, b, c = resnet(20, "torch"), resnet(20, "custom"), resnet(20, "none")
    for m1, m2 in [(a, b), (a, c)]:
        w1 = [m.weight for m in m1.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        w2 = [m.weight for m in m2.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        for p, q in zip(w1, w2, strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)


def test_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNet(21, 3, 10, lambda c: nn.Identity(), True)


def write_images(tmp_path, n: int, size: int, seed: int = 0, learnable: bool = False):
    """train.npz / test.npz of n RGB images (N, H, W, C) uint8 with 2 classes; `learnable`:
    the class is whether the image is bright (a rule a few steps can pick up)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 128, (n, size, size, 3)) + (128 * y[:, None, None, None] if learnable
                                                      else 0)
    for name in ("train", "test"):
        np.savez(tmp_path / f"{name}.npz", x=x.astype(np.uint8), y=y)
    return {"dataset": "npz", "train": str(tmp_path / "train.npz"),
            "test": str(tmp_path / "test.npz")}


@pytest.mark.parametrize("norm", ["none", "torch", "custom"])
def test_resnet20_trains_under_every_norm(tmp_path, norm):
    data = write_images(tmp_path, 64, 8, learnable=True)
    cfg = RunConfig.model_validate({
        "data": data,
        "model": {"arch": "resnet", "depth": 20, "norm": norm},
        "train": {"lr": 0.05, "momentum": 0.9, "batch_size": 32, "steps": 20, "seed": 0,
                  "device": "cpu", "checkpoint_every": 0},
    })
    summary = train_run(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert summary.status == "complete" and metrics["step"].iloc[-1] == 20
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]


@pytest.mark.slow
@pytest.mark.parametrize("depth", [20, 44])
@pytest.mark.parametrize("norm", ["none", "torch", "custom"])
def test_cifar_resnets_take_a_training_step(tmp_path, depth, norm):
    """ResNet-20 / 44 on CIFAR-shaped images, one step through bnexp's normal run path."""
    data = write_images(tmp_path, 16, 32)
    model = {"arch": "resnet", "depth": depth, "norm": norm}
    if norm == "custom":
        model["ghost_batch_size"] = 4
    cfg = RunConfig.model_validate({
        "data": data, "model": model,
        "train": {"lr": 0.1, "batch_size": 8, "steps": 1, "device": "cpu",
                  "weight_decay": 5e-4, "momentum": 0.9, "checkpoint_every": 0},
    })
    summary = train_run(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert summary.status == "complete" and list(metrics["step"]) == [0, 1]
    assert np.isfinite(metrics["train_loss"]).all()

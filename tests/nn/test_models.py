"""Model builders: BN placement, bias rules, shapes, and paired initial weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnexp.config import ModelConfig
from bnexp.nn.models import build_model, init_weights
from bnexp.nn.norm import BatchNorm1d, BatchNorm2d


@pytest.mark.parametrize(
    "norm,bn_type", [("none", nn.Identity), ("torch", nn.BatchNorm1d), ("custom", BatchNorm1d)]
)
def test_mlp_layers_and_bias(norm, bn_type):
    model = build_model(ModelConfig(hidden=[20, 7, 5], norm=norm), (12288,), 1)
    assert [b.weight.out_features for b in model.blocks] == [20, 7, 5]
    for block in model.blocks:
        assert isinstance(block.norm, bn_type)
        # a Linear followed by BN has no bias: beta replaces it
        assert (block.weight.bias is None) == (norm != "none")
    assert model(torch.randn(4, 12288)).shape == (4, 1)


def test_post_activation_keeps_the_bias_and_orders_act_before_norm():
    model = build_model(
        ModelConfig(hidden=[6], norm="torch", norm_position="post_activation", activation="relu"),
        (3,),
        2,
    )
    block = model.blocks[0]
    assert block.weight.bias is not None
    model.train()
    out = block(torch.randn(16, 3))
    # BN after ReLU: each unit's output has batch mean 0 (training mode, beta = 0)
    assert out.mean(0).abs().max() < 1e-5


@pytest.mark.parametrize("size", [32, 64, 8])
@pytest.mark.parametrize("norm,bn_type", [("torch", nn.BatchNorm2d), ("custom", BatchNorm2d)])
def test_cnn_shapes(size, norm, bn_type):
    model = build_model(ModelConfig(arch="cnn", channels=[8, 16], norm=norm), (3, size, size), 10)
    assert all(isinstance(b.norm, bn_type) for b in model.blocks)
    assert all(b.weight.bias is None for b in model.blocks)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 10)


def test_same_seed_same_weights_for_every_norm():
    weights = {}
    for norm in ("none", "torch", "custom"):
        model = build_model(ModelConfig(hidden=[10, 10], norm=norm), (5,), 3)
        init_weights(model, seed=7)
        weights[norm] = [b.weight.weight.clone() for b in model.blocks] + [
            model.head.weight.clone()
        ]
    for a, b in zip(weights["none"], weights["custom"]):
        assert torch.equal(a, b)
    for a, b in zip(weights["torch"], weights["custom"]):
        assert torch.equal(a, b)
    other = build_model(ModelConfig(hidden=[10, 10]), (5,), 3)
    init_weights(other, seed=8)
    assert not torch.equal(other.blocks[0].weight.weight, weights["none"][0])


def test_init_matches_torch_default_bounds():
    model = build_model(ModelConfig(hidden=[50]), (400,), 3)
    init_weights(model, seed=0)
    w = model.blocks[0].weight.weight
    bound = 1 / 400**0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound

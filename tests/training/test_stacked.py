"""S networks as one batched model (bnexp.training.stacked) against the S networks themselves.

The reference is each seed's own network (torch's Linear, torch's or our BN) called alone: the
stacked forward's outputs, its parameter gradients and its updates of the running estimates must
equal theirs within float32 rounding, in training and eval mode, for every seed its own batch
and for one batch shared by all.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnexp.config import ModelConfig
from bnexp.nn.models import build_model, init_weights
from bnexp.training.stacked import StackedMLP, Vmapped, stack

S, B, D, OUT = 3, 12, 10, 4
TOL = {"rtol": 1e-5, "atol": 1e-6}


def close(actual, expected, msg=""):
    """Equal within float32 rounding, relative to the tensor's scale: a batched matmul sums in
    another order, and BN's backward divides by the batch's spread, which scales rounding up."""
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale, msg=msg or None)


def _models(**model) -> list[nn.Module]:
    cfg = ModelConfig(arch="mlp", hidden=[8, 6], **{"activation": "relu", **model})
    out = []
    for seed in range(S):
        m = build_model(cfg, (D,), OUT)
        init_weights(m, seed)
        with torch.no_grad():  # BN affine parameters away from (1, 0), so they matter
            for name, p in m.named_parameters():
                if ".norm." in name:
                    p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
        out.append(m.train())
    return out


MODELS = [
    {"norm": "none"},
    {"norm": "none", "activation": "sigmoid"},
    {"norm": "torch"},
    {"norm": "custom"},
    {"norm": "custom", "norm_position": "post_activation", "activation": "tanh"},
    {"norm": "custom", "ghost_batch_size": 4},
    {"norm": "custom", "bn_stats": "population"},
    {"norm": "custom", "eval_stats": "batch"},
    {"norm": "torch", "bn_momentum": None},  # the cumulative average: counts batches
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: "-".join(f"{v}" for v in m.values()))
def test_stacked_mlp_is_its_seeds_networks(model):
    models = _models(**model)
    net = stack(models)
    assert isinstance(net, StackedMLP)
    g = torch.Generator().manual_seed(1)
    for step in range(3):  # running estimates and batch counts carry from step to step
        x = torch.randn(S, B, D, generator=g)
        out = net(x)
        out.square().sum().backward()
        for s, m in enumerate(models):
            ref = m(x[s])
            ref.square().sum().backward()
            torch.testing.assert_close(out[s], ref, **TOL)
        for name, stacked in net.params.items():
            for s, m in enumerate(models):
                own = m.get_parameter(name)
                close(stacked.grad[s], own.grad, f"{name}, step {step}")
                own.grad = None
            stacked.grad = None
        for name, stacked in net.buffers.items():
            for s, m in enumerate(models):
                close(stacked[s], m.get_buffer(name), name)

    # eval mode (the base's mode is what the stacked model follows), own and shared batches
    x = torch.randn(S, B, D, generator=g)
    net.base.eval()
    for m in models:
        m.eval()
    with torch.inference_mode():
        own, shared = net(x), net(x[0], shared_input=True)
        for s, m in enumerate(models):
            torch.testing.assert_close(own[s], m(x[s]), **TOL)
            torch.testing.assert_close(shared[s], m(x[0]), **TOL)


def test_a_shared_batch_in_training_is_each_seed_on_that_batch():
    models = _models(norm="custom")
    net = stack(models)
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(2))
    out = net(x, shared_input=True)
    for s, m in enumerate(models):
        torch.testing.assert_close(out[s], m(x), **TOL)


def test_the_base_keeps_no_weights_of_the_seeds():
    net = stack(_models(norm="torch"))
    net(torch.randn(S, B, D))
    norm = net.base.blocks[0].norm
    assert norm.weight.device.type == "meta" and norm.running_mean.device.type == "meta"


def test_only_mlps_of_linear_blocks_are_stacked_by_hand():
    cnn = ModelConfig(arch="cnn", channels=[4], activation="relu", norm="torch")
    models = [build_model(cnn, (1, 8, 8), 3) for _ in range(2)]
    assert not StackedMLP.fits(models[0])
    assert isinstance(stack(models), Vmapped)
    with pytest.raises(ValueError, match="MLP Net"):
        StackedMLP(models)


def test_bn_without_a_learned_shift_goes_through_vmap():
    """torch's keyword: affine=True, bias=False learns γ only; such a layer has no β to fold."""
    models = _models(norm="custom")
    for m in models:
        for block in m.blocks:
            block.norm.register_parameter("bias", None)
    assert not StackedMLP.fits(models[0]) and isinstance(stack(models), Vmapped)

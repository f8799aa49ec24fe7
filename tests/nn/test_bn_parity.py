"""Our BatchNorm against torch's in train and eval: outputs, gradients, running statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnexp.nn.norm import BatchNorm1d, BatchNorm2d


@pytest.mark.parametrize(
    "ours,theirs,shape",
    [
        (BatchNorm1d, nn.BatchNorm1d, (32, 6)),
        (BatchNorm1d, nn.BatchNorm1d, (16, 6, 5)),
        (BatchNorm2d, nn.BatchNorm2d, (8, 6, 5, 4)),
    ],
)
def test_train_then_eval_matches_torch(ours, theirs, shape, bn_impl):
    torch.manual_seed(0)
    a, b = ours(6).double(), theirs(6).double()
    with torch.no_grad():
        for m in (a, b):
            m.weight.copy_(torch.linspace(0.5, 2, 6))
            m.bias.copy_(torch.linspace(-1, 1, 6))
    for step in range(3):  # training: batch statistics, running estimates updated
        x = (torch.randn(shape, dtype=torch.double) * 3 + step).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        ya, yb = a(x), b(x2)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        assert (ya - yb).abs().max() < 1e-10, f"forward differs by {(ya - yb).abs().max():.2e}"
        assert (x.grad - x2.grad).abs().max() < 1e-10, (
            f"dx differs by {(x.grad - x2.grad).abs().max():.2e}"
        )
        for name in ("weight", "bias"):
            ga, gb = getattr(a, name).grad, getattr(b, name).grad
            assert (ga - gb).abs().max() < 1e-10, f"d{name} differs by {(ga - gb).abs().max():.2e}"
    for name in ("running_mean", "running_var"):
        diff = (getattr(a, name) - getattr(b, name)).abs().max()
        assert diff < 1e-12, f"{name} differs by {diff:.2e}"
    assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 3
    a.eval(), b.eval()
    x = torch.randn(shape, dtype=torch.double)
    assert (a(x) - b(x)).abs().max() < 1e-10
    assert a.state_dict().keys() == b.state_dict().keys()

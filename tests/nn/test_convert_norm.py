"""bnexp.nn.convert_norm against torch's layers: types, copied state, equal numbers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bnexp.nn import convert_norm
from bnexp.nn.norm import BatchNorm1d, BatchNorm2d, NoisyBN


def user_model() -> nn.Module:
    """A user's network with torch BN layers in a nested module, state away from the defaults."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4, eps=1e-3, momentum=0.3),
        nn.ReLU(),
        nn.Sequential(nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.BatchNorm1d(6, momentum=None)),
        nn.Linear(6, 3),
    )
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    for _ in range(3):  # running estimates away from 0 / 1, num_batches_tracked = 3
        model(torch.randn(8, 3, 5, 5))
    return model


def bns(model: nn.Module) -> list[nn.Module]:
    kinds = (nn.BatchNorm1d, nn.BatchNorm2d, BatchNorm1d, BatchNorm2d)
    return [m for m in model.modules() if isinstance(m, kinds)]


def test_custom_takes_every_setting_and_state_and_computes_the_same():
    ref = user_model()
    model = convert_norm(copy.deepcopy(ref), "custom")
    assert [type(m) for m in bns(model)] == [BatchNorm2d, BatchNorm1d]
    for old, new in zip(bns(ref), bns(model), strict=True):
        assert (new.num_features, new.eps, new.momentum) == (old.num_features, old.eps,
                                                              old.momentum)
        old_state, new_state = old.state_dict(), new.state_dict()
        assert old_state.keys() == new_state.keys()
        for key in old_state:
            torch.testing.assert_close(new_state[key], old_state[key], rtol=0, atol=0)
    x = torch.randn(16, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-6)  # training: batch stats
    for old, new in zip(bns(ref), bns(model), strict=True):  # the updates match too
        torch.testing.assert_close(new.running_var, old.running_var, rtol=1e-5, atol=1e-6)
    ref.eval(), model.eval()
    torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-6)


def test_keeps_the_users_model_and_its_other_layers():
    ref = user_model()
    model = user_model()
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    out = convert_norm(model, "torch")
    assert out is model  # converted in place, like convert_sync_batchnorm
    assert [m for m in out.modules() if isinstance(m, (nn.Conv2d, nn.Linear))] == convs
    back = convert_norm(convert_norm(model, "custom"), "torch")
    assert [type(m) for m in bns(back)] == [nn.BatchNorm2d, nn.BatchNorm1d]
    x = torch.randn(4, 3, 5, 5)
    ref.eval(), back.eval()
    torch.testing.assert_close(back(x), ref(x), rtol=1e-5, atol=1e-6)


def test_none_removes_bn_and_changes_the_numbers():
    ref = user_model()
    model = convert_norm(copy.deepcopy(ref), "none")
    assert bns(model) == [] and isinstance(model[1], nn.Identity)
    assert isinstance(model[3][2], nn.Identity)
    x = torch.randn(4, 3, 5, 5)
    assert not torch.allclose(model(x), ref(x))


def test_controls_mode_grad_device_and_switches_carry_over():
    model = nn.Sequential(nn.BatchNorm1d(5, affine=False), nn.BatchNorm2d(3,
                          track_running_stats=False), nn.BatchNorm3d(2))
    model[0].eval()
    noise = NoisyBN(scale_std=0.1)
    out = convert_norm(model, "custom", ghost_batch_size=4, noise=noise)
    a, b, c = out
    assert type(a) is BatchNorm1d and not a.affine and a.weight is None and not a.training
    assert type(b) is BatchNorm2d and not b.track_running_stats and b.running_mean is None
    assert type(c) is nn.BatchNorm3d  # only 1d and 2d are swapped
    assert a.ghost_batch_size == b.ghost_batch_size == 4 and a.noise == noise
    frozen = nn.BatchNorm1d(4)
    frozen.weight.requires_grad_(False)
    new = convert_norm(frozen, "custom")
    assert type(new) is BatchNorm1d and new is not frozen
    assert not new.weight.requires_grad and new.bias.requires_grad
    double = convert_norm(nn.BatchNorm1d(4).double(), "custom")
    assert double.weight.dtype == torch.float64 and double.running_mean.dtype == torch.float64


def test_bad_norm_or_controls_without_custom_raise():
    with pytest.raises(ValueError, match="unknown norm"):
        convert_norm(nn.BatchNorm1d(3), "layer")
    with pytest.raises(ValueError, match="need norm 'custom'"):
        convert_norm(nn.BatchNorm1d(3), "torch", ghost_batch_size=4)

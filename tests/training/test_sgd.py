"""bnexp.training.sgd.SGD against torch.optim.SGD, the reference: the same parameters after
every step, bit for bit, and state_dicts that load into each other."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from bnexp.training.sgd import SGD

SETTINGS = [
    {"momentum": 0.0},
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.5, "weight_decay": 1e-3},
    {"momentum": 0.0, "weight_decay": 0.1},
]


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def _step(net: nn.Module, opt, x, y) -> None:
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()


@pytest.mark.parametrize(
    "setting", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_every_step_equals_torch_sgd_bit_for_bit(setting):
    ours, ref = _net(), _net()
    opt_ours = SGD(ours.parameters(), lr=0.1, **setting)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, **setting)
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        x, y = torch.randn(32, 10, generator=g), torch.randint(0, 3, (32,), generator=g)
        _step(ours, opt_ours, x, y)
        _step(ref, opt_ref, x, y)
        for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
            assert torch.equal(a, b)


def test_state_dicts_load_into_each_other_and_training_continues_identically():
    setting = {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(16, 10, generator=g), torch.randint(0, 3, (16,), generator=g))
               for _ in range(10)]  # fmt: skip
    ref = _net()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05, **setting)
    for x, y in batches[:5]:
        _step(ref, opt_ref, x, y)
    # torch's state -> ours, then both go on
    ours = _net(seed=9)
    ours.load_state_dict(ref.state_dict())
    opt_ours = SGD(ours.parameters(), lr=1.0)  # lr and momentum come from the state_dict
    opt_ours.load_state_dict(opt_ref.state_dict())
    assert opt_ours.param_groups[0]["lr"] == 0.05 and opt_ours.param_groups[0]["nesterov"]
    for x, y in batches[5:]:
        _step(ref, opt_ref, x, y)
        _step(ours, opt_ours, x, y)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    # ours -> torch's: the same layout, torch accepts it
    back = torch.optim.SGD(_net().parameters(), lr=1.0, momentum=0.1)
    back.load_state_dict(opt_ours.state_dict())
    assert back.param_groups[0]["lr"] == 0.05
    for i, buf in opt_ours.state_dict()["state"].items():
        assert torch.equal(back.state_dict()["state"][i]["momentum_buffer"], buf["momentum_buffer"])


def test_a_mismatched_state_dict_is_refused():
    opt = SGD(_net().parameters(), lr=0.1, momentum=0.9)
    other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="parameters"):
        opt.load_state_dict(other.state_dict())


def test_a_run_with_sgd_never_imports_torch_dynamo(tmp_path):
    """The reason for the class: torch.optim's first use imports torch._dynamo (~1 s)."""
    code = (
        "import sys\n"
        "from bnexp.config import RunConfig\n"
        "from bnexp.training.train import train_run\n"
        "cfg = RunConfig.model_validate({'data': {'dataset': 'digits'}, 'model': {'hidden': [8],"
        " 'norm': 'torch'}, 'train': {'epochs': 1, 'momentum': 0.9, 'device': 'cpu',"
        " 'checkpoint_every': 1}})\n"
        f"train_run(cfg, {str(tmp_path / 'run')!r})\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]

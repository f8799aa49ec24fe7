"""model.factory: a user's nn.Module from a file next to the config, its BN swapped."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bnexp.config import ConfigError, RunConfig, expand, experiment_from_dict, load_experiment
from bnexp.nn.models import build_model, init_weights
from bnexp.nn.norm import BatchNorm2d
from bnexp.training.train import train_run

NET = '''
import torch
from torch import nn


def make(classes, width=4):
    """A user's CNN with torch BN layers and its own (kaiming) init."""
    net = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes),
    )
    nn.init.kaiming_normal_(net[0].weight)
    return net


def not_a_module(classes):
    return "a string"


def viewing(classes):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3)
            self.fc = nn.Linear(3 * 8 * 8, classes)

        def forward(self, x):
            return self.fc(self.bn(x).view(x.shape[0], -1))  # needs contiguous NCHW

    return Net()
'''


@pytest.fixture
def project(tmp_path):
    """tmp/exp/nets/net.py, tmp/exp/data/{train,test}.npz (8x8 RGB, 2 classes)."""
    root = tmp_path / "exp"
    (root / "nets").mkdir(parents=True)
    (root / "nets" / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 48)
    x = (rng.integers(0, 128, (48, 8, 8, 3)) + 100 * y[:, None, None, None]).astype(np.uint8)
    (root / "data").mkdir()
    for name in ("train", "test"):
        np.savez(root / "data" / f"{name}.npz", x=x, y=y)
    return root


def write_config(root, factory="nets/net.py:make", norm="torch", extra=""):
    data = root / "data"
    (root / "exp.yaml").write_text(textwrap.dedent(f"""\
        name: mine
        data: {{dataset: npz, train: {data}/train.npz, test: {data}/test.npz}}
        model: {{factory: "{factory}", factory_args: {{classes: 2}}, norm: {norm}{extra}}}
        train: {{lr: 0.1, batch_size: 16, steps: 6, device: cpu, checkpoint_every: 0}}
        """))
    return root / "exp.yaml"


def run_config(root, monkeypatch, **kw) -> RunConfig:
    monkeypatch.chdir(root.parent)  # the factory's path is the config's, not the cwd's
    exp, _ = load_experiment(write_config(root, **kw))
    return expand(exp)[0].config


def test_the_path_is_relative_to_the_config_file(project, monkeypatch):
    cfg = run_config(project, monkeypatch)
    assert cfg.model.factory == f"{(project / 'nets' / 'net.py').resolve()}:make"


def test_norm_swaps_the_users_bn_and_changes_the_numbers(project, monkeypatch, tmp_path):
    losses, types = {}, {}
    for norm in ("none", "torch", "custom"):
        cfg = run_config(project, monkeypatch, norm=norm)
        model = build_model(cfg.model, (3, 8, 8), 2, seed=0)
        types[norm] = type(model[1])
        train_run(cfg, tmp_path / norm)
        losses[norm] = pd.read_csv(tmp_path / norm / "metrics.csv")["train_loss"].to_numpy()
    assert types == {"none": nn.Identity, "torch": nn.BatchNorm2d, "custom": BatchNorm2d}
    assert not np.allclose(losses["none"], losses["torch"])
    np.testing.assert_allclose(losses["custom"], losses["torch"], rtol=1e-4, atol=1e-5)


def test_factory_init_is_seeded_and_paired_across_norms(project, monkeypatch):
    cfg = {n: run_config(project, monkeypatch, norm=n).model for n in ("none", "torch")}
    weights = {}
    for norm, seed in [("none", 0), ("torch", 0), ("torch", 1)]:
        model = build_model(cfg[norm], (3, 8, 8), 2, seed=seed)
        init_weights(model, seed)  # keeps the factory's own init
        weights[norm, seed] = model[0].weight.detach().clone()
    torch.testing.assert_close(weights["none", 0], weights["torch", 0], rtol=0, atol=0)
    assert not torch.equal(weights["torch", 0], weights["torch", 1])
    # kaiming_normal_ (std sqrt(2 / 27) = 0.27), not init_weights' uniform(±1/sqrt(27) = 0.19)
    assert weights["torch", 0].abs().max() > 1 / 27**0.5


def test_a_model_that_views_its_input_trains(project, monkeypatch, tmp_path):
    cfg = run_config(project, monkeypatch, factory="nets/net.py:viewing")
    assert train_run(cfg, tmp_path / "run").status == "complete"


@pytest.mark.parametrize("factory, message", [
    ("nets/missing.py:make", "no file"),
    ("nets/net.py:absent", "has no function absent"),
    ("nets/net.py:not_a_module", "returned type str, expected a torch.nn.Module"),
    ("no_such_module_bnexp:make", "cannot import module no_such_module_bnexp"),
])
def test_a_bad_factory_is_one_config_error(project, monkeypatch, factory, message):
    cfg = run_config(project, monkeypatch, factory=factory)
    with pytest.raises(ConfigError, match=message) as err:
        build_model(cfg.model, (3, 8, 8), 2)
    assert str(err.value).startswith(f"model.factory: {cfg.model.factory}: ")
    assert "\n" not in str(err.value)


def test_output_size_and_raising_factories_are_config_errors(project, monkeypatch):
    cfg = run_config(project, monkeypatch)
    with pytest.raises(ConfigError, match=r"output for one example is \(1, 2\), expected \(1, 3\)"):
        build_model(cfg.model, (3, 8, 8), 3)
    (project / "nets" / "broken.py").write_text("raise RuntimeError('boom')\n")
    cfg = run_config(project, monkeypatch, factory="nets/broken.py:make")
    with pytest.raises(ConfigError, match="importing .*broken.py raised RuntimeError: boom"):
        build_model(cfg.model, (3, 8, 8), 2)


@pytest.mark.parametrize("model, message", [
    ({"factory": "nets/net.py"}, "is not 'pkg.module:function'"),
    ({"factory": "a b:make"}, "neither a dotted module name nor a .py file"),
    ({"factory_args": {"classes": 2}}, "needs model.factory"),
    ({"factory": "m:f", "arch": "cnn"}, "model.arch: .*does not apply"),
    ({"factory": "m:f", "hidden": [3]}, "hidden does not apply"),
    ({"factory": "m:f", "bn_eps": 1e-3}, "bn_eps does not apply"),
    ({"arch": "resnet"}, "arch resnet needs a depth 6n\\+2"),
    ({"arch": "resnet", "depth": 21}, "depth: 21 needs a depth 6n\\+2"),
    ({"arch": "cnn", "depth": 20}, "needs arch: resnet"),
    ({"arch": "resnet", "depth": 20, "channels": [4]}, "channels does not apply"),
])
def test_bad_model_keys_are_config_errors(model, message):
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict({"model": model})


@pytest.mark.parametrize("probe", [{"shift_probe": {"layer": 1}}, {"ics": {"layer": 2}},
                                   {"bn_noise": {}}])
@pytest.mark.parametrize("model", [{"arch": "resnet", "depth": 20}, {"factory": "m:f"}])
def test_layer_probes_refuse_resnet_and_factory_models(model, probe):
    with pytest.raises(ConfigError, match="probes hidden layers by index"):
        experiment_from_dict({"model": {**model, "norm": "torch"}, "measure": probe})


def test_an_api_dict_config_takes_the_factory_file_from_the_working_directory(
    project, monkeypatch
):
    import bnexp

    monkeypatch.chdir(project)
    plan = bnexp.validate({"model": {"factory": "nets/net.py:make"}})
    assert plan[0].config.model.factory == f"{(project / 'nets' / 'net.py').resolve()}:make"

"""The controls of our BatchNorm, each against a hand computation, and each through `bnexp run`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from bnexp.cli import app
from bnexp.config import ConfigError, ModelConfig, expand, experiment_from_dict
from bnexp.nn import norm as bn
from bnexp.nn.models import build_model, init_weights


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def hand_bn(
    x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, w=None, b=None, eps=1e-5
) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
    if w is not None:
        y = y * w.view(shape) + b.view(shape)
    return y


# ----------------------------------------------------------------- ghost batches


@pytest.mark.parametrize(
    ("n", "g", "want"),
    [(10, 4, [4, 4, 2]), (9, 4, [4, 5]), (8, 4, [4, 4]), (3, 4, [3]), (5, 2, [2, 3])],
)
def test_ghost_chunks_fold_a_remainder_of_one(n, g, want):
    assert bn.ghost_chunks(n, g) == want


@pytest.mark.parametrize("n", [12, 13, 14])
@pytest.mark.parametrize("spatial", [False, True])
def test_ghost_statistics_are_per_chunk(n, spatial, bn_impl):
    """Each chunk normalized with its own mean and biased variance; running estimates and
    num_batches_tracked as if torch's layer had seen the chunks one after another."""
    gen = torch.Generator().manual_seed(0)
    shape = (n, 3, 2, 2) if spatial else (n, 3)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 1).requires_grad_()
    ours = (bn.BatchNorm2d if spatial else bn.BatchNorm1d)(
        3, ghost_batch_size=4, dtype=torch.float64
    )
    ref = (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(3, dtype=torch.float64)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_()
    ref.load_state_dict(ours.state_dict())
    y = ours(x)
    sizes = bn.ghost_chunks(n, 4)
    dims = (0, 2, 3) if spatial else (0,)
    hand = torch.cat(
        [
            hand_bn(c, c.mean(dims), c.var(dims, unbiased=False), ours.weight, ours.bias)
            for c in x.detach().split(sizes)
        ]
    )
    assert max_diff(y, hand) < 1e-12, (
        f"ghost output vs per-chunk hand computation: {max_diff(y, hand):.3g}"
    )
    xr = x.detach().clone().requires_grad_()
    y_ref = torch.cat([ref(c) for c in xr.split(sizes)])  # torch's layer, one chunk at a time
    dy = torch.randn(shape, generator=gen, dtype=torch.float64)
    y.backward(dy)
    y_ref.backward(dy)
    for name, a, b in [
        ("output", y, y_ref),
        ("input grad", x.grad, xr.grad),
        ("weight grad", ours.weight.grad, ref.weight.grad),
        ("running_mean", ours.running_mean, ref.running_mean),
        ("running_var", ours.running_var, ref.running_var),
    ]:
        assert max_diff(a, b) < 1e-10, f"ghost {name} vs torch per chunk: {max_diff(a, b):.3g}"
    assert int(ours.num_batches_tracked) == len(sizes)


def test_ghost_is_off_in_eval_and_for_small_batches(bn_impl):
    layer = bn.BatchNorm1d(2, ghost_batch_size=4, dtype=torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64)
    y = layer(x)  # batch not larger than the ghost size: the whole batch
    assert max_diff(y, hand_bn(x, x.mean(0), x.var(0, unbiased=False))) < 1e-12
    layer.eval()
    x = torch.randn(9, 2, dtype=torch.float64)
    assert max_diff(layer(x), hand_bn(x, layer.running_mean, layer.running_var)) < 1e-12


def test_ghost_batch_size_below_two_is_refused():
    with pytest.raises(ValueError, match="ghost_batch_size must be >= 2"):
        bn.BatchNorm1d(3, ghost_batch_size=1)


# ----------------------------------------------------------------- population statistics


def test_population_mode_normalizes_with_the_buffers(bn_impl):
    gen = torch.Generator().manual_seed(1)
    layer = bn.BatchNorm2d(3, stats="population", dtype=torch.float64)
    ref = nn.BatchNorm2d(3, dtype=torch.float64)  # for the buffer updates
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_()
    ref.load_state_dict(layer.state_dict())
    for _ in range(3):
        x = (torch.randn(5, 3, 2, 2, generator=gen, dtype=torch.float64) * 3 + 2).requires_grad_()
        mean, var = layer.running_mean.clone(), layer.running_var.clone()  # before this batch
        y = layer(x)
        hand = hand_bn(x.detach(), mean, var, layer.weight.detach(), layer.bias.detach())
        assert max_diff(y, hand) < 1e-12, f"population output vs buffers: {max_diff(y, hand):.3g}"
        ref(x.detach())
        assert max_diff(layer.running_mean, ref.running_mean) < 1e-12, (
            "buffers still follow the batches"
        )
        assert max_diff(layer.running_var, ref.running_var) < 1e-12
        # no batch statistics in the graph: dx = γ/√(var + ε)·dy
        dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        y.backward(dy)
        want = dy * (layer.weight / torch.sqrt(var + 1e-5)).detach().view(1, -1, 1, 1)
        assert max_diff(x.grad, want) < 1e-12, (
            f"population input grad: {max_diff(x.grad, want):.3g}"
        )
        layer.zero_grad()
    assert int(layer.num_batches_tracked) == 3


def test_population_mode_needs_running_stats():
    with pytest.raises(ValueError, match="need track_running_stats"):
        bn.BatchNorm1d(3, stats="population", track_running_stats=False)


# ----------------------------------------------------------------- noise


def test_noise_changes_only_on_its_schedule(bn_impl):
    noise = bn.NoisyBN(mean_std=0.5, scale_std=0.3, every_steps=3)
    layer = bn.BatchNorm1d(4, noise=noise, dtype=torch.float64)
    plain = bn.BatchNorm1d(4, dtype=torch.float64)
    layer.seed_noise(123)
    g = torch.Generator().manual_seed(123)  # the same stream, drawn by hand
    x = torch.randn(8, 4, dtype=torch.float64)
    base = plain(x).detach()
    outs = [layer(x).detach() for _ in range(7)]
    for step, y in enumerate(outs):
        if step % 3 == 0:
            scale = 1 + 0.3 * torch.randn(4, generator=g, dtype=torch.float64)
            shift = 0.5 * torch.randn(4, generator=g, dtype=torch.float64)
        hand = base * scale + shift
        assert max_diff(y, hand) < 1e-12, (
            f"forward {step}: noisy output vs hand draw: {max_diff(y, hand):.3g}"
        )
    assert max_diff(outs[0], outs[2]) == 0 and max_diff(outs[3], outs[5]) == 0
    assert max_diff(outs[2], outs[3]) > 0.01 and max_diff(outs[5], outs[6]) > 0.01
    layer.eval()
    want = hand_bn(x, layer.running_mean, layer.running_var)
    assert max_diff(layer(x), want) < 1e-12, "no noise in eval mode"


def test_noise_reaches_gamma_and_beta_through_the_draw(bn_impl):
    layer = bn.BatchNorm1d(3, noise=bn.NoisyBN(0.2, 0.2, 1), dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def f(x, w, b):  # the same draw on every call; γ and β as inputs, so gradcheck checks them
        layer.seed_noise(7)
        return torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(f, (x, w, b))
    # and the gradients do reach γ and β through the draw: γ·s scales dγ by s
    y = f(x, w, b)
    y.sum().backward()
    assert w.grad is not None and b.grad is not None
    scale = layer._noise_draw[0]
    assert torch.allclose(b.grad, scale * y.shape[0]), f"dβ {b.grad} != s·N {scale * 6}"


# ----------------------------------------------------------------- eval statistics


def test_eval_stats_batch_uses_the_eval_batch(bn_impl):
    layer = bn.BatchNorm1d(3, eval_stats="batch", dtype=torch.float64)
    layer(torch.randn(10, 3, dtype=torch.float64) * 5)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.eval()
    x = torch.randn(7, 3, dtype=torch.float64) + 4
    assert max_diff(layer(x), hand_bn(x, x.mean(0), x.var(0, unbiased=False))) < 1e-12
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed in eval"


def _two_layer_net(norm: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 4),
        (bn.BatchNorm1d(4) if norm == "custom" else nn.BatchNorm1d(4)),
        nn.ReLU(),
        nn.Linear(4, 3),
        (bn.BatchNorm1d(3) if norm == "custom" else nn.BatchNorm1d(3)),
    ).double()


@pytest.mark.parametrize("norm", ["custom", "torch"])
def test_recalibrate_equals_the_full_set_statistics(norm, bn_impl):
    net = _two_layer_net(norm)
    x = torch.randn(50, 5, dtype=torch.float64) * 2 + 1
    for _ in range(3):
        net(torch.randn(16, 5, dtype=torch.float64))  # stale estimates from other data
    bn.recalibrate(net, x, batch_size=16)  # 16 + 16 + 16 + 2: pooled exactly
    with torch.no_grad():
        z1 = net[0](x)  # layer 1's inputs over the whole set
        m1, v1 = z1.mean(0), z1.var(0, unbiased=True)
        h = torch.relu(
            hand_bn(z1, m1, v1, net[1].weight, net[1].bias)
        )  # eval with the new estimates
        z2 = net[3](h)
        m2, v2 = z2.mean(0), z2.var(0, unbiased=True)
    for name, got, want in [
        ("layer 1 mean", net[1].running_mean, m1),
        ("layer 1 var", net[1].running_var, v1),
        ("layer 2 mean", net[4].running_mean, m2),
        ("layer 2 var", net[4].running_var, v2),
    ]:
        assert max_diff(got, want) < 1e-10, (
            f"recalibrated {name} vs full set: {max_diff(got, want):.3g}"
        )
    assert net.training, "recalibrate leaves the model in the mode it found"


# ----------------------------------------------------------------- config and factory


def test_make_norm_passes_the_controls_and_refuses_them_for_torch():
    layer = bn.make_norm(
        "custom",
        8,
        True,
        ghost_batch_size=16,
        stats="population",
        noise=bn.NoisyBN(0.1, 0.1, 2),
        eval_stats="batch",
    )
    assert (layer.ghost_batch_size, layer.stats, layer.noise.every_steps, layer.eval_stats) == (
        16,
        "population",
        2,
        "batch",
    )
    with pytest.raises(ValueError, match="need norm 'custom'"):
        bn.make_norm("torch", 8, True, ghost_batch_size=16)


def test_build_model_wires_the_controls():
    cfg = ModelConfig(
        norm="custom",
        hidden=[6, 5],
        ghost_batch_size=4,
        bn_stats="population",
        bn_noise={"mean_std": 0.1, "scale_std": 0.2, "every_steps": 5},
        eval_stats="recalibrate",
    )
    model = build_model(cfg, (7,), 2)
    layers = [m for m in model.modules() if isinstance(m, bn.BatchNorm1d)]
    assert len(layers) == 2
    for layer in layers:
        assert (layer.ghost_batch_size, layer.stats, layer.eval_stats) == (
            4,
            "population",
            "recalibrate",
        )
        assert layer.noise == bn.NoisyBN(0.1, 0.2, 5)
    init_weights(model, seed=3)  # seeds each layer's noise stream differently, reproducibly
    a = [layer.noise_generator.initial_seed() for layer in layers]
    init_weights(model, seed=3)
    assert a == [layer.noise_generator.initial_seed() for layer in layers] and a[0] != a[1]


@pytest.mark.parametrize(
    "control",
    [
        {"ghost_batch_size": 8},
        {"bn_stats": "population"},
        {"bn_noise": {"mean_std": 0.1}},
        {"eval_stats": "batch"},
    ],
)
@pytest.mark.parametrize("norm", ["torch", "none"])
def test_config_refuses_controls_without_custom_norm(norm, control):
    with pytest.raises(ConfigError, match=r"this control needs norm: custom \(found norm: " + norm):
        experiment_from_dict({"model": {"norm": norm, **control}})
    experiment_from_dict({"model": {"norm": "custom", **control}})  # fine with ours


def test_a_swept_control_applies_to_custom_cells_only():
    """Swept beside norm torch, a control is not a clash: the torch cell takes it at its
    default, so torch's runs are one run per seed serving both ghost cells (its baseline)."""
    exp = experiment_from_dict(
        {
            "model": {"norm": "custom"},
            "sweep": {"model.norm": ["custom", "torch"], "model.ghost_batch_size": [None, 16]},
        }
    )
    plan = {tuple(r.params.values()): r for r in expand(exp)}
    assert plan[("custom", 16)].config.model.ghost_batch_size == 16
    assert plan[("torch", 16)].config.model.ghost_batch_size is None
    assert plan[("torch", 16)].run_id == plan[("torch", None)].run_id
    assert plan[("custom", 16)].run_id != plan[("custom", None)].run_id


def test_config_checks_the_control_values():
    with pytest.raises(ConfigError) as e:
        experiment_from_dict(
            {
                "model": {
                    "norm": "custom",
                    "ghost_batch_size": 1,
                    "bn_stats": "pop",
                    "bn_noise": {"every_steps": 0, "mean_sd": 1},
                }
            }
        )
    msg = str(e.value)
    assert "model.ghost_batch_size" in msg and "model.bn_stats" in msg
    assert "model.bn_noise.every_steps" in msg and "did you mean 'mean_std'" in msg


# ----------------------------------------------------------------- end to end


CONTROL_RUNS = {
    "ghost": {"arch": "cnn", "channels": [4, 8], "ghost_batch_size": 16},
    "population": {"bn_stats": "population"},
    "noise": {"bn_noise": {"mean_std": 0.1, "scale_std": 0.1, "every_steps": 2}},
    "eval-batch": {"eval_stats": "batch"},
    "recalibrate": {"eval_stats": "recalibrate"},
}


@pytest.mark.parametrize("name", list(CONTROL_RUNS))
def test_a_config_with_each_control_runs_end_to_end(name, tmp_path: Path):
    model = {
        "arch": "mlp",
        "hidden": [16],
        "activation": "relu",
        "norm": "custom",
        **CONTROL_RUNS[name],
    }
    cfg = {
        "name": f"ctl-{name}",
        "data": {"dataset": "digits"},
        "model": model,
        "train": {"lr": 0.1, "batch_size": 128, "epochs": 2, "seed": 0, "device": "cpu"},
    }
    torch.set_num_threads(1)  # small layers: a second thread only contends on shared cores
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    runs = list((tmp_path / "results" / f"ctl-{name}" / "runs").iterdir())
    assert len(runs) == 1
    summary = json.loads((runs[0] / "summary.json").read_text())
    metrics = pd.read_csv(runs[0] / "metrics.csv")
    assert summary["steps"] > 0 and not summary["diverged"]
    assert len(metrics) == 3 and metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0], (
        metrics.to_string()
    )
    saved = yaml.safe_load((runs[0] / "config.yaml").read_text())["model"]
    for key, value in CONTROL_RUNS[name].items():
        assert saved[key] == (
            value
            if not isinstance(value, dict)
            else {**{"mean_std": 0.0, "scale_std": 0.0, "every_steps": 1}, **value}
        )

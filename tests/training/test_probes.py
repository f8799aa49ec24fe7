"""bnexp.training.probes against hand computations on tiny fixed networks and data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bnexp.config import BatchStatNoiseConfig, IcsConfig, RunConfig, ShiftProbeConfig
from bnexp.nn.models import Block, Net, build_model, init_weights
from bnexp.training.probes import (
    NOISE_COLUMNS,
    PROBE_COLUMNS,
    IcsProbe,
    ShiftProbe,
    batch_stat_noise,
    bn_inputs,
    bn_noise_rows,
    shift_rows,
    unit_stats,
)
from bnexp.training.train import train_run

# --------------------------------------------------------------------------- percentiles and drift


def test_unit_stats_by_hand():
    # unit 0 holds 1..5, unit 1 holds 10, 20, 30, 40, 50; linear interpolation between order stats:
    # p15 = x[0.6] = 1.6, p50 = 3, p85 = x[3.4] = 4.4 (and x10 for unit 1)
    z = torch.tensor(
        [[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [5.0, 50.0]]
    )  # (N=5, C=2)
    s = unit_stats(z)
    expect = {
        "p15": [1.6, 16.0],
        "p50": [3.0, 30.0],
        "p85": [4.4, 44.0],
        "mean": [3.0, 30.0],
        "std": [math.sqrt(2), 10 * math.sqrt(2)],
    }
    for k, v in expect.items():  # float32: a few ulps of rounding, relative and absolute
        torch.testing.assert_close(
            s[k],
            torch.tensor(v, dtype=s[k].dtype),
            rtol=1e-6,
            atol=1e-6,
            msg=lambda m, k=k: f"{k}: {m}",
        )


def test_unit_stats_pools_spatial_positions_per_channel():
    z = torch.randn(6, 3, 4, 5, generator=torch.Generator().manual_seed(0))  # (N, C, H, W)
    s = unit_stats(z)
    for c in range(3):
        values = z[:, c].flatten().double().numpy()
        ref = np.percentile(values, [15, 50, 85])
        got = np.array([s["p15"][c], s["p50"][c], s["p85"][c]], dtype=np.float64)
        # z is float32: its statistics carry float32 rounding against numpy's float64 ones
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=f"channel {c}")
        np.testing.assert_allclose(
            float(s["std"][c]), values.std(), rtol=1e-5, atol=1e-6, err_msg=f"channel {c} std"
        )


def test_drift_is_the_mean_absolute_change_over_units():
    prev = {
        "p15": torch.zeros(2),
        "p50": torch.tensor([0.0, 1.0]),
        "p85": torch.zeros(2),
        "mean": torch.zeros(2),
        "std": torch.tensor([1.0, 1.0]),
    }
    now = {**prev, "p50": torch.tensor([1.0, 3.0]), "std": torch.tensor([1.5, 0.5])}
    rows = shift_rows(10, 2, "z", now, [1], prev)
    assert [r["unit"] for r in rows] == ["1", "all"]
    assert rows[0]["p50"] == pytest.approx(3.0, rel=1e-12, abs=1e-12)
    assert rows[1]["p50"] == pytest.approx(2.0, rel=1e-12, abs=1e-12)  # average over units
    assert rows[1]["drift_p50"] == pytest.approx(1.5)  # (|1 - 0| + |3 - 1|) / 2
    assert rows[1]["drift_std"] == pytest.approx(0.5)
    assert "drift_p50" not in shift_rows(0, 2, "z", now, [1], None)[1]


def _mlp(norm: str, hidden=(5, 4, 3), seed=0) -> Net:
    cfg = RunConfig.model_validate(
        {"model": {"arch": "mlp", "hidden": list(hidden), "activation": "sigmoid", "norm": norm}}
    ).model
    model = build_model(cfg, (6,), 3)
    init_weights(model, seed)
    return model


def test_shift_probe_records_z_and_z_tilde_and_leaves_bn_buffers_alone():
    model = _mlp("torch").double()
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():  # a few training-mode batches so the running stats are not at their init
        for _ in range(3):
            model(torch.randn(16, 6, dtype=torch.float64))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = ShiftProbe(ShiftProbeConfig(layer=2, every_steps=5, units=[0, 3]), model, x)
    probe.record(0)
    probe.record(3)  # not a probe step
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed by the probe"
    frame = pd.DataFrame(probe.rows)
    assert sorted(frame["site"].unique()) == ["z", "z_tilde"] and set(frame["step"]) == {0}
    # reference: layer 2's z and z~ by hand, in training mode (the probe batch's own statistics)
    with torch.no_grad():
        h1 = model.blocks[0](x)
        z = model.blocks[1].weight(h1)
        mu, var = z.mean(0), z.var(0, unbiased=False)
        z_tilde = (z - mu) / torch.sqrt(var + model.blocks[1].norm.eps)
    for site, t in (("z", z), ("z_tilde", z_tilde)):
        for unit in (0, 3):
            row = frame[(frame["site"] == site) & (frame["unit"] == str(unit))].iloc[0]
            ref = np.percentile(t[:, unit].numpy(), [15, 50, 85])
            got = np.array([row.p15, row.p50, row.p85])
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9, err_msg=f"{site} {unit}")
    all_std = frame[(frame["site"] == "z_tilde") & (frame["unit"] == "all")]["std"].iloc[0]
    # sqrt(var / (var + eps)), averaged
    assert all_std == pytest.approx(
        float(z_tilde.std(0, unbiased=False).mean()), rel=1e-10, abs=1e-12
    )


def test_shift_probe_without_bn_has_only_z():
    probe = ShiftProbe(
        ShiftProbeConfig(layer=1, every_steps=1, units=[0]), _mlp("none"), torch.randn(8, 6)
    )
    probe.record(0)
    assert {r["site"] for r in probe.rows} == {"z"}


# --------------------------------------------------------------------------- ICS


def _two_layer_linear(w1: torch.Tensor, w2: torch.Tensor) -> Net:
    """x -> W1 x -> W2 (W1 x): two linear hidden 'layers', no bias, no norm, no nonlinearity."""
    l1 = nn.Linear(w1.shape[1], w1.shape[0], bias=False, dtype=torch.float64)
    l2 = nn.Linear(w2.shape[1], w2.shape[0], bias=False, dtype=torch.float64)
    with torch.no_grad():
        l1.weight.copy_(w1)
        l2.weight.copy_(w2)
    blocks = [
        Block(l1, nn.Identity(), nn.Identity(), True),
        Block(l2, nn.Identity(), nn.Identity(), True),
    ]
    return Net(nn.Identity(), blocks, nn.Identity()).double()


def test_ics_on_a_two_layer_linear_network_by_hand():
    g = torch.Generator().manual_seed(3)
    w1 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    w2 = torch.randn(2, 4, generator=g, dtype=torch.float64)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)  # (N, d)
    y = torch.randn(5, 2, generator=g, dtype=torch.float64)
    lr = 0.05
    # loss = 0.5 * sum_i ||W2 W1 x_i - y_i||^2; with X = x^T (d, N), R = W2 W1 X - Y^T:
    #   dL/dW2 = R (W1 X)^T,  dL/dW1 = W2^T R X^T
    X, Y = x.T, y.T
    R = w2 @ w1 @ X - Y
    G = R @ (w1 @ X).T
    w1_new = w1 - lr * (w2.T @ R @ X.T)  # layer 1 takes its SGD step
    R_new = w2 @ w1_new @ X - Y
    G_new = R_new @ (w1_new @ X).T  # layer 2's gradient with the updated layer 1, W2 unchanged
    ics_ref = float((G - G_new).norm())
    cos_ref = float((G * G_new).sum() / (G.norm() * G_new.norm()))

    model = _two_layer_linear(w1, w2)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    probe = IcsProbe(IcsConfig(layer=2, every_steps=1), model)

    def loss_fn(m):
        return 0.5 * ((m(x) - y) ** 2).sum()

    loss_fn(model).backward()
    probe.before_step(1)
    opt.step()
    probe.after_step(1, loss_fn)
    row = probe.rows[0]
    assert row["ics_l2"] == pytest.approx(ics_ref, rel=1e-10), (
        f"ICS off by {row['ics_l2'] - ics_ref:.3g}"
    )
    assert row["ics_cos"] == pytest.approx(cos_ref, rel=1e-10), (
        f"cos off by {row['ics_cos'] - cos_ref:.3g}"
    )
    assert row["grad_norm"] == pytest.approx(float(G.norm()), rel=1e-12, abs=1e-14)
    # training untouched: both layers took exactly their own SGD step (float64)
    torch.testing.assert_close(model.blocks[0].weight.weight, w1_new, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model.blocks[1].weight.weight, w2 - lr * G, rtol=1e-12, atol=1e-14)
    # a step that is not an ICS step records nothing
    probe2 = IcsProbe(IcsConfig(layer=2, every_steps=2), model)
    probe2.before_step(1)
    probe2.after_step(1, loss_fn)
    assert probe2.rows == []


# --------------------------------------------------------------------------- BN noise


def test_batch_stat_noise_by_hand_on_four_values():
    # values 0, 1, 2, 3: mu = 1.5, var = 1.25. For m = 2 the 6 pairs are equally likely:
    #   E[(mu_B - mu)^2] / var = (N - m) / (m (N - 1)) = 1/3;
    #   var_B / var - 1 over the pairs = -.8, -.2, .8, -.8, -.2, -.8 -> mean square 2.64 / 6 = 0.44.
    z = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    rows = batch_stat_noise(
        z, z * z, [2, 4, 8], samples=20000, gen=torch.Generator().manual_seed(0)
    )
    by_m = {r["batch_size"]: r for r in rows}
    assert set(by_m) == {2, 4}  # a batch larger than the data is skipped
    assert by_m[2]["mean_noise"] == pytest.approx(math.sqrt(1 / 3), rel=0.02)
    assert by_m[2]["var_noise"] == pytest.approx(math.sqrt(0.44), rel=0.02)
    assert by_m[2]["expected_mean_noise"] == pytest.approx(math.sqrt(1 / 3))
    assert by_m[4]["mean_noise"] == pytest.approx(0.0, abs=1e-12) and by_m[4][
        "var_noise"
    ] == pytest.approx(0.0, abs=1e-12)


def test_batch_stat_noise_on_gaussian_data_scales_like_one_over_sqrt_m():
    g = torch.Generator().manual_seed(0)
    z = 3.0 + 2.0 * torch.randn(
        5000, 8, generator=g, dtype=torch.float64
    )  # (N, C); sqrt((N-m)/(N-1)) >= 0.97 here
    sizes = [4, 16, 64, 256]
    rows = batch_stat_noise(z, z * z, sizes, samples=300, gen=g)
    for r in rows:
        m = r["batch_size"]
        assert r["mean_noise"] == pytest.approx(1 / math.sqrt(m), rel=0.1), (
            f"m={m}: {r['mean_noise']:.4f} vs {1 / math.sqrt(m):.4f}"
        )
        if m >= 16:  # Gaussian: var(sample variance) / var^2 ~ 2 / m
            assert r["var_noise"] == pytest.approx(math.sqrt(2 / m), rel=0.15), (
                f"m={m}: {r['var_noise']:.4f} vs {math.sqrt(2 / m):.4f}"
            )
    slope = np.polyfit(np.log(sizes), np.log([r["mean_noise"] for r in rows]), 1)[0]
    assert slope == pytest.approx(-0.5, abs=0.05), f"slope {slope:.3f}"


def test_bn_inputs_give_the_batch_statistics_bn_uses():
    cfg = RunConfig.model_validate(
        {"model": {"arch": "cnn", "channels": [3, 4], "norm": "torch"}}
    ).model
    model = build_model(cfg, (2, 6, 6), 3).double()
    init_weights(model, 0)
    x = torch.randn(10, 2, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    moments = bn_inputs(model, x, lambda t: t, chunk=4)
    assert set(moments) == {1, 2}
    # layer 1's BN input is conv1(x): the batch mean / biased var over (N, H, W) from the
    # per-example moments
    with torch.no_grad():
        z = model.blocks[0].weight(x)
    m1, m2 = moments[1]
    idx = torch.tensor([1, 4, 7])
    mu_b = m1[idx].mean(0)
    var_b = m2[idx].mean(0) - mu_b**2
    ref_mu, ref_var = z[idx].mean((0, 2, 3)), z[idx].var((0, 2, 3), unbiased=False)
    torch.testing.assert_close(mu_b, ref_mu, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(var_b, ref_var, rtol=1e-10, atol=1e-12)
    assert model.training  # mode restored
    assert (
        bn_noise_rows(_mlp("none"), torch.randn(20, 6), lambda t: t, BatchStatNoiseConfig()) == []
    )


# --------------------------------------------------------------------------- inside a run


def _run_cfg(**measure) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {
                "arch": "mlp",
                "hidden": [16, 16, 16],
                "activation": "sigmoid",
                "norm": "torch",
            },
            "train": {"lr": 0.1, "momentum": 0.9, "batch_size": 64, "epochs": 1, "device": "cpu"},
            "measure": measure,
        }
    )


@pytest.mark.slow
def test_probes_do_not_change_training_and_write_their_files(tmp_path):
    plain = train_run(_run_cfg(), tmp_path / "plain")
    probed = train_run(
        _run_cfg(
            shift_probe={"layer": 2, "every_steps": 5, "units": [0, 1]},
            ics={"layer": 3, "every_steps": 4},
            bn_noise={"batch_sizes": [4, 16], "samples": 20},
        ),
        tmp_path / "probed",
    )
    a = pd.read_csv(tmp_path / "plain" / "metrics.csv")
    b = pd.read_csv(tmp_path / "probed" / "metrics.csv")
    # bit-identical: the same code path with and without probes (they fork the RNG, restore
    # BN buffers, run on copies), so any difference at all is a probe changing training
    pd.testing.assert_frame_equal(a, b)
    assert plain.final_train_loss == probed.final_train_loss
    probes = pd.read_csv(tmp_path / "probed" / "probes.csv")
    assert list(probes.columns) == PROBE_COLUMNS
    shift = probes[probes["site"] != "ics"]
    assert set(shift["step"]) == set(range(0, probed.steps + 1, 5))
    assert set(shift["unit"].astype(str)) == {"0", "1", "all"} and set(shift["site"]) == {
        "z",
        "z_tilde",
    }
    ics = probes[probes["site"] == "ics"]
    assert list(ics["step"]) == list(range(4, probed.steps + 1, 4))
    assert (ics["ics_cos"].between(-1, 1)).all() and (ics["ics_l2"] >= 0).all()
    noise = pd.read_csv(tmp_path / "probed" / "bn_noise.csv")
    assert list(noise.columns) == NOISE_COLUMNS and len(noise) == 3 * 2  # 3 BN layers x 2 sizes
    assert not (tmp_path / "plain" / "probes.csv").exists()


@pytest.mark.slow
def test_cli_noise_measures_at_initialization(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from bnexp.cli import app

    cfg = tmp_path / "noise.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "noise",
                "model": {"arch": "mlp", "hidden": [8, 8]},
                "train": {"device": "cpu"},
                "measure": {"bn_noise": {"batch_sizes": [4, 16, 64], "samples": 30}},
                "sweep": {"model.norm": ["none", "torch"], "train.seed": [0, 1]},
            }
        )
    )
    out = CliRunner().invoke(app, ["noise", str(cfg), "--out", str(tmp_path / "results")])
    assert out.exit_code == 0, out.output
    res = tmp_path / "results" / "noise"
    raw = pd.read_csv(res / "noise" / "bn_noise.csv")
    assert (
        set(raw["norm"]) == {"torch"} and len(raw) == 2 * 2 * 3
    )  # 2 seeds x 2 BN layers x 3 sizes
    table = pd.read_csv(res / "tables" / "bn_noise_init.csv")
    assert table["mean_noise_slope"].between(-0.6, -0.4).all(), table["mean_noise_slope"].tolist()
    assert (res / "plots" / "bn_noise_init.png").read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(app, ["noise", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "file not found" in bad.output

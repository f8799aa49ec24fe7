"""bnexp.nn.norm.BatchNorm1d/2d against torch.nn.BatchNorm1d/2d, on the case grid torch uses.

Every comparison prints the largest difference it found.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from bnexp.config import ModelConfig
from bnexp.nn import batchnorm_fast as op
from bnexp.nn import norm as bn
from bnexp.nn.batchnorm_op import batch_norm_reference
from bnexp.nn.models import build_model, init_weights

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}

# name -> (shape, spatial, channels_last); "sliced" cases force the torch-ops path's large-input
# code (temporaries formed on slices of the batch) on small inputs
SHAPES = {
    "(N,C)": ((16, 5), False, False),
    "(N,C,L)": ((8, 5, 7), False, False),
    "(N,C,H,W)": ((4, 5, 6, 3), True, False),
    "channels_last": ((4, 5, 6, 3), True, True),
    "C=1": ((16, 1), False, False),
    "C=1 (N,1,H,W)": ((4, 1, 3, 3), True, False),
    "H=W=1": ((8, 5, 1, 1), True, False),
    "(N,C) sliced": ((16, 5), False, False),
    "(N,C,H,W) sliced": ((4, 5, 6, 3), True, False),
    "channels_last sliced": ((4, 5, 6, 3), True, True),
}


def assert_close(ours: torch.Tensor, ref: torch.Tensor, tol: float, what: str) -> None:
    assert ours.shape == ref.shape, (
        f"{what}: shape {tuple(ours.shape)} != torch's {tuple(ref.shape)}"
    )
    diff = (ours.double() - ref.double()).abs().max().item() if ours.numel() else 0.0
    assert diff <= tol, f"{what}: max |ours - torch| = {diff:.3g} > {tol:g}"


def pair(spatial: bool, dtype: torch.dtype, **kw) -> tuple[nn.Module, nn.Module]:
    """(ours, torch's) with the same random γ, β."""
    theirs = (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(
        kw.pop("num_features"), dtype=dtype, **kw
    )
    ours = (bn.BatchNorm2d if spatial else bn.BatchNorm1d)(theirs.num_features, dtype=dtype, **kw)
    if theirs.affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.uniform_(-0.5, 0.5)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def run_steps(ours, theirs, mode, shape, channels_last, dtype, tol, gen, steps=3, impl=None):
    """A few steps of both layers on the same batches, comparing everything after each. impl:
    "kernel" or "ops" also asserts that our layer took that implementation."""
    for step in range(steps):
        # two training steps first in eval mode, so the running estimates are not (0, 1)
        training = mode == "train" or step < 2
        ours.train(training)
        theirs.train(training)
        x = torch.randn(shape, generator=gen, dtype=dtype) * 2 + 3
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
        yo, yt = ours(xo), theirs(xt)
        if impl is not None:
            took = "kernel" if yo.grad_fn.kernel is not None else "ops"
            assert took == impl, f"our layer took the {took} path, expected {impl}"
        dy = torch.randn(shape, generator=gen, dtype=dtype)
        yo.backward(dy)
        yt.backward(dy)
        tag = f"step {step} ({'train' if training else 'eval'})"
        assert_close(yo, yt, tol, f"{tag} output")
        assert_close(xo.grad, xt.grad, tol, f"{tag} input grad")
        if theirs.affine:
            assert_close(ours.weight.grad, theirs.weight.grad, tol, f"{tag} weight grad")
            if theirs.bias is not None:
                assert_close(ours.bias.grad, theirs.bias.grad, tol, f"{tag} bias grad")
            ours.zero_grad()
            theirs.zero_grad()
        if theirs.track_running_stats:
            assert_close(ours.running_mean, theirs.running_mean, tol, f"{tag} running_mean")
            assert_close(ours.running_var, theirs.running_var, tol, f"{tag} running_var")
            assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked), (
                f"{tag} num_batches_tracked {int(ours.num_batches_tracked)} "
                f"!= {int(theirs.num_batches_tracked)}"
            )
        if channels_last:
            assert yo.is_contiguous(memory_format=torch.channels_last) == yt.is_contiguous(
                memory_format=torch.channels_last
            )


# (shape name, implementation): the C kernel and the torch ops for every shape, but the sliced
# cases, which exist for the torch-ops path
GRID = [
    (name, impl)
    for name in SHAPES
    for impl in (("ops",) if "sliced" in name else ("kernel", "ops"))
]


def _grid_case(mode, affine, track, momentum, shape_name, impl, dtype):
    shape, spatial, channels_last = SHAPES[shape_name]
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        if "sliced" in shape_name:  # the large-input path, single-threaded: a few rows per slice
            mp.setattr(op, "_SMALL", 20)
            mp.setattr(op, "_SLICE", 20)
            torch.set_num_threads(1)
        ours, theirs = pair(
            spatial,
            dtype,
            num_features=shape[1],
            momentum=momentum,
            affine=affine,
            track_running_stats=track,
        )
        run_steps(
            ours,
            theirs,
            mode,
            shape,
            channels_last,
            dtype,
            TOL[dtype],
            torch.Generator().manual_seed(0),
            impl=impl,
        )
        torch.set_num_threads(threads)


def _run_grid(impl, dtype, shapes, request) -> int:
    """Every (mode, affine, track, momentum, shape) case of `impl` in `shapes`, in one test; a
    failure names its case. Returns the number of cases run."""
    request.getfixturevalue("kernel_path" if impl == "kernel" else "ops_path")
    done = 0
    for mode, affine, track, momentum, name in itertools.product(
        ("train", "eval"), (True, False), (True, False), (0.1, None), shapes
    ):
        if (name, impl) not in GRID:
            continue
        case = f"{mode}, affine={affine}, track={track}, momentum={momentum}, {name}, {impl}"
        try:
            _grid_case(mode, affine, track, momentum, name, impl, dtype)
        except AssertionError as e:
            raise AssertionError(f"case [{case}, {dtype}]: {e}") from None
        done += 1
    return done


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("impl", ["kernel", "ops"])
def test_matches_torch_on_a_corner_of_the_grid(impl, dtype, request, monkeypatch):
    """The fast part of the grid: every flag combination on (N,C) and channels_last."""
    assert _run_grid(impl, dtype, ["(N,C)", "channels_last"], request) == 32


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("impl", ["kernel", "ops"])
def test_matches_torch_on_the_grid(impl, dtype, request, monkeypatch):
    """The whole 6-way grid (mode x affine x track x momentum x shape x implementation), per
    implementation and dtype: 16 flag combinations on each of the shapes."""
    want = 16 * sum(1 for name, i in GRID if i == impl)
    assert _run_grid(impl, dtype, list(SHAPES), request) == want


def test_large_inputs_are_sliced_only_single_threaded(monkeypatch):
    monkeypatch.setattr(op, "_SLICE", 20)
    torch.set_num_threads(1)
    assert len(op._slices(torch.randn(4, 5, 6, 3))) == 4  # 90 values per example > 20: one each
    assert len(op._slices(torch.randn(16, 5))) == 4  # 4 rows of 5 per slice
    torch.set_num_threads(2)
    assert len(op._slices(torch.randn(16, 5))) == 1


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape_name", ["(N,C)", "channels_last"])
@pytest.mark.parametrize("impl", ["kernel", "ops"])
def test_large_input_path_matches_torch(impl, shape_name, threads, request, monkeypatch):
    """Inputs above _SMALL: the kernel takes them on one thread only; the torch ops otherwise."""
    request.getfixturevalue("kernel_path" if impl == "kernel" else "ops_path")
    monkeypatch.setattr(op, "_SMALL", 20)
    monkeypatch.setattr(op, "_SLICE", 20)
    torch.set_num_threads(threads)
    shape, spatial, channels_last = SHAPES[shape_name]
    took = "kernel" if impl == "kernel" and threads == 1 else "ops"
    for dtype in (torch.float64, torch.float32):
        ours, theirs = pair(spatial, dtype, num_features=shape[1])
        run_steps(
            ours,
            theirs,
            "train",
            shape,
            channels_last,
            dtype,
            TOL[dtype],
            torch.Generator().manual_seed(7),
            impl=took,
        )


@pytest.mark.parametrize("impl", ["kernel", "ops"])
def test_reference_path_matches_the_analytic_backward(impl, request):
    request.getfixturevalue(f"{impl}_path")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, 5, 5, generator=gen, dtype=torch.float64)
    w = torch.rand(4, generator=gen, dtype=torch.float64) + 0.5
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    grads = []
    for fn in ("analytic", "reference"):
        xi, wi, bi = (t.clone().requires_grad_() for t in (x, w, b))
        rm, rv, nbt = (
            torch.zeros(4, dtype=torch.float64),
            torch.ones(4, dtype=torch.float64),
            torch.tensor(0),
        )
        if fn == "analytic":
            y = op.BatchNormFunction.apply(xi, wi, bi, rm, rv, True, 0.1, 1e-5)
        else:
            y = batch_norm_reference(xi, rm, rv, wi, bi, True, 0.1, 1e-5, nbt)
        y.backward(dy)
        grads.append((y, xi.grad, wi.grad, bi.grad, rm, rv))
    for name, ours, ref in zip(
        ["y", "dx", "dgamma", "dbeta", "running_mean", "running_var"], *grads, strict=True
    ):
        assert_close(ours, ref, 1e-10, f"analytic vs autograd {name}")


@pytest.mark.parametrize("impl", ["kernel", "ops"])
@pytest.mark.parametrize("shape", [(6, 3), (5, 3, 4), (4, 3, 3, 2)], ids=["2d", "3d", "4d"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradcheck(shape, mode, impl, request):
    request.getfixturevalue(f"{impl}_path")
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(shape[1], generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(shape[1], generator=gen, dtype=torch.float64, requires_grad=True)
    rm = torch.randn(shape[1], generator=gen, dtype=torch.float64)
    rv = torch.rand(shape[1], generator=gen, dtype=torch.float64) + 0.5

    def f(x, w, b):  # no running update: gradcheck calls f many times
        return op.BatchNormFunction.apply(x, w, b, rm, rv, mode == "train", None, 1e-5)

    assert torch.autograd.gradcheck(f, (x, w, b))


@pytest.mark.parametrize("impl", ["kernel", "ops"])
def test_gradcheck_layer_without_affine(impl, request):
    request.getfixturevalue(f"{impl}_path")
    layer = bn.BatchNorm2d(3, affine=False, track_running_stats=False, dtype=torch.float64)
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("impl", ["kernel", "ops"])
@pytest.mark.parametrize("shape", [(6, 3), (5, 3, 4), (4, 3, 3, 2)], ids=["2d", "3d", "4d"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradgradcheck(shape, mode, impl, request):
    """Second derivatives (create_graph=True runs the differentiable backward), float64."""
    request.getfixturevalue(f"{impl}_path")
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(shape[1], generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(shape[1], generator=gen, dtype=torch.float64, requires_grad=True)
    rm = torch.randn(shape[1], generator=gen, dtype=torch.float64)
    rv = torch.rand(shape[1], generator=gen, dtype=torch.float64) + 0.5

    def f(x, w, b):
        return op.BatchNormFunction.apply(x, w, b, rm, rv, mode == "train", None, 1e-5)

    assert torch.autograd.gradgradcheck(f, (x, w, b))


@pytest.mark.parametrize("impl", ["kernel", "ops"])
def test_second_derivatives_match_torchs(impl, request):
    """A gradient penalty: d/dθ ||dL/dx||², ours against torch's layer."""
    request.getfixturevalue(f"{impl}_path")
    ours, theirs = pair(False, torch.float64, num_features=3)
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    got = []
    for layer in (ours, theirs):
        xi = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(layer(xi).pow(3).sum(), xi, create_graph=True)
        got.append(torch.autograd.grad(g.pow(2).sum(), (xi, layer.weight, layer.bias)))
    for name, a, b in zip(("x", "weight", "bias"), *got, strict=True):
        assert_close(a, b, 1e-9, f"second derivative wrt {name}")


def test_momentum_none_is_the_two_batch_average():
    layer = bn.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    x1 = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    x2 = torch.randn(6, 3, generator=gen, dtype=torch.float64) * 3 + 1
    layer(x1)
    layer(x2)
    want_mean = (x1.mean(0) + x2.mean(0)) / 2
    want_var = (x1.var(0, unbiased=True) + x2.var(0, unbiased=True)) / 2
    assert_close(layer.running_mean, want_mean, 1e-12, "cumulative running_mean")
    assert_close(layer.running_var, want_var, 1e-12, "cumulative running_var")
    assert int(layer.num_batches_tracked) == 2


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("direction", ["torch->ours", "ours->torch"])
def test_state_dict_round_trip(direction, track, affine):
    src_cls, dst_cls = (
        (nn.BatchNorm2d, bn.BatchNorm2d)
        if direction == "torch->ours"
        else (bn.BatchNorm2d, nn.BatchNorm2d)
    )
    src = src_cls(4, affine=affine, track_running_stats=track)
    for _ in range(3):
        src(torch.randn(5, 4, 3, 3) * 2 + 1)
    if affine:
        with torch.no_grad():
            src.weight.uniform_()
            src.bias.uniform_()
    dst = dst_cls(4, affine=affine, track_running_stats=track)
    result = dst.load_state_dict(src.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert list(dst.state_dict()) == list(src.state_dict())
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value), f"{key} differs after load"
    src.eval()
    dst.eval()
    x = torch.randn(5, 4, 3, 3)
    assert_close(dst(x), src(x), 1e-6, "eval output after loading")


@pytest.mark.parametrize("momentum", [0.1, None])
def test_old_state_dict_keeps_the_modules_count_as_torch(momentum):
    """A version-1 state dict (no num_batches_tracked): torch keeps the module's own count."""
    sd = nn.BatchNorm1d(3, dtype=torch.float64).state_dict()
    del sd["num_batches_tracked"]
    sd._metadata[""]["version"] = 1
    ours, theirs = pair(False, torch.float64, num_features=3, momentum=momentum)
    x = torch.randn(6, 3, dtype=torch.float64)
    for layer in (ours, theirs):
        for _ in range(4):
            layer(x)
        layer.load_state_dict(
            {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
        )
        assert int(layer.num_batches_tracked) == 4
        layer(x * 2 + 1)
    assert_close(ours.running_mean, theirs.running_mean, 1e-12, "running_mean after the load")
    assert_close(ours.running_var, theirs.running_var, 1e-12, "running_var after the load")


def test_buffers_and_parameters_have_torchs_shapes():
    ours, theirs = bn.BatchNorm2d(6), nn.BatchNorm2d(6)
    assert {k: (v.shape, v.dtype) for k, v in ours.state_dict().items()} == {
        k: (v.shape, v.dtype) for k, v in theirs.state_dict().items()
    }
    none = bn.BatchNorm1d(6, affine=False, track_running_stats=False)
    assert none.weight is None and none.running_mean is None and none.num_batches_tracked is None
    assert list(none.state_dict()) == []


def test_one_value_per_channel_in_training_raises():
    layer = bn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        layer(torch.randn(1, 3))
    layer2 = bn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        layer2(torch.randn(1, 3, 1, 1))
    layer.eval()
    assert layer(torch.randn(1, 3)).shape == (1, 3)  # eval with running estimates: fine, as torch


def test_wrong_input_dims_raise():
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        bn.BatchNorm1d(3)(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="expected 4D input"):
        bn.BatchNorm2d(3)(torch.randn(2, 3))


def test_reset_running_stats_and_parameters():
    layer = bn.BatchNorm1d(3)
    layer(torch.randn(8, 3) * 4 + 2)
    with torch.no_grad():
        layer.weight.fill_(3)
        layer.bias.fill_(2)
    layer.reset_running_stats()
    assert torch.equal(layer.running_mean, torch.zeros(3)) and torch.equal(
        layer.running_var, torch.ones(3)
    )
    assert int(layer.num_batches_tracked) == 0
    assert torch.equal(layer.weight, torch.full((3,), 3.0))  # parameters untouched
    layer(torch.randn(8, 3))
    layer.reset_parameters()
    assert torch.equal(layer.weight, torch.ones(3)) and torch.equal(layer.bias, torch.zeros(3))
    assert int(layer.num_batches_tracked) == 0


def test_repr_names_the_arguments():
    assert repr(bn.BatchNorm2d(4)) == repr(nn.BatchNorm2d(4))
    assert repr(bn.BatchNorm1d(4, bias=False, momentum=None)) == repr(
        nn.BatchNorm1d(4, bias=False, momentum=None)
    )


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_affine_without_bias_matches_torch(mode):
    gen = torch.Generator().manual_seed(4)
    theirs = nn.BatchNorm2d(3, bias=False, dtype=torch.float64)
    ours = bn.BatchNorm2d(3, bias=False, dtype=torch.float64)
    assert ours.bias is None and list(ours.state_dict()) == list(theirs.state_dict())
    run_steps(ours, theirs, mode, (4, 3, 2, 2), False, torch.float64, 1e-10, gen)


def test_track_flag_flipped_after_construction_acts_as_torch():
    """torch keeps normalizing with existing buffers in eval even if the flag is turned off."""
    ours, theirs = pair(True, torch.float64, num_features=3)
    run_steps(
        ours,
        theirs,
        "train",
        (4, 3, 2, 2),
        False,
        torch.float64,
        1e-10,
        torch.Generator().manual_seed(5),
        steps=2,
    )
    ours.track_running_stats = theirs.track_running_stats = False
    run_steps(
        ours,
        theirs,
        "eval",
        (4, 3, 2, 2),
        False,
        torch.float64,
        1e-10,
        torch.Generator().manual_seed(6),
    )


# ----------------------------------------------------------------- whole training, 200 steps


def _train(norm: str, arch: str, steps: int = 200) -> list[float]:
    torch.set_num_threads(1)  # small convolutions: threads only contend on shared cores
    gen = torch.Generator().manual_seed(0)
    if arch == "mlp":
        cfg = ModelConfig(arch="mlp", hidden=[32, 16], activation="tanh", norm=norm)
        x = torch.randn(512, 20, generator=gen)
        teacher = torch.randn(20, 4, generator=gen)
        y = (x @ teacher).argmax(1)
        input_shape, outputs = (20,), 4
    else:
        cfg = ModelConfig(arch="cnn", channels=[6, 8], activation="relu", norm=norm)
        x = torch.randn(256, 2, 8, 8, generator=gen)
        y = (x[:, 0, :4].mean((1, 2)) > x[:, 1, 4:].mean((1, 2))).long()
        input_shape, outputs = (2, 8, 8), 2
    model = build_model(cfg, input_shape, outputs)
    init_weights(model, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    order = torch.Generator().manual_seed(1)
    losses = []
    while len(losses) < steps:
        for idx in torch.randperm(len(x), generator=order).split(32):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    model.eval()
    with torch.no_grad():
        losses.append(nn.functional.cross_entropy(model(x), y).item())  # eval: running estimates
    return losses


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_200_training_steps_give_torchs_losses(arch, bn_impl):
    ours, theirs = _train("custom", arch), _train("torch", arch)
    diffs = [abs(a - b) for a, b in zip(ours, theirs, strict=True)]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    assert diffs[worst] <= 1e-4, (
        f"{arch}: loss at step {worst} differs by {diffs[worst]:.3g} "
        f"(ours {ours[worst]:.6f}, torch {theirs[worst]:.6f})"
    )
    assert theirs[-1] < theirs[0], "the network did not learn: the check would be vacuous"

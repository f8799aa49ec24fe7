"""The C kernel behind our BatchNorm: build and cache, the fallback without it, which inputs it
takes, and its numbers (the layer-level comparisons with torch are the grid in test_norm.py)."""

from __future__ import annotations

import ctypes
import os
import stat
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from bnexp.bench.bn import custom_path
from bnexp.nn import batchnorm_fast as op
from bnexp.nn import bn_kernel
from bnexp.nn import norm as bn


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty kernel cache in tmp_path, and load() forgetting what it loaded before."""
    monkeypatch.setenv("BNEXP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BNEXP_BN_KERNEL", raising=False)
    bn_kernel.load.cache_clear()
    yield tmp_path / "cache"
    bn_kernel.load.cache_clear()


def _fake_cc(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-cc"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_build_compiles_once_then_loads_the_cached_library(fresh, kernel_path, monkeypatch):
    path = bn_kernel.build()
    assert path.parent == fresh and path.exists()
    stamp = path.stat().st_mtime_ns

    def no_compiler(*args, **kwargs):
        raise AssertionError(f"compiled again: {args}")

    monkeypatch.setattr(bn_kernel.subprocess, "run", no_compiler)
    assert bn_kernel.build() == path and path.stat().st_mtime_ns == stamp, "a cache hit"
    assert [p.name for p in fresh.iterdir()] == [path.name], "no temporary files left behind"
    monkeypatch.setenv("CC", "another-cc")  # another compiler: another library
    with pytest.raises(AssertionError, match="compiled again"):
        bn_kernel.build()


def test_a_compiler_refusing_march_native_gets_the_portable_flags(
    fresh, kernel_path, monkeypatch, tmp_path
):
    log = tmp_path / "calls"
    real = bn_kernel.compiler()
    cc = _fake_cc(
        tmp_path,
        f'echo "$*" >> {log}\n'
        'for a in "$@"; do [ "$a" = -march=native ] && exit 1; done\n'
        f'exec {real} "$@"',
    )
    monkeypatch.setenv("CC", cc)
    path = bn_kernel.build()
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and "-march=native" in calls[0] and "-march=native" not in calls[1]
    lib = bn_kernel._bind(ctypes.CDLL(str(path)), path)
    assert set(lib.forward) == {torch.float32, torch.float64}


def test_without_a_compiler_the_layer_warns_once_and_uses_torch_ops(fresh, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.warns(
        RuntimeWarning,
        match=r"could not build the BatchNorm C kernel with '/nonexistent/cc'.*torch-ops path",
    ):
        assert bn_kernel.load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cached: no second warning
        assert bn_kernel.load() is None
        ours, theirs = bn.BatchNorm1d(4), nn.BatchNorm1d(4)
        x = torch.randn(16, 4)
        y = ours(x)
        assert y.grad_fn.kernel is None
        assert (y - theirs(x)).abs().max() < 1e-5


def test_a_compile_error_is_reported_with_the_compilers_message(fresh, monkeypatch, tmp_path):
    monkeypatch.setenv(
        "CC", _fake_cc(tmp_path, 'echo "batchnorm.c:1: error: something broke" >&2; exit 1')
    )
    with pytest.warns(RuntimeWarning, match="batchnorm.c:1: error: something broke"):
        assert bn_kernel.load() is None
    assert not any(fresh.iterdir()), "a failed build leaves nothing in the cache"


def test_turned_off_by_the_environment_silently(fresh, monkeypatch):
    monkeypatch.setenv("BNEXP_BN_KERNEL", "off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bn_kernel.load() is None
    assert not fresh.exists(), "nothing built when turned off"


def test_cpu_id_names_this_cpu():
    cpu = bn_kernel.cpu_id()
    assert cpu.strip(), "the cache key needs something that tells CPUs apart"


# ----------------------------------------------------------------- which inputs it takes


def _layout(x, *per_channel, needs_running=False):
    c = x.shape[1]
    per_channel = per_channel or (
        torch.ones(c, dtype=x.dtype),
        torch.zeros(c, dtype=x.dtype),
        None,
        None,
    )
    return op._kernel_layout(x, per_channel, needs_running)


def test_layouts_the_kernel_takes(kernel_path):
    assert _layout(torch.randn(8, 5)) == (8, 1, torch.contiguous_format)
    assert _layout(torch.randn(8, 5, 7)) == (8, 7, torch.contiguous_format)
    assert _layout(torch.randn(4, 5, 6, 3)) == (4, 18, torch.contiguous_format)
    assert _layout(torch.randn(4, 5, 6, 3).contiguous(memory_format=torch.channels_last)) == (
        72,
        1,
        torch.channels_last,
    )
    assert _layout(torch.randn(8, 5, dtype=torch.float64)) == (8, 1, torch.contiguous_format)
    assert _layout(torch.randn(10, 5)[2:7]) == (5, 1, torch.contiguous_format), (
        "a contiguous slice (a ghost batch)"
    )


def test_inputs_the_kernel_leaves_to_torch_ops(kernel_path, monkeypatch):
    assert _layout(torch.randn(5, 8).t()) is None, "non-contiguous"
    assert _layout(torch.randn(8, 5, 3).transpose(1, 2).contiguous().transpose(1, 2)) is None, (
        "channels-last 3D"
    )
    assert _layout(torch.randn(8, 5, dtype=torch.bfloat16)) is None, "bfloat16"
    x = torch.randn(8, 5)
    assert _layout(x, torch.ones(5, dtype=torch.float64), None, None, None) is None, (
        "weight of another dtype"
    )
    assert _layout(x, torch.ones(10)[::2], None, None, None) is None, "non-contiguous weight"
    assert _layout(x, None, None, None, None, needs_running=True) is None, (
        "running estimates needed but absent"
    )
    monkeypatch.setattr(op, "_SMALL", 20)
    torch.set_num_threads(2)
    assert _layout(x) is None, "large, several threads: torch's parallel ops"
    torch.set_num_threads(1)
    assert _layout(x) == (8, 1, torch.contiguous_format), "large, one thread: the kernel"


def test_inputs_left_to_torch_ops_still_match_torch(kernel_path):
    ours, theirs = bn.BatchNorm1d(5), nn.BatchNorm1d(5)
    x = torch.randn(5, 8).t().requires_grad_()  # (8, 5), not contiguous
    y = ours(x)
    assert y.grad_fn.kernel is None
    assert (y - theirs(x)).abs().max() < 1e-5
    bf = torch.randn(16, 5, dtype=torch.bfloat16)
    assert (
        bn.BatchNorm1d(5, dtype=torch.bfloat16)(bf).float()
        - nn.BatchNorm1d(5, dtype=torch.bfloat16)(bf).float()
    ).abs().max() < 0.05


def test_bench_names_the_path_our_layers_took(kernel_path, monkeypatch):
    model = nn.Sequential(nn.Linear(4, 6), bn.BatchNorm1d(6), nn.ReLU())
    assert custom_path(model, torch.randn(8, 4)) == "C kernel"
    monkeypatch.setattr(bn_kernel, "load", lambda: None)
    assert custom_path(model, torch.randn(8, 4)) == "torch ops"


# ----------------------------------------------------------------- its numbers


def _kernel_step(lib, x, w, b, rm, rv, dy, batch_stats=True, factor=0.1, eps=1e-5):
    """One forward and backward through the library's entry points: (y, stats, dx, dw, db)."""
    n, c = x.shape
    y, stats = torch.empty_like(x), x.new_empty(2 * c)
    dx, dw, db = torch.empty_like(x), x.new_empty(c), x.new_empty(c)
    ptr = op._ptr
    assert (
        lib.forward[x.dtype](
            ptr(x),
            ptr(y),
            n,
            c,
            1,
            ptr(w),
            ptr(b),
            ptr(rm),
            ptr(rv),
            batch_stats,
            factor,
            eps,
            ptr(stats),
        )
        == 0
    )
    assert (
        lib.backward[x.dtype](
            ptr(dy), ptr(x), ptr(dx), n, c, 1, ptr(w), ptr(stats), batch_stats, ptr(dw), ptr(db)
        )
        == 0
    )
    return y, stats, dx, dw, db


def test_every_instruction_set_gives_the_same_bits(fresh, kernel_path, monkeypatch):
    """The claim behind -ffp-contract=off and the fixed summation order: a library built for
    this CPU's vector instructions and one built for the baseline ISA agree bit for bit."""
    native = bn_kernel.build()
    monkeypatch.setattr(bn_kernel, "NATIVE", ())
    portable = bn_kernel.build()
    assert portable != native
    libs = [bn_kernel._bind(ctypes.CDLL(str(p)), p) for p in (native, portable)]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 100, generator=gen) * 3 + 1
    dy = torch.randn(256, 100, generator=gen)
    w, b = torch.rand(100, generator=gen) + 0.5, torch.randn(100, generator=gen)
    outs = [_kernel_step(lib, x, w, b, torch.zeros(100), torch.ones(100), dy) for lib in libs]
    for name, a, c in zip(("y", "stats", "dx", "dw", "db"), *outs, strict=True):
        assert torch.equal(a, c), (
            f"{name}: native and portable builds differ by {(a - c).abs().max():.3g}"
        )


def test_statistics_of_an_offset_float32_input_are_accurate(kernel_path):
    """Sums in double, two passes: an input far from zero (mean 1e4, std 1) still gives its
    variance to float32 precision, as computed in float64."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(512, 8, generator=gen, dtype=torch.float64) + 1e4).float()
    rm, rv = torch.zeros(8), torch.ones(8)
    y, stats, *_ = _kernel_step(kernel_path, x, None, None, rm, rv, torch.zeros_like(x), factor=1.0)
    want_var = x.double().var(0, unbiased=False)
    got_var = 1 / stats[8:].double() ** 2 - 1e-5
    assert ((got_var - want_var).abs() / want_var).max() < 1e-5, (
        f"variance off by {((got_var - want_var).abs() / want_var).max():.3g}"
    )
    assert ((rv.double() - x.double().var(0)).abs() / want_var).max() < 1e-5, (
        "running variance (unbiased)"
    )
    # the output, to the input's own precision: float32 spacing at 1e4 is 2**-10 (std 1)
    exact = (x.double() - x.double().mean(0)) / (want_var + 1e-5).sqrt()
    assert (y.double() - exact).abs().max() <= 2**-10, (
        f"output off by {(y.double() - exact).abs().max():.3g}"
    )


def test_kernel_source_ships_with_the_package():
    """An installed (non-editable) bnexp compiles the kernel from its package data: every
    source file must exist and match a package-data pattern in pyproject.toml."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    package = Path(bn_kernel.__file__).parents[1]  # bnexp/
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["bnexp"]
    for src in bn_kernel.SOURCES:
        assert src.is_file(), f"{src} missing: the package data must ship the kernel's source"
        assert os.access(src, os.R_OK)
        rel = src.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), (
            f"{rel} matches no package-data pattern {patterns}"
        )

"""Shared fixtures. Real data come from $BNEXP_SHARED_DATA (default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("BNEXP_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture
def shared_data() -> Path:
    """The real data folder; the test is skipped, with the reason, only when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set BNEXP_SHARED_DATA)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _kernel_cache(tmp_path_factory):
    """The BatchNorm C kernel is built into this session's temporary folder, not the user's
    ~/.cache (tests write nothing outside tmp); subprocesses inherit it."""
    with pytest.MonkeyPatch.context() as mp:
        if "BNEXP_CACHE_DIR" not in os.environ:
            mp.setenv("BNEXP_CACHE_DIR", str(tmp_path_factory.mktemp("bnexp-cache")))
        yield


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    """Tests run on 2 shared cores: keep torch from oversubscribing them."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


@pytest.fixture
def ops_path(monkeypatch):
    """Our BatchNorm without its C kernel: every input takes the torch-ops path."""
    from bnexp.nn import bn_kernel

    monkeypatch.setattr(bn_kernel, "load", lambda: None)


@pytest.fixture
def kernel_path():
    """Our BatchNorm's C kernel, built. Skipped, with the reason, only where there is no C
    compiler at all; a compiler that fails on our source is a test failure."""
    import shutil

    from bnexp.nn import bn_kernel

    if shutil.which(bn_kernel.compiler()) is None:
        pytest.skip(
            f"no C compiler {bn_kernel.compiler()!r} on PATH: the C kernel cannot be built here"
        )
    assert bn_kernel.load() is not None, "the BatchNorm C kernel did not build (see the warning)"
    return bn_kernel.load()


@pytest.fixture(params=["kernel", "ops"])
def bn_impl(request):
    """Runs a test once with our BatchNorm's C kernel and once with its torch-ops path."""
    request.getfixturevalue(f"{request.param}_path")
    return request.param


@pytest.fixture
def fresh_data_cache():
    """bnexp.data's per-process dataset cache emptied before and after the test."""
    from bnexp.data import clear_cache

    clear_cache()
    yield
    clear_cache()

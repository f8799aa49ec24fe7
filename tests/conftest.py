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


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    """Tests run on 2 shared cores: keep torch from oversubscribing them."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)

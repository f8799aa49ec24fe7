"""One tiny sweep (digits, one hidden layer of 16, 2 epochs, 2 norms x 2 seeds), trained once per
test session without tracking; each test logs a copy of it, so a tracker test trains nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sweep_helpers import tiny_experiment

from bnexp.config import experiment_from_dict
from bnexp.sweep.runner import run_experiment


@pytest.fixture(scope="session")
def _trained(tmp_path_factory) -> Path:
    raw = tiny_experiment(epochs=2)
    out = tmp_path_factory.mktemp("tracked-sweep")
    return run_experiment(experiment_from_dict(raw), raw, out, workers=1).results_dir


@pytest.fixture
def sweep(_trained, tmp_path) -> Path:
    """A fresh copy of the trained sweep's results folder (results/tiny)."""
    return Path(shutil.copytree(_trained, tmp_path / "tiny"))

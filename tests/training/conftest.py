"""Fixtures shared by the tests of one run (bnexp.run)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bnexp.config import DataConfig
from bnexp.data import load_dataset


@pytest.fixture(scope="session")
def small_digits():
    """sklearn's digits (bundled, no download): 300 training and 100 test images."""
    d = load_dataset(DataConfig())
    return replace(
        d,
        x_train=d.x_train[:300],
        y_train=d.y_train[:300],
        x_test=d.x_test[:100],
        y_test=d.y_test[:100],
    )

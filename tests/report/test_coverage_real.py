"""The real-run check (issue 21): the report's 95% speed-up interval from 3 and 5 of 24 real
quickstart seeds covers the 24-seed estimate at about its nominal rate.

Subsets are drawn without replacement from 24 seeds, so a subset's spread is smaller than that
of fresh seeds (finite-population factor (24 - k) / 23) and the expected coverage is slightly
above 95% (measured 96.0% at 3 seeds and 97.8% at 5, where the former bootstrap gave 78% and
89%). The band [0.90, 0.995] says "about nominal" and fails the former interval at 3 seeds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _script():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "coverage_real.py"
    spec = importlib.util.spec_from_file_location("coverage_real", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speedup_interval_covers_the_24_seed_estimate_from_3_and_5_seeds(tmp_path):
    script = _script()
    results = script.train(tmp_path, seeds=24, workers=2)
    table = script.coverage(results, subsets=300, sizes=(3, 5)).set_index("seeds")
    for k in (3, 5):
        covers = table.loc[k, "t_interval_covers"]
        assert 0.90 <= covers <= 0.995, f"{k} seeds: the 95% interval covered in {covers:.1%}"
    assert table.loc[3, "old_bootstrap_covers"] < 0.90  # the check can tell the two apart

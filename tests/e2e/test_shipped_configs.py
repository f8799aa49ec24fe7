"""The measurement configs run end to end (shortened) and produce their tables and plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bnexp.cli import app

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ioffe_fig1_config_writes_probes_tables_plots_and_report(tmp_path):
    args = [
        "run",
        str(REPO / "configs" / "ioffe_fig1_digits.yaml"),
        "--out",
        str(tmp_path),
        "--workers",
        "1",
        "--set",
        "train.epochs=2",
        "--set",
        "sweep.train.lr=[0.2]",
        "--set",
        "sweep.train.seed=[0, 1]",
        "--set",
        "measure.bn_noise.samples=10",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    root = tmp_path / "ioffe_fig1_digits"
    summary = pd.read_csv(root / "summary.csv")
    assert len(summary) == 6
    for rid in summary.run_id:
        probes = pd.read_csv(root / "runs" / rid / "probes.csv")
        assert {"step", "layer", "site", "p15", "p50", "p85", "mean", "std"} <= set(probes.columns)
        assert (probes["layer"] == 3).all()
    for table in ("speedup", "regularization", "bn_noise", "shift", "ics"):
        assert (root / "tables" / f"{table}.csv").exists(), table
    for plot in ("accuracy", "shift_percentiles", "bn_noise", "ics"):
        assert (root / "plots" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    assert "Speed-up" in (root / "report.md").read_text()

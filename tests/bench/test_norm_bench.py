"""The BN benchmark's plumbing (not its numbers: speed is judged by `bnexp bench bn`, not by tests)."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from bnexp.bench.bn import bench_case, cases
from bnexp.cli import app


def test_cases_build_the_same_network_for_both_norms():
    for case in cases(layer_only=True):
        ours, theirs = case.build("custom"), case.build("torch")
        assert list(ours.state_dict()) == list(theirs.state_dict()), case.shape
        assert sum(p.numel() for p in ours.parameters()) == sum(
            p.numel() for p in theirs.parameters()
        )


def test_bench_case_returns_a_row_with_a_ratio():
    case = next(c for c in cases(layer_only=True) if c.shape == "BN (64, 20)")
    row = bench_case(case, repeats=3, device=torch.device("cpu"), min_sample_s=0.001)
    assert set(row) >= {"shape", "scope", "custom_ms", "torch_ms", "ratio"}
    assert row["custom_ms"] > 0 and row["torch_ms"] > 0
    assert abs(row["ratio"] - row["custom_ms"] / row["torch_ms"]) < 1e-12


def test_bench_cli_refuses_a_bad_device():
    result = CliRunner().invoke(app, ["bench", "bn", "--device", "tpu"])
    assert result.exit_code == 2
    assert "expected cpu, cuda or auto" in result.output

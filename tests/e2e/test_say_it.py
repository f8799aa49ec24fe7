"""Say it, don't surprise: a resumed run says so, `device: cuda` without CUDA is one line before
any run starts, and `bnexp report` on a read-only folder is one line (or writes to --out)."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch
from sweep_helpers import tiny_experiment, write_yaml
from typer.testing import CliRunner

import bnexp
from bnexp.cli import app
from bnexp.cli import sweep as cli_sweep


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_a_resumed_run_says_from_which_epoch(tmp_path, monkeypatch):
    raw = tiny_experiment(epochs=5, sweep={}, checkpoint_every=1)
    cfg = write_yaml(tmp_path / "exp.yaml", raw)
    args = ["run", str(cfg), "--out", str(tmp_path), "--workers", "1"]
    on_epoch = cli_sweep._SweepDisplay.on_epoch

    def stop_at_3(self, epoch, epochs):
        on_epoch(self, epoch, epochs)
        if epoch == 3:
            raise KeyboardInterrupt  # Ctrl-C after epoch 3 (its checkpoint is written)

    monkeypatch.setattr(cli_sweep._SweepDisplay, "on_epoch", stop_at_3)
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 130, first.output
    assert "0 of 1 run(s) done and kept" in " ".join(first.output.split()), first.output
    monkeypatch.setattr(cli_sweep._SweepDisplay, "on_epoch", on_epoch)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "resumed from epoch 3" in again.output, again.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line_before_any_run(tmp_path):
    raw = tiny_experiment(epochs=1, device="cuda")
    cfg = write_yaml(tmp_path / "exp.yaml", raw)
    line = _one_error_line(CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path)]))
    assert "train.device: cuda" in line and "no CUDA device" in line, line
    assert not list(tmp_path.glob("tiny/runs/*")), "a run started"


@pytest.fixture
def finished_sweep(tmp_path):
    raw = tiny_experiment(epochs=2, sweep={"model.norm": ["none", "torch"], "train.seed": [0, 1]})
    return bnexp.run(raw, out=tmp_path / "src", workers=1).path


@pytest.fixture
def read_only_copy(tmp_path, finished_sweep):
    """The finished results folder seen read-only: chmod for a user, a read-only bind mount for
    root (who ignores modes)."""
    view = tmp_path / "ro"
    if os.geteuid() != 0:
        for p in [finished_sweep, *finished_sweep.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        yield finished_sweep
        for p in [finished_sweep, *finished_sweep.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        return
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(finished_sweep), str(view)]).returncode:
        pytest.skip("running as root and cannot bind-mount a folder")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(view)]).returncode:
            pytest.skip("running as root and cannot remount a folder read-only")
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


@pytest.mark.slow
def test_report_on_a_read_only_folder_is_one_line_or_goes_to_out(tmp_path, read_only_copy):
    before = {p: p.read_bytes() for p in read_only_copy.rglob("*") if p.is_file()}
    line = _one_error_line(CliRunner().invoke(app, ["report", str(read_only_copy)]))
    assert "cannot write the report" in line and "--out" in line, line
    out = tmp_path / "elsewhere"
    moved = CliRunner().invoke(app, ["report", str(read_only_copy), "--out", str(out)])
    assert moved.exit_code == 0, moved.output
    assert {"report.md", "report.html", "claims.json"} <= {p.name for p in out.iterdir()}
    assert (out / "tables" / "speedup.csv").is_file()
    assert (out / "claims.json").read_bytes() == (read_only_copy / "claims.json").read_bytes()
    assert {p: p.read_bytes() for p in read_only_copy.rglob("*") if p.is_file()} == before

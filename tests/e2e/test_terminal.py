"""What the terminal shows: a report that reads at 80 columns. `bnexp run` prints the summary and
the claims (--quiet: the claims only), a sweep of null or single values gets its report, `status`
fits 80 columns, and --help shows plain flags and unbroken sentences."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from bnexp.cli import app

REPO = Path(__file__).resolve().parents[2]

NULL_SWEEP = """\
name: null_sweep
data: {dataset: digits}
model: {arch: mlp, hidden: [8], activation: relu, norm: custom}
train: {lr: 0.1, batch_size: 128, epochs: 1, checkpoint_every: 0}
measure:
  target: {metric: train_acc, value: 0.5}
sweep:
  model.ghost_batch_size: [null]
  train.seed: [0, 1]
"""
# every swept key but the seed at one value, the ghost size at null
SINGLE_VALUES = NULL_SWEEP.replace("name: null_sweep", "name: single_values").replace(
    "  model.ghost_batch_size: [null]\n",
    "  model.norm: [custom]\n  model.ghost_batch_size: [null]\n  train.batch_size: [128]\n"
    "  train.lr: [0.1]\n  model.activation: [relu]\n",
)


def run_cli(args: list[str], **env) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, env=env or None)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def null_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("null")
    (root / "exp.yaml").write_text(NULL_SWEEP)
    code, out, err = run_cli(["run", str(root / "exp.yaml"), "--out", str(root), "-j", "1"])
    assert code == 0 and "Traceback" not in out + err, out + err
    return root / "null_sweep"


def test_a_sweep_of_null_gets_its_report(null_sweep):
    assert (null_sweep / "report.md").stat().st_size > 0
    assert (null_sweep / "report.html").exists() and (null_sweep / "claims.json").exists()
    code, out, err = run_cli(["report", str(null_sweep)])
    assert code == 0, out + err


@pytest.mark.slow
def test_a_sweep_of_single_values_gets_its_report(tmp_path):
    (tmp_path / "exp.yaml").write_text(SINGLE_VALUES)
    code, out, err = run_cli(["run", str(tmp_path / "exp.yaml"), "--out", str(tmp_path), "-j", "1"])
    assert code == 0 and "Traceback" not in out + err, out + err
    assert (tmp_path / "single_values" / "report.md").stat().st_size > 0


def test_status_fits_80_columns_with_whole_headers(null_sweep):
    code, out, err = run_cli(["status", str(null_sweep)], COLUMNS="80")
    assert code == 0, out + err
    lines = out.splitlines()
    assert "…" not in out and max(cell_len(line.rstrip()) for line in lines) <= 80, out
    assert re.search(r"ghost_batch_size\s+done\s+missing", out), out
    assert re.search(r"null\s+2\s+·", out), out  # the null cell says null


def test_help_shows_plain_flags_and_unbroken_sentences():
    code, out, _ = run_cli(["run", "--help"], COLUMNS="200")
    assert code == 0
    assert "<bool>" not in out and re.search(r"--dry-run\s+Validate", out), out
    # the docstring wraps "skips" / "finished runs" in its source; on a wide terminal the
    # sentence is one line
    assert any("A rerun of the same command skips finished runs, resumes" in line
               for line in out.splitlines()), out  # fmt: skip
    for command in (["--help"], ["status", "--help"], ["bench", "bn", "--help"]):
        code, out, _ = run_cli(command, COLUMNS="100")
        assert code == 0 and "<bool>" not in out, out


def claim_lines_only(out: str) -> bool:
    """Every line is a claim's bullet or the continuation of one."""
    lines = [line for line in out.splitlines() if line.strip()]
    return (
        bool(lines)
        and lines[0].startswith("• ")
        and all(line.startswith(("• ", "  ")) for line in lines)
    )


@pytest.mark.slow
def test_quickstart_prints_at_most_40_lines_and_quiet_only_the_claims(tmp_path):
    config = str(REPO / "configs" / "quickstart.yaml")
    args = ["run", config, "--out", str(tmp_path), "--set", "train.epochs=1", "-j", "1"]
    code, out, err = run_cli(args, COLUMNS="80")
    assert code == 0, out + err
    lines = out.splitlines()
    assert len(lines) <= 40, out
    assert max(cell_len(line.rstrip()) for line in lines) <= 80, out
    assert "**" not in out and "Summary" in out and "• " in out
    code, out, err = run_cli([*args, "--quiet"], COLUMNS="80")  # the runs are done: the report
    assert code == 0, out + err
    assert claim_lines_only(out), out
    assert "**" not in out and max(cell_len(line.rstrip()) for line in out.splitlines()) <= 80

"""`bnexp repro` (bnexp.training.repro) against hostile and damaged input: an id that is a path or a
pattern, a --keep folder over the evidence, damaged run files. Each is one line, exit 2, and
the recorded run is left byte for byte as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bnexp.cli import app
from bnexp.config import RunConfig, run_id
from bnexp.training.repro import compare_metrics, reproduce
from bnexp.training.train import train_run

CFG = RunConfig.model_validate(
    {
        "model": {"hidden": [8], "norm": "none"},
        "train": {"batch_size": 128, "epochs": 1, "device": "cpu"},
    }
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A results folder holding one complete run (digits: bundled, no download)."""
    results = tmp_path_factory.mktemp("recorded") / "tiny"
    train_run(CFG, results / "runs" / run_id(CFG))
    return results


@pytest.fixture
def results(recorded, tmp_path) -> Path:
    """A copy each test may damage."""
    return Path(shutil.copytree(recorded, tmp_path / "tiny"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _refused(results: Path, *args: str, expect: str) -> None:
    """One `error:` line naming the problem, exit 2, no traceback, the results untouched."""
    before = _snapshot(results)
    out = CliRunner().invoke(app, ["repro", str(results), *args])
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert out.exit_code == 2, out.output
    assert len(lines) == 1 and lines[0].startswith("error:"), out.output
    assert expect in lines[0], lines[0]
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    assert _snapshot(results) == before, "repro changed the results folder"


@pytest.mark.parametrize(
    "given",
    ["../runs/{id}", "../../tiny/runs/{id}", "{id}/..", "*", "[0-9]*", "{abs}", ""],
    ids=["dotdot", "dotdot-outside", "suffix-path", "glob", "glob-class", "absolute", "empty"],
)
def test_an_id_that_is_a_path_or_pattern_is_refused(results, given):
    rid = run_id(CFG)
    given = given.format(id=rid, abs=results / "runs" / rid)
    _refused(results, given, expect="not a path or pattern")


def test_unknown_and_ambiguous_ids(results):
    _refused(results, "zzz", expect="no run with that id")
    (results / "runs" / "abc1").mkdir()
    (results / "runs" / "abc2").mkdir()
    _refused(results, "abc", expect="2 runs (abc1, abc2)")


def test_keep_over_the_evidence_is_refused(results, tmp_path):
    rid = run_id(CFG)
    _refused(results, rid, "--keep", str(results / "runs" / rid), expect="inside the results")
    _refused(results, rid, "--keep", str(results / "rerun"), expect="inside the results")
    assert not (results / "rerun").exists()
    _refused(results, rid, "--keep", str(results), expect="inside the results")
    full = tmp_path / "full"
    full.mkdir()
    (full / "metrics.csv").write_text("someone else's\n")
    _refused(results, rid, "--keep", str(full), expect="not empty")
    assert (full / "metrics.csv").read_text() == "someone else's\n"


@pytest.mark.parametrize(
    "damage, expect",
    [
        (lambda d: (d / "config.yaml").write_text("model: {hidden: [8\n"), "not readable YAML"),
        (lambda d: (d / "config.yaml").write_bytes(b"\xff\xfe\x00bad"), "not readable YAML"),
        (lambda d: (d / "config.yaml").write_text("model: {norm: 7}\n"), "not a valid run config"),
        (lambda d: (d / "config.yaml").write_text("- a list\n"), "not a valid run config"),
        (lambda d: (d / "config.yaml").unlink(), "config.yaml: missing"),
        (lambda d: (d / "metrics.csv").unlink(), "metrics.csv: missing"),
        (lambda d: (d / "summary.json").write_text('{"run_id": "ab'), "summary.json: unreadable"),
        (lambda d: (d / "summary.json").write_text("[]"), "not a complete run"),
        (lambda d: (d / "summary.json").unlink(), "no summary.json"),
    ],
    ids=[
        "yaml-syntax",
        "not-utf8",
        "bad-value",
        "not-a-mapping",
        "no-config",
        "no-metrics",
        "half-summary",
        "summary-list",
        "no-summary",
    ],
)
def test_damaged_run_files_are_one_line(results, damage, expect):
    damage(results / "runs" / run_id(CFG))
    _refused(results, run_id(CFG)[:4], expect=expect)


def test_reproduced_into_a_kept_folder_leaves_the_record_alone(results, tmp_path):
    before = _snapshot(results)
    keep = tmp_path / "rerun"
    out = CliRunner().invoke(app, ["repro", str(results), run_id(CFG)[:5], "--keep", str(keep)])
    assert out.exit_code == 0, out.output
    assert f"reproduced: run {run_id(CFG)}" in " ".join(out.output.split())
    recorded = results / "runs" / run_id(CFG) / "metrics.csv"
    assert (keep / "metrics.csv").read_bytes() == recorded.read_bytes()
    assert _snapshot(results) == before


def test_a_difference_is_reported_per_column(results):
    metrics = results / "runs" / run_id(CFG) / "metrics.csv"
    lines = metrics.read_text().splitlines()
    fields = lines[-1].split(",")
    fields[-1] = str(float(fields[-1]) + 0.25)  # test_acc of the last row
    metrics.write_text("\n".join([*lines[:-1], ",".join(fields)]) + "\n")
    done = reproduce(results, run_id(CFG))
    assert any(d.startswith("metrics.csv: test_acc: 1 of 2 rows differ") for d in done.diffs), (
        done.diffs
    )
    assert any(d.startswith("summary.json: ") for d in done.diffs) is False, done.diffs


def test_compare_metrics_formatting_only(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("epoch,step,test_acc\n0,0,0.5\n")
    b.write_text("epoch,step,test_acc\n0,0,0.50\n")
    assert compare_metrics(a, a) == []
    assert compare_metrics(a, b) == [
        "metrics.csv: bytes differ (formatting only; every value is equal)"
    ]

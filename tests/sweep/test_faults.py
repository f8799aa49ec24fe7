"""Faults in the results folder, in-process: damaged summary.json, a finished run
missing a file, two experiments of one name, a full disk, folders that cannot be used, damaged
plan.csv / summary.csv under `status`, and never more workers than runs. Each ends in correct
results, or one line and exit 2, with nothing lost."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import assert_same_results, summaries, tiny_experiment, write_yaml
from typer.testing import CliRunner

import bnexp.io
import bnexp.sweep.runner
from bnexp.cli import app
from bnexp.config import experiment_from_dict
from bnexp.sweep.folder import StorageError
from bnexp.sweep.runner import run_experiment
from bnexp.sweep.store import RunStore

RAW = tiny_experiment(epochs=2, sweep={"train.seed": [0, 1, 2]})


def sweep(out: Path, raw: dict = RAW, **kw):
    return run_experiment(experiment_from_dict(raw), raw, out, workers=1, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """RAW swept once, uninterrupted, in a folder of its own."""
    return sweep(tmp_path_factory.mktemp("reference")).results_dir


def one_line(result) -> str:
    """The one error line of a command that exits 2 (progress bars may precede it)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return " ".join(result.output.split())


def cli(*args: str):
    return CliRunner().invoke(app, list(map(str, args)))


# --------------------------------------------------------------------------- damaged runs


@pytest.mark.parametrize("damage", [b'{"run_id": "ab', b"[]", b"", b"\xff\xfe"])
def test_damaged_summary_is_reported_and_the_run_retrained(tmp_path, reference, damage, caplog):
    first = sweep(tmp_path)
    rid = first.plan[1].run_id
    (first.results_dir / "runs" / rid / "summary.json").write_bytes(damage)
    store = RunStore(first.results_dir)
    assert store.summary(rid) is None and store.state(rid) == "damaged"
    status = cli("status", first.results_dir)
    assert status.exit_code == 0, status.output
    assert "2 done, 1 damaged" in status.output and f"run {rid}: summary.json" in status.output
    for flags in ({"force": True}, {"retry_failed": True}, {}):  # none of them crashes
        again = sweep(tmp_path, **flags)
        assert rid in again.ran, (flags, again.outcomes)
        (first.results_dir / "runs" / rid / "summary.json").write_bytes(damage)
    assert "trained again" in caplog.text
    sweep(tmp_path)
    assert_same_results(first.results_dir, reference)


@pytest.mark.parametrize("lost", ["metrics.csv", "timing.csv", "config.yaml"])
def test_a_finished_run_missing_a_file_is_not_done(tmp_path, reference, lost):
    first = sweep(tmp_path)
    rid = first.plan[0].run_id
    (first.results_dir / "runs" / rid / lost).unlink()
    assert RunStore(first.results_dir).state(rid) == "damaged"
    status = cli("status", first.results_dir)
    assert "2 done, 1 damaged" in status.output and f"{lost} is missing" in status.output
    again = sweep(tmp_path)
    assert again.ran == [rid], again.outcomes
    assert_same_results(first.results_dir, reference)


# --------------------------------------------------------------------------- one name, two files


@pytest.mark.slow  # three `bnexp run` with their reports
def test_a_different_experiment_of_the_same_name_is_refused(tmp_path):
    a = write_yaml(tmp_path / "a.yaml", RAW)
    other = tiny_experiment(epochs=2, sweep={"train.lr": [0.05, 0.2]})  # same name "tiny"
    b = write_yaml(tmp_path / "b.yaml", other)
    out = tmp_path / "out"
    assert cli("run", a, "--out", out).exit_code == 0
    before = {p: p.read_bytes() for p in (out / "tiny").glob("*.*") if p.is_file()}
    line = one_line(cli("run", b, "--out", out))
    assert "already holds experiment 'tiny' with 3 run(s) this plan does not include" in line
    assert "--set name=NEW" in line and "--extend" in line
    after = {p: p.read_bytes() for p in before}
    assert after == before, "experiment.yaml, plan.csv or summary.csv changed"
    # the same file again resumes (nothing to do), and --extend adds the other plan's runs
    assert cli("run", a, "--out", out).exit_code == 0
    extended = cli("run", b, "--out", out, "--extend")
    assert extended.exit_code == 0, extended.output
    plan = pd.read_csv(out / "tiny" / "plan.csv", dtype={"run_id": str})
    table = pd.read_csv(out / "tiny" / "summary.csv", dtype={"run_id": str})
    assert len(plan) == 5 and sorted(table["run_id"]) == sorted(plan["run_id"])
    assert "from " + str(a) in (out / "tiny" / "experiment.yaml").read_text(), "a.yaml kept"


# --------------------------------------------------------------------------- full disk


def _disk_full_after(monkeypatch, summaries_written: int) -> dict:
    """Every atomic write (summaries, configs, CSVs, claims) raises ENOSPC once
    `summaries_written` summary.json files have been written; `state["full"] = False` frees it."""
    real = bnexp.io.atomic_write_bytes
    state = {"full": False, "summaries": 0}

    def write(path, data, durable=True):
        if state["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data, durable)
        if Path(path).name == "summary.json":
            state["summaries"] += 1
            state["full"] = state["summaries"] == summaries_written  # fills up once

    monkeypatch.setattr(bnexp.io, "atomic_write_bytes", write)
    return state


def test_full_disk_stops_the_sweep_with_one_line_and_resumes(tmp_path, reference, monkeypatch):
    state = _disk_full_after(monkeypatch, 1)
    cfg = write_yaml(tmp_path / "exp.yaml", RAW)
    out = tmp_path / "out"
    line = one_line(cli("run", cfg, "--out", out, "--workers", "1"))
    assert "No space left on device" in line and "rerun the same command to resume" in line, line
    s = summaries(out / "tiny")
    assert [v["status"] for v in s.values()] == ["complete"], "a run was recorded as failed"
    state["full"] = False  # space freed
    again = cli("run", cfg, "--out", out, "--workers", "1")
    assert again.exit_code == 0, again.output
    assert_same_results(out / "tiny", reference)


def test_full_disk_while_recording_a_failure_does_not_crash(tmp_path, monkeypatch):
    import bnexp.sweep.worker as execute

    def fails(*a, **kw):
        bnexp.io.atomic_write_bytes(tmp_path / "x", b"")  # what the run writes first
        raise RuntimeError("unreachable")

    monkeypatch.setattr(execute, "train_run", fails)
    state = _disk_full_after(monkeypatch, 0)
    state["full"] = True
    with pytest.raises(StorageError, match="No space left on device"):
        sweep(tmp_path)
    assert not summaries(tmp_path / "tiny"), "nothing is recorded as failed for a full disk"


# --------------------------------------------------------------------------- unusable folders


def test_out_pointing_at_a_file(tmp_path):
    cfg = write_yaml(tmp_path / "exp.yaml", RAW)
    (tmp_path / "file").write_text("x")
    line = one_line(cli("run", cfg, "--out", tmp_path / "file"))
    assert f"{tmp_path / 'file'} is a file, not a folder" in line, line


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_symlink_results_folder(tmp_path, kind):
    cfg = write_yaml(tmp_path / "exp.yaml", RAW)
    out = tmp_path / "out"
    out.mkdir()
    if kind == "dangling":
        (out / "tiny").symlink_to(tmp_path / "nowhere")
        expected = "is a symbolic link to"
    else:
        (out / "tiny").symlink_to(out / "tiny2")
        (out / "tiny2").symlink_to(out / "tiny")
        expected = "symbolic link loop"
    line = one_line(cli("run", cfg, "--out", out))
    assert expected in line, line
    assert one_line(cli("status", out / "tiny"))


def test_name_too_long(tmp_path):
    raw = dict(RAW, name="n" * 300)
    line = one_line(cli("run", write_yaml(tmp_path / "exp.yaml", raw), "--out", tmp_path))
    assert "name: String should have at most 128 characters" in line, line
    deep = tmp_path / ("d" * 250) / ("e" * 250)
    line = one_line(cli("run", write_yaml(tmp_path / "x.yaml", RAW), "--out", deep / ("f" * 300)))
    assert "too long" in line, line


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write in: chmod 555, or for root (who ignores modes) a read-only
    tmpfs."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(path)]).returncode:
        pytest.skip("running as root and cannot mount a read-only tmpfs")
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_read_only_results_folder(tmp_path, read_only_dir):
    line = one_line(cli("run", write_yaml(tmp_path / "exp.yaml", RAW), "--out", read_only_dir))
    assert "cannot be the results folder" in line or "cannot write" in line, line


# --------------------------------------------------------------------------- status


@pytest.mark.parametrize(
    "damage, expected",
    [
        (b"", "the file is empty"),
        (b"run_id,train.seed\n0fe96c8fa9,0\n1a2b", "the file ends mid-row"),
    ],
)
def test_status_with_a_damaged_plan_csv(tmp_path, damage, expected):
    results = sweep(tmp_path).results_dir
    (results / "plan.csv").write_bytes(damage)
    line = one_line(cli("status", results))
    assert f"{results / 'plan.csv'}: {expected}" in line and "bnexp run" in line, line
    (results / "plan.csv").write_text("run_id,train.seed\nnot-an-id,0\n")
    assert "is not a run id" in one_line(cli("status", results))
    sweep(tmp_path)  # `bnexp run` rewrites it from the experiment file
    assert cli("status", results).exit_code == 0


@pytest.mark.parametrize("damage", [b"", b"run_id,norm,batch_size\n0fe96c8f"])
def test_status_with_a_damaged_summary_csv_warns_and_counts_the_runs(tmp_path, damage):
    results = sweep(tmp_path).results_dir
    (results / "summary.csv").write_bytes(damage)
    result = cli("status", results)
    assert result.exit_code == 0 and "3 run(s) — 3 done" in result.output, result.output
    assert "summary.csv: empty or cut short" in " ".join(result.output.split())
    sweep(tmp_path)
    assert len(pd.read_csv(results / "summary.csv")) == 3


# --------------------------------------------------------------------------- workers


def test_never_more_workers_than_runs(tmp_path, monkeypatch):
    def no_pool(*a, **kw):
        raise AssertionError("a process pool was started for a single run")

    monkeypatch.setattr(bnexp.sweep.runner, "PoolExecutor", no_pool)
    raw = tiny_experiment(epochs=1, sweep={})
    result = run_experiment(experiment_from_dict(raw), raw, tmp_path, workers=4)
    assert result.workers == 1 and len(result.ran) == 1
    assert json.loads((result.results_dir / "runs" / result.ran[0] / "summary.json").read_text())

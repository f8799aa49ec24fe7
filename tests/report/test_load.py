"""Reading a results folder: run ids stay strings; a damaged summary.csv is one clear line."""

from __future__ import annotations

import pytest
from report_synthetic import STEPS, make_results
from typer.testing import CliRunner

from bnexp.cli import app
from bnexp.errors import BnexpError
from bnexp.report import compute_tables, load_summary, run_config, run_csvs

RUNS = sum(len(seeds) for seeds in STEPS.values())  # 24 runs in the synthetic folder


@pytest.fixture(scope="module")
def numeric(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("ids") / "exp", numeric_ids=True)


def test_run_ids_that_look_like_numbers_stay_strings(numeric):
    df = load_summary(numeric)
    ids = set(df["run_id"])
    assert "0353662001" in ids and "4980e71000" in ids, sorted(ids)[:4]
    assert len(ids) == RUNS
    # every run's files are found: as numbers, 0353662001 loses its zero and 4980e71000
    # becomes 4.98e+74, and their folders are never found
    metrics = run_csvs(numeric, df, "metrics.csv")
    assert metrics["run_id"].nunique() == RUNS
    assert set(metrics["run_id"]) == ids
    probes = run_csvs(numeric, df, "probes.csv")
    target = run_config(numeric, df)["measure"]["target"]
    tables = compute_tables(df, probes, run_csvs(numeric, df, "bn_noise.csv"), target)
    # 8 cells x norm rows, 3 seeds each: every run counted in the per-run tables
    assert tables["ics"]["runs"].sum() == RUNS
    assert tables["shift"].query("site == 'z'")["runs"].sum() == RUNS


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda t: b"", "empty file"),
        (lambda t: t[: t.rindex(b",") - 3], "truncated"),  # cut inside the last record
        (lambda t: t[: t.index(b"\n", t.index(b"\n") + 1) + 1] + b"abc,none\n", "2 field"),
        (lambda t: b"\xff\xfe" + t, "not UTF-8"),
    ],
    ids=["empty", "cut-short", "short-record", "not-utf8"],
)
def test_a_damaged_summary_is_one_clear_error(tmp_path, damage, message):
    results = make_results(tmp_path / "exp")
    path = results / "summary.csv"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(BnexpError, match=message) as e:
        load_summary(results)
    assert "summary.csv" in str(e.value) and "\n" not in str(e.value)
    out = CliRunner().invoke(app, ["report", str(results)])
    assert out.exit_code == 2, out.output
    assert message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) <= 3, out.output  # one line, wrapped at most


def test_a_folder_without_summary_is_one_clear_error(tmp_path):
    out = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert out.exit_code == 2
    assert "no summary.csv" in out.output and "Traceback" not in out.output


def test_a_truncated_per_run_file_names_itself(tmp_path):
    results = make_results(tmp_path / "exp")
    df = load_summary(results)
    path = results / "runs" / df["run_id"][0] / "probes.csv"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(BnexpError, match="probes.csv.*truncated"):
        run_csvs(results, df, "probes.csv")

"""The benchmark runs on tiny sizes and produces its table (speed itself is never asserted)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from benchmarks.cases import DIGITS_CASE
from benchmarks.sections import COLUMNS, bench_train, rich_table

REPO = Path(__file__).resolve().parents[2]
LOOP_MEASURES = {
    "a: bnexp train_run (steps)",
    "a: bnexp train_run (whole run)",
    "b: hand-written loop",
    "c: DataLoader loop",
    "a/b (steps)",
    "a/b (whole run)",
    "a/c (steps)",
    "evaluation share, whole sets at every evaluation",
    "evaluation share, measure.eval_subset",
}


@pytest.mark.slow
def test_tiny_bench_produces_every_row(tmp_path):
    df = bench_train(
        tiny=True,
        sections=("loops", "denormal", "vectorize"),
        data_root=tmp_path,
        log=lambda m: None,
    )
    assert list(df.columns) == COLUMNS
    loops = df[df.section == "loops"]
    assert loops.case.nunique() == 3, loops.case.unique()
    for case, rows in loops.groupby("case"):
        # MLPs also time d, the hand loop with bnexp's evaluations (the whole-run goal's baseline)
        extra = set() if "CNN" in case else {"a/d (whole run)"}
        assert set(rows.measure) == LOOP_MEASURES | extra, case
        assert (
            "generated" in rows.note.iloc[0] or "digits" in rows.note.iloc[0]
        )  # tmp_path holds no files
    values = df.value.astype(float)
    assert (values > 0).all() and values.map(math.isfinite).all(), df[["measure", "value"]]
    share = loops[loops.measure.str.startswith("evaluation share")].value.astype(float)
    assert len(share) == 6 and ((share > 0) & (share < 1)).all(), share
    subset = loops[loops.measure == "evaluation share, measure.eval_subset"]
    assert (subset.goal == "<= 0.10").all() and subset.note.str.contains("eval_subset").all()
    assert set(df[df.section == "vectorize"].measure) == {
        "one after another",
        "vectorized (train_seeds)",
        "throughput ratio",
    }
    ratios = df[(df.section == "vectorize") & (df.measure == "throughput ratio")]
    bn = ratios[ratios.case.str.contains("BN cell")]
    assert len(bn) == 2 and bn.case.str.contains("digits").any(), bn.case
    assert bn.case.str.contains("cat/non-cat").any(), bn.case
    assert (bn.goal == ">= 3").all() and (bn.ok == (bn.value >= 3)).all(), bn
    assert_table_fits_100_columns(df)
    whole = loops[loops.measure == "a/d (whole run)"].set_index("case")
    assert whole.loc[DIGITS_CASE, "goal"] == ">= 0.95" and whole.goal.tolist().count("") == 1


def assert_table_fits_100_columns(df: pd.DataFrame) -> None:
    """Every line within 100 columns, every measure and goal on one line, each case named."""
    console = Console(record=True, width=200)  # wider than the table: its own width holds
    console.print(rich_table(df))
    lines = console.export_text().splitlines()
    too_wide = [line for line in lines if len(line.rstrip()) > 100]
    assert not too_wide, "\n".join(too_wide)
    for measure in df.measure.unique():
        assert any(f"  {measure} " in line for line in lines), f"{measure!r} broken or missing"
    for goal in df.goal[df.goal != ""].unique():
        assert any(f" {goal} " in line for line in lines), goal
    # a long case name folds onto the next line of its cell: join the cells' text back
    text = " ".join(" ".join(line.strip(" │┃").split("│")[0].split()) for line in lines)
    for section, case in df[["section", "case"]].drop_duplicates().itertuples(index=False):
        assert f"{section}: {case}" in text, (section, case)


def test_table_of_long_rows_fits_100_columns():
    """The goal table's longest texts (case, measure, goal) in a 100-column table."""
    from benchmarks.common import row

    case = "cifar10_batch_sweep.yaml as shipped (36 runs x 30 epochs)"
    df = pd.DataFrame(
        [
            row("estimate", case, "estimated sweep wall time", 0.8123, "h", "<= 1", "n" * 300),
            row("loops", "CIFAR CNN 32-64-128 relu, torch BN",
                "evaluation share, whole sets at every evaluation", 0.1234, ""),
            row("memory", "c", "peak RSS of the run", 123456.7, "samples/s", ">= 0.95"),
        ],
        columns=COLUMNS,
    )  # fmt: skip
    assert_table_fits_100_columns(df)


@pytest.mark.slow
def test_workers_rows_time_both_sweeps():
    df = bench_train(tiny=True, sections=("workers",), log=lambda m: None).set_index("measure")
    one, two = df.loc["--workers 1", "value"], df.loc["--workers 2", "value"]
    assert one > 0 and two > 0
    assert (
        df.loc["--workers 2 speed-up", "value"] == pytest.approx(one / two)
        and df.loc["--workers 2 speed-up", "goal"] == ">= 1.8"
    )


@pytest.mark.slow
def test_memory_row_reports_peak_rss_of_a_uint8_run():
    df = bench_train(tiny=True, sections=("memory",), log=lambda m: None)
    row = df.set_index("measure")
    assert row.loc["images in memory", "note"] == "torch.uint8"
    assert row.loc["images in memory", "value"] == pytest.approx(
        2500 * 3 * 32 * 32 / 2**20 + 2500 * 8 / 2**20
    )
    assert row.loc["peak RSS of the run", "value"] >= row.loc["RSS after imports", "value"] > 0


@pytest.mark.slow
def test_runner_writes_csv_and_prints_one_table(tmp_path):
    out = tmp_path / "results.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--tiny", "--section", "denormal"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        cwd=str(REPO),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS and set(df.section) == {"denormal"}
    assert "bnexp benchmarks" in proc.stdout and "kept / flushed" in proc.stdout


def test_bn_rows_judge_only_training_steps_against_the_goal(monkeypatch):
    """The <= 1.15 goal is for a whole training step; the layer-alone rows carry no verdict."""
    from benchmarks import run as runner

    fake = pd.DataFrame(
        [
            dict(
                shape="MLP layer (256, 100)",
                scope="step",
                custom_ms=1.2,
                torch_ms=1.0,
                ratio=1.2,
                repeats=3,
                custom_path="C kernel",
            ),
            dict(
                shape="BN (256, 100)",
                scope="bn only",
                custom_ms=1.2,
                torch_ms=1.0,
                ratio=1.2,
                repeats=3,
                custom_path="C kernel",
            ),
        ]
    )
    monkeypatch.setattr(runner, "bench_bn", lambda **kw: fake)
    df = runner.bn_rows(3, log=lambda msg: None)
    ratios = df[df.measure == "custom / torch"].set_index("case")
    step, alone = ratios.loc["MLP layer (256, 100) step"], ratios.loc["BN (256, 100) bn only"]
    assert step["goal"] == "<= 1.15" and step["ok"] == False  # noqa: E712 (a numpy bool)
    assert alone["goal"] == "" and alone["ok"] is None and "no goal" in alone["note"]
    assert "C kernel" in step["note"]


@pytest.mark.slow
def test_gpu_section_runs_its_code_paths_on_the_cpu():
    """`make bench-gpu`'s rows, computed on the CPU (no GPU here): every row, positive figures,
    and the 4-run sweep checked to have run on the device it was given."""
    from benchmarks.gpu import bench_gpu

    df = bench_gpu("cpu", tiny=True, repeats=1, root=None, log=lambda m: None)
    assert list(df.columns) == COLUMNS and set(df.section) == {"gpu"}
    measures = df.groupby("case").measure.apply(set).to_dict()
    assert len(measures) == 4, measures
    assert {"throughput ratio"} <= measures[
        next(c for c in measures if "seeds, BN cell (custom)" in c)
    ]
    assert any("bnexp ÷ hand-written (throughput)" in m for m in measures.values())
    assert any("--workers 2 speed-up" in m for m in measures.values())
    assert (df.value > 0).all() and df.value.map(math.isfinite).all()


def test_gpu_section_without_a_gpu_is_skipped_with_a_line():
    import torch

    from benchmarks.gpu import bench_gpu

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the section would run")
    said = []
    df = bench_gpu("cuda", tiny=True, repeats=1, root=None, log=said.append)
    assert df.empty and list(df.columns) == COLUMNS
    assert said == ["gpu: skipped (torch sees no CUDA device for 'cuda')"]

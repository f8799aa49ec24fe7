"""The goal rows added for issue 14 (cnn, startup, workers overhead, estimate): each exists, carries
its goal, and is computed from its parts. Timings are replaced by fixed numbers: no speed asserted.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import cnn, startup
from bnexp.config import ModelConfig
from bnexp.nn.models import build_model

REPO = Path(__file__).resolve().parents[2]


def test_cnn_flops_match_a_hand_count_of_the_cifar_cnn():
    model = build_model(
        ModelConfig(arch="cnn", channels=[32, 64, 128], norm="torch"), (3, 32, 32), 10
    )
    flops = cnn.layer_flops(model, (3, 32, 32))
    # 3x3 convs, padding 1; a 2x2 max-pool after each: maps 32, 16, 8; head Linear 128 -> 10
    hand = [
        2 * 3 * 32 * 9 * 32 * 32,
        2 * 32 * 64 * 9 * 16 * 16,
        2 * 64 * 128 * 9 * 8 * 8,
        2 * 128 * 10,
    ]
    assert sorted(flops.values()) == sorted(hand), (flops, hand)
    total = cnn.cnn_train_flops(model, (3, 32, 32))
    assert total == 3 * sum(hand)
    assert total == pytest.approx(61.9e6, rel=1e-3)  # the issue's "~60 MFLOP per image"
    assert model.training  # the shape pass leaves the mode as it found it


def test_matmul_rate_is_two_n_cubed_over_the_best_time(monkeypatch):
    ticks = iter([0.0, 0.5, 1.0, 1.25, 2.0, 3.0])  # calls take 0.5, 0.25, 1.0 s: best 0.25
    monkeypatch.setattr(cnn.time, "perf_counter", lambda: next(ticks))
    assert cnn.matmul_flops_per_s(8, 3) == pytest.approx(2 * 8**3 / 0.25)


def test_cnn_rows_are_ratios_of_their_parts(monkeypatch, tmp_path):
    monkeypatch.setattr(cnn, "train_run", lambda cfg, d, data: SimpleNamespace(train_s=2.0))
    monkeypatch.setattr(cnn, "hand_cnn_loop", lambda case: 3.0)
    monkeypatch.setattr(cnn, "matmul_flops_per_s", lambda n, r: 1e9)
    df = cnn.bench_cnn(tiny=True, root=tmp_path, repeats=1, log=lambda m: None).set_index("measure")
    per_example = df.loc["FLOPs per training example", "value"] * 1e6
    samples = 256  # tiny CIFAR case: 256 images, batch 128, 1 epoch
    assert df.loc["bnexp step", "value"] == pytest.approx(samples / 2.0)
    assert df.loc["bnexp step FLOP/s", "value"] == pytest.approx(per_example * samples / 2.0 / 1e9)
    ratio = df.loc["bnexp step FLOP/s ÷ matmul FLOP/s"]
    assert ratio["value"] == pytest.approx(per_example * samples / 2.0 / 1e9)
    assert ratio["goal"] == ">= 0.5" and "thread" in ratio["note"]
    hand = df.loc["bnexp step ÷ hand-written step"]
    assert hand["value"] == pytest.approx(1.5) and hand["goal"] == ">= 1.0" and hand["ok"]


def test_hand_cnn_loop_takes_bnexps_batches(tmp_path):
    from benchmarks.cases import CIFAR_CASE, cases

    case = next(c for c in cases(True, tmp_path) if c.name == CIFAR_CASE)
    assert cnn.hand_cnn_loop(case) > 0


def test_first_step_delay_reads_the_runs_line():
    err = "some log\nFIRST_STEP 1000.75\nmore\n"
    assert startup.first_step_delay(err, 999.5) == pytest.approx(1.25)
    with pytest.raises(RuntimeError, match="FIRST_STEP"):
        startup.first_step_delay("no such line", 0.0)


def test_first_step_marker_marks_the_first_step_of_bnexps_sgd_once(monkeypatch, capsys):
    """The wrap from outside the package: bnexp's SGD steps as before, and the mark is printed
    after the first step only."""
    import torch

    from benchmarks import first_step
    from bnexp.training import sgd

    monkeypatch.setattr(sgd.SGD, "step", sgd.SGD.step)  # restored after the test
    first_step.wrap_optimizer_steps(first_step.first_step_marker())
    w = torch.nn.Parameter(torch.ones(3))
    opt = sgd.SGD([w], lr=0.5)
    assert first_step.MARK not in capsys.readouterr().err  # nothing before a step
    for _ in range(3):
        w.grad = torch.ones(3)
        opt.step()
    torch.testing.assert_close(w.detach(), torch.full((3,), -0.5))  # three steps of 0.5
    marks = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FIRST_")]
    assert len(marks) == 1 and float(marks[0].split()[1]) > 0, marks


@pytest.mark.slow
def test_first_step_of_a_real_bnexp_run_lies_between_launch_and_exit(tmp_path):
    """`python -m benchmarks.first_step run ...` is `bnexp run` with the mark: the run completes
    and its first step is marked once, after launch and before exit."""
    import time

    import yaml

    cfg = tmp_path / "one.yaml"
    cfg.write_text(yaml.safe_dump(startup.ONE_RUN))
    launched = time.time()
    _, proc = startup.run_python(
        ["-m", "benchmarks.first_step", "run", str(cfg), "--out", str(tmp_path / "out")],
        tmp_path,
        "bnexp run",
    )
    exited = time.time()
    assert (tmp_path / "out" / startup.ONE_RUN["name"] / "summary.csv").is_file()
    assert proc.stderr.count("FIRST_STEP ") == 1, proc.stderr[-1000:]
    assert 0 < startup.first_step_delay(proc.stderr, launched) < exited - launched


def test_startup_rows(monkeypatch):
    monkeypatch.setattr(
        startup, "interleaved", lambda v, r: {"run": [3.0, 1.0, 2.0], "torch": [1.5]}
    )
    df = startup.bench_startup(3, log=lambda m: None).set_index("measure")
    first = df.loc["launch -> first optimizer step"]
    assert first["value"] == 2.0 and first["goal"] == "<= 1.5" and first["ok"] == False  # noqa: E712
    assert df.loc["python -c 'import torch' (the floor)", "value"] == 1.5


def test_workers_rows_divide_wall_time_by_the_runs_wall_s(monkeypatch):
    runs = {
        "1": [{"sweep_s": 10.0, "runs_wall_s": 8.0, "whole_s": 12.0}],
        "2": [{"sweep_s": 5.0, "runs_wall_s": 9.0, "whole_s": 7.0}],
    }
    monkeypatch.setattr(startup, "interleaved", lambda v, r: runs)
    df = startup.bench_workers(True, 1, log=lambda m: None).set_index("measure")
    assert df.loc["--workers 2 speed-up", "value"] == pytest.approx(2.0)
    assert df.loc["--workers 2 speed-up", "goal"] == ">= 1.8"
    one = df.loc["wall ÷ sum of runs' wall_s, --workers 1"]
    assert one["value"] == pytest.approx(12.0 / 8.0) and one["goal"] == "<= 1.2" and not one["ok"]
    assert df.loc["wall ÷ sum of runs' wall_s, --workers 2", "value"] == pytest.approx(7.0 / 9.0)


def test_sweep_estimate_by_hand():
    timed = {
        64: {"train_s": 10.0, "eval_s": 4.0, "wall_s": 15.0},
        512: {"train_s": 6.0, "eval_s": 4.0, "wall_s": 10.5},
    }
    # per run: E epochs x (train + rest) + (E + 1) evaluations; rest = wall - train - eval
    per64 = 30 * (10.0 + 1.0) + 31 * 2.0
    per512 = 30 * (6.0 + 0.5) + 31 * 2.0
    got = cnn.sweep_estimate(30, {64: 9, 512: 9}, timed, workers=2)
    assert got == pytest.approx((9 * per64 + 9 * per512) / 2)
    # measure.eval_subset of a tenth of the examples: 5 whole-set evaluations + 29 tenths
    sub64, sub512 = per64 - 31 * 2.0 + 7.9 * 2.0, per512 - 31 * 2.0 + 7.9 * 2.0
    got = cnn.sweep_estimate(30, {64: 9, 512: 9}, timed, workers=2, subset_share=0.1)
    assert got == pytest.approx((9 * sub64 + 9 * sub512) / 2)


def test_estimate_row_extrapolates_the_shipped_study(monkeypatch, tmp_path):
    seen = []

    def fake_run(cfg, run_dir, data):
        seen.append((cfg.train.batch_size, cfg.model.norm, cfg.train.epochs))
        return SimpleNamespace(
            train_s=cfg.train.batch_size / 64, eval_s=2.0, wall_s=cfg.train.batch_size / 64 + 2.5
        )

    monkeypatch.setattr(cnn, "train_run", fake_run)
    config = REPO / "configs" / "cifar10_batch_sweep.yaml"
    df = cnn.bench_estimate(config, None, tiny=True, workers=2, log=lambda m: None)
    assert sorted(seen) == [(bs, "custom", 1) for bs in (64, 128, 256, 512)]
    est = df.set_index("measure").loc["estimated sweep wall time"]
    timed = {
        bs: {"train_s": bs / 64, "eval_s": 2.0, "wall_s": bs / 64 + 2.5}
        for bs in (64, 128, 256, 512)
    }
    # the shipped eval_subset (1,000) covers the tiny data (256 + 64 images): every evaluation
    want = cnn.sweep_estimate(30, dict.fromkeys(timed, 9), timed, 2, subset_share=1.0) / 3600
    assert want == pytest.approx(cnn.sweep_estimate(30, dict.fromkeys(timed, 9), timed, 2) / 3600)
    assert est["value"] == pytest.approx(want) and est["unit"] == "h" and est["goal"] == "<= 1"
    assert "estimate" in est["note"] and "36 runs x 30 epochs" in est["case"]


def test_estimate_without_a_config_has_no_rows(tmp_path):
    logged = []
    df = cnn.bench_estimate(tmp_path / "missing.yaml", None, True, 2, log=logged.append)
    assert df.empty and "skipped" in logged[0]


def test_every_goal_row_of_the_issue_is_a_section():
    from benchmarks.sections import SECTIONS

    assert {"loops", "cnn", "vectorize", "startup", "workers", "estimate"} <= set(SECTIONS)

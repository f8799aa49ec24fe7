"""The BN benchmark's plumbing (not its numbers: speed is judged by `bnexp bench bn`, not by
tests)."""

from __future__ import annotations

import time

import pytest
import torch
from typer.testing import CliRunner

from bnexp.bench import bn as bench
from bnexp.bench.bn import bench_case, cases, thread_counts
from bnexp.cli import app


def test_cases_build_the_same_network_for_both_norms():
    for case in cases(layer_only=True):
        ours, theirs = case.build("custom"), case.build("torch")
        assert list(ours.state_dict()) == list(theirs.state_dict()), case.shape
        assert sum(p.numel() for p in ours.parameters()) == sum(
            p.numel() for p in theirs.parameters()
        )


@pytest.mark.slow
def test_bench_case_ratio_follows_which_side_is_slower(monkeypatch):
    """A side made slower on purpose must show in the ratio: custom slowed 30 ms per step gives
    a ratio well above 1 (a ratio that only restated custom_ms / torch_ms could not fail)."""
    case = next(c for c in cases(layer_only=True) if c.shape == "BN (64, 20)")
    real = bench._timed_steps

    def slowed(model, *args):
        if any(type(m).__module__.startswith("bnexp") for m in model.modules()):
            hook = model.register_forward_pre_hook(lambda *_: time.sleep(0.03))  # in the clock
            try:
                return real(model, *args)
            finally:
                hook.remove()
        return real(model, *args)

    monkeypatch.setattr(bench, "_timed_steps", slowed)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # on busy shared cores, a tiny step at 2 threads can take 100s of ms
    try:
        row = bench_case(case, repeats=5, device=torch.device("cpu"), min_sample_s=0.001)
    finally:
        torch.set_num_threads(before)
    assert row["custom_ms"] - row["torch_ms"] > 20, row
    assert row["ratio"] > 1.5, row  # torch's side: well under 20 ms a step
    assert row["custom_path"] in ("C kernel", "torch ops")


@pytest.mark.parametrize(
    "given,default,want", [(None, 2, (1, 2)), (None, 1, (1,)), ((4, 1, 4), 2, (4, 1))]
)
def test_thread_counts_are_one_and_the_default(given, default, want, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: default)
    assert thread_counts(given) == want


def _fake_prepared(case, device, tick, min_sample_s=0.02):
    models = {"custom": None, "torch": None}  # never stepped: the tests replace the timing
    return bench.Prepared(case, models, torch.empty(0), torch.empty(0), 1, 0.5)


def test_bench_bn_times_each_case_at_each_thread_count(monkeypatch):
    seen = []
    monkeypatch.setattr(
        bench,
        "prepare_case",
        lambda case, *a: seen.append(("warm", torch.get_num_threads())) or _fake_prepared(case, *a),
    )
    monkeypatch.setattr(
        bench,
        "measure_case",
        lambda p, *a: seen.append(("time", torch.get_num_threads()))
        or {"shape": p.case.shape, "ratio": 1.0},
    )
    before = torch.get_num_threads()
    frame = bench.bench_bn(repeats=3, layer_only=False, threads=(1, 2))
    assert torch.get_num_threads() == before
    # every case warmed up first, then timed, each at its own thread count
    assert seen == [("warm", 1)] * 3 + [("warm", 2)] * 3 + [("time", 1)] * 3 + [("time", 2)] * 3
    assert list(frame["threads"]) == [1, 1, 1, 2, 2, 2]
    assert frame["shape"].str.endswith(("@ 1 thread", "@ 2 threads")).all()


def test_progress_counts_cases_then_the_expected_seconds(monkeypatch):
    """The warm-up phase counts cases; the timing phase counts each sample's expected seconds
    up to a total known before it starts (what makes the ETA a time)."""
    monkeypatch.setattr(bench, "prepare_case", _fake_prepared)
    real_measure = bench.measure_case

    def measure(p, repeats, device, clock, on_sample):  # the real loop, without timing models
        monkeypatch.setattr(bench, "_timed_steps", lambda *a: 0.001)
        monkeypatch.setattr(bench, "custom_path", lambda *a: "C kernel")
        return real_measure(p, repeats, device, clock, on_sample)

    monkeypatch.setattr(bench, "measure_case", measure)
    seen = []
    bench.bench_bn(repeats=4, layer_only=True, threads=(1,), on_progress=lambda *a: seen.append(a))
    n_cases = len(bench.cases(layer_only=True))
    warm = [s for s in seen if s[0] == "warm-up"]
    timing = [s for s in seen if s[0] == "timing"]
    assert warm == [("warm-up", i, n_cases) for i in range(n_cases)]
    total = n_cases * 2 * 4 * 0.5  # cases x sides x repeats x a sample's expected seconds
    assert timing[0] == ("timing", 0.0, total) and timing[-1][1] == pytest.approx(total)
    assert len(timing) == 1 + n_cases * 2 * 4
    assert all(b[1] > a[1] for a, b in zip(timing, timing[1:]))


def test_the_default_run_stays_short(monkeypatch):
    """`bnexp bench bn` without flags: steps only (no layer-alone rows), 5 repeats, and the
    heaviest case, the conv block (0.5-2 s a step on a 2-core machine), takes 1 warm-up step
    (which sizes its samples) and 5 samples of 1 step per side and thread count: 12 steps."""
    steps: dict[str, int] = {}

    def counted(model, x, y, loss_fn, inner, device, clock):  # the steps asked for, not run
        key = "conv" if x.dim() == 4 else "other"
        steps[key] = steps.get(key, 0) + inner
        return 1.0 if key == "conv" else 1e-3  # a conv step is a sample by itself

    monkeypatch.setattr(bench, "_timed_steps", counted)
    monkeypatch.setattr(bench, "custom_path", lambda *a: "C kernel")
    result = CliRunner().invoke(app, ["bench", "bn", "--threads", "1"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert bench.DEFAULT_REPEATS == 5 and "median of 5" in result.output
    assert "BN (" not in result.output.split("path")[1]  # no layer-alone rows
    assert steps["conv"] == 2 * (1 + 5), steps


def test_bench_cli_marks_rows_over_the_goal(monkeypatch):
    import pandas as pd

    frame = pd.DataFrame(
        [
            dict(shape="MLP layer (256, 100) @ 1 thread", scope="step", threads=1,
                 custom_ms=1.3, torch_ms=1.0, ratio=1.3, custom_path="C kernel"),
            dict(shape="conv block (128, 64, 32, 32) @ 1 thread", scope="step", threads=1,
                 custom_ms=1.0, torch_ms=1.0, ratio=1.0, custom_path="C kernel"),
            dict(shape="BN (256, 100) @ 1 thread", scope="bn only", threads=1,
                 custom_ms=2.0, torch_ms=1.0, ratio=2.0, custom_path="C kernel"),
        ]
    )  # fmt: skip
    monkeypatch.setattr(bench, "bench_bn", lambda **kw: frame)
    result = CliRunner().invoke(app, ["bench", "bn"], terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80, result.output
    mlp = next(line for line in lines if line.startswith("MLP layer"))
    conv = next(line for line in lines if line.startswith("conv block"))
    alone = next(line for line in lines if line.startswith("BN (256, 100)"))
    assert "over goal" in mlp and "over goal" not in conv and " ok " in conv
    assert "over goal" not in alone and " ok " not in alone  # the layer alone has no goal
    assert "1 of 2 training step(s) over the goal" in result.output


def test_bench_cli_shows_progress_with_an_eta(monkeypatch):
    """On a terminal, the progress bar names its phase and gives an ETA."""
    import io

    import pandas as pd
    from rich.console import Console

    from bnexp.cli import bench as cli_bench

    def fake(on_progress, **kw):
        on_progress("warm-up", 0, 2)
        on_progress("warm-up", 1, 2)
        on_progress("timing", 0.0, 4.0)
        time.sleep(0.3)
        on_progress("timing", 2.0, 4.0)
        time.sleep(0.3)
        return pd.DataFrame(
            [dict(shape="s @ 1 thread", scope="step", threads=1, custom_ms=1.0, torch_ms=1.0,
                  ratio=1.0, custom_path="C kernel")]
        )  # fmt: skip

    out = io.StringIO()
    term = Console(file=out, force_terminal=True, width=100)
    monkeypatch.setattr(cli_bench, "err_console", term)
    monkeypatch.setattr(bench, "bench_bn", fake)
    cli_bench._timed_with_progress(repeats=5)
    text = out.getvalue()
    assert "warming up" in text and "timing" in text and "ETA" in text, text


def test_bench_cli_default_repeats_is_the_librarys():
    """The CLI spells bench.DEFAULT_REPEATS itself (importing it would import torch)."""
    result = CliRunner().invoke(app, ["bench", "bn", "--help"], terminal_width=100)
    assert f"[default: {bench.DEFAULT_REPEATS}]" in result.output, result.output


def test_bench_train_left_the_cli():
    """The training-loop goal tables run from the checkout (`make bench`), not the package."""
    result = CliRunner().invoke(app, ["bench", "train"])
    assert result.exit_code == 2


def test_bench_cli_refuses_a_bad_device():
    result = CliRunner().invoke(app, ["bench", "bn", "--device", "tpu"])
    assert result.exit_code == 2
    assert "expected cpu, cuda or auto" in result.output

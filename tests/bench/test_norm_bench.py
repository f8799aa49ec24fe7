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
    row = bench_case(case, repeats=5, device=torch.device("cpu"), min_sample_s=0.001)
    assert row["custom_ms"] - row["torch_ms"] > 20, row
    assert row["ratio"] > 1.5, row  # torch's side: well under 20 ms a step
    assert row["custom_path"] in ("C kernel", "torch ops")


@pytest.mark.parametrize(
    "given,default,want", [(None, 2, (1, 2)), (None, 1, (1,)), ((4, 1, 4), 2, (4, 1))]
)
def test_thread_counts_are_one_and_the_default(given, default, want, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: default)
    assert thread_counts(given) == want


def test_bench_bn_times_each_case_at_each_thread_count(monkeypatch):
    seen = []
    monkeypatch.setattr(
        bench,
        "bench_case",
        lambda case, *a, **k: (
            seen.append((case.shape, torch.get_num_threads()))
            or {"shape": case.shape, "ratio": 1.0}
        ),
    )
    before = torch.get_num_threads()
    frame = bench.bench_bn(repeats=3, layer_only=False, threads=(1, 2))
    assert torch.get_num_threads() == before
    assert [n for _, n in seen] == [1, 1, 1, 2, 2, 2]
    assert list(frame["threads"]) == [1, 1, 1, 2, 2, 2]
    assert frame["shape"].str.endswith(("@ 1 thread", "@ 2 threads")).all()


def test_bench_cli_refuses_a_bad_device():
    result = CliRunner().invoke(app, ["bench", "bn", "--device", "tpu"])
    assert result.exit_code == 2
    assert "expected cpu, cuda or auto" in result.output

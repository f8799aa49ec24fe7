"""checkpoint.pt proves whose it is and that it is intact: a damaged one, or another run's, is
discarded with a warning and the run starts over, ending with the metrics of a run never
interrupted (the reference: the same config trained in one go)."""

from __future__ import annotations

import json
import logging

import pytest

from bnexp.config import RunConfig, run_id
from bnexp.results import CHECKPOINT
from bnexp.training.recorder import RunInterrupted
from bnexp.training.train import train_run


def _cfg(seed: int) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"hidden": [16], "activation": "relu", "norm": "torch"},
            "train": {
                "lr": 0.1,
                "momentum": 0.9,
                "batch_size": 64,
                "epochs": 4,
                "seed": seed,
                "checkpoint_every": 1,
                "device": "cpu",
            },
        }
    )


def _interrupted_after(cfg: RunConfig, run_dir, data, epochs: int) -> None:
    """Train until `epochs` epochs are done (checkpointed), then stop as Ctrl-C would."""
    done = [0]
    with pytest.raises(RunInterrupted):
        train_run(
            cfg,
            run_dir,
            data=data,
            on_progress=lambda e, _: done.__setitem__(0, e),
            should_stop=lambda: done[0] >= epochs,
        )
    assert (run_dir / CHECKPOINT).exists() and not (run_dir / "summary.json").exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_digits):
    """Each seed trained in one go: its metrics.csv bytes."""
    root = tmp_path_factory.mktemp("ref")
    return {
        seed: (train_run(_cfg(seed), root / str(seed), data=small_digits), root / str(seed))
        for seed in (0, 1)
    }


def test_an_intact_checkpoint_of_the_run_resumes_it(tmp_path, small_digits, reference):
    run_dir = tmp_path / "run"
    _interrupted_after(_cfg(0), run_dir, small_digits, epochs=2)
    again = train_run(_cfg(0), run_dir, data=small_digits)
    assert again.resumed_from_epoch == 2
    assert (run_dir / "metrics.csv").read_bytes() == (reference[0][1] / "metrics.csv").read_bytes()


@pytest.mark.parametrize("where", ["header", "state"])
def test_a_bit_flipped_checkpoint_is_discarded_and_the_run_starts_over(
    tmp_path, small_digits, reference, caplog, where
):
    run_dir = tmp_path / "run"
    _interrupted_after(_cfg(0), run_dir, small_digits, epochs=2)
    ckpt = run_dir / CHECKPOINT
    raw = bytearray(ckpt.read_bytes())
    header_end = raw.index(b"\n")
    at = header_end // 2 if where == "header" else header_end + (len(raw) - header_end) // 2
    raw[at] ^= 0x10  # one bit
    ckpt.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="bnexp"):
        again = train_run(_cfg(0), run_dir, data=small_digits)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "discarding checkpoint" in warnings[0], warnings
    assert "starts over" in warnings[0]
    assert again.resumed_from_epoch is None
    assert (run_dir / "metrics.csv").read_bytes() == (reference[0][1] / "metrics.csv").read_bytes()
    assert not ckpt.exists(), "a complete run keeps no checkpoint"


def test_another_runs_checkpoint_is_discarded(tmp_path, small_digits, reference, caplog):
    """Seed 0's checkpoint copied into seed 1's folder: seed 1 ends with its own metrics."""
    seed0, seed1 = tmp_path / "seed0", tmp_path / "seed1"
    _interrupted_after(_cfg(0), seed0, small_digits, epochs=2)
    seed1.mkdir()
    (seed1 / CHECKPOINT).write_bytes((seed0 / CHECKPOINT).read_bytes())
    with caplog.at_level(logging.WARNING, logger="bnexp"):
        got = train_run(_cfg(1), seed1, data=small_digits)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"belongs to run '{run_id(_cfg(0))}', not {run_id(_cfg(1))}" in warnings[0]
    assert got.resumed_from_epoch is None
    ref1, ref0 = reference[1][1] / "metrics.csv", reference[0][1] / "metrics.csv"
    assert (seed1 / "metrics.csv").read_bytes() == ref1.read_bytes()
    assert ref1.read_bytes() != ref0.read_bytes(), "precondition: the seeds differ"
    summary = json.loads((seed1 / "summary.json").read_text())
    assert summary["run_id"] == run_id(_cfg(1)) and summary["seed"] == 1


def test_a_truncated_checkpoint_is_discarded(tmp_path, small_digits, reference, caplog):
    run_dir = tmp_path / "run"
    _interrupted_after(_cfg(0), run_dir, small_digits, epochs=1)
    ckpt = run_dir / CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:-100])
    with caplog.at_level(logging.WARNING, logger="bnexp"):
        again = train_run(_cfg(0), run_dir, data=small_digits)
    assert any("SHA-256" in r.getMessage() for r in caplog.records), caplog.text
    assert again.resumed_from_epoch is None
    assert (run_dir / "metrics.csv").read_bytes() == (reference[0][1] / "metrics.csv").read_bytes()

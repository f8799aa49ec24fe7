"""train.diverge_loss: what counts as a diverged run, by default and when set."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from bnexp.config import RunConfig, TrainConfig, expand, load_experiment, run_id
from bnexp.training.recorder import DEFAULT_DIVERGE_FACTOR, diverge_limit, is_diverged
from bnexp.training.train import train_run


def test_limit_by_hand():
    first = 2.3  # ~ln(10): ten classes at initialisation
    assert diverge_limit(None, first) == pytest.approx(DEFAULT_DIVERGE_FACTOR * first)
    assert DEFAULT_DIVERGE_FACTOR == 100
    assert diverge_limit("10x", first) == pytest.approx(23.0)
    assert diverge_limit("off", first) == math.inf
    assert diverge_limit(5.0, first) == 5.0
    assert is_diverged(float("nan"), math.inf) and is_diverged(float("inf"), math.inf)
    assert is_diverged(231.0, diverge_limit(None, first))
    assert not is_diverged(229.0, diverge_limit(None, first))


@pytest.mark.parametrize(
    "given, stored",
    [(None, None), (False, "off"), ("off", "off"), (5, 5.0), ("1e3", 1000.0), ("2.5x", "2.5x")],
)
def test_config_values(given, stored):
    assert TrainConfig(diverge_loss=given).diverge_loss == stored


@pytest.mark.parametrize("bad", ["foo", 0, -1, True, "0x", "-3x", float("nan"), "x"])
def test_config_rejects(bad):
    with pytest.raises(ValidationError, match="expected a loss > 0, '<k>x'"):
        TrainConfig(diverge_loss=bad)


def test_off_in_yaml_reads_as_off(tmp_path):
    """YAML 1.1 reads a bare `off` as false: both mean "no limit by size"."""
    path = tmp_path / "exp.yaml"
    path.write_text("name: t\ntrain: {diverge_loss: off}\n")
    (run,) = expand(load_experiment(path)[0])
    assert run.config.train.diverge_loss == "off"


def test_the_default_keeps_the_run_ids_recorded_before_it():
    """diverge_loss: null is the default, as before it had a meaning: the run ids of existing
    results stay valid (quickstart's first run, recorded with the earlier code)."""
    exp, _ = load_experiment(Path(__file__).parents[2] / "configs" / "quickstart.yaml")
    assert [r.run_id for r in expand(exp)][:3] == ["df085d820d", "d2c5f4cccd", "e0fdd3fefa"]
    assert run_id(RunConfig()) != run_id(RunConfig(train={"diverge_loss": "100x"}))


def _huge_lr(**train) -> RunConfig:
    return RunConfig.model_validate(
        {
            # sigmoid: the loss explodes and stays finite (relu reaches NaN, which always stops)
            "model": {"hidden": [32, 32], "activation": "sigmoid", "norm": "none"},
            "train": {"lr": 1e4, "batch_size": 64, "epochs": 2, "device": "cpu", **train},
        }
    )


def test_a_run_at_a_huge_lr_is_diverged_by_default(tmp_path, small_digits):
    """The case from the review: lr 1e4, no BN, a loss that explodes and stays finite."""
    off = train_run(_huge_lr(diverge_loss="off"), tmp_path / "off", data=small_digits)
    rows = pd.read_csv(tmp_path / "off" / "metrics.csv")
    first = rows.train_loss.iloc[0]
    assert not off.diverged and math.isfinite(off.final_train_loss), (
        "precondition: the losses stay finite, so only the size rule can catch this run"
    )
    assert off.final_train_loss > DEFAULT_DIVERGE_FACTOR * first, (off.final_train_loss, first)

    default = train_run(_huge_lr(), tmp_path / "default", data=small_digits)
    assert default.diverged and default.diverged_step is not None
    assert default.steps == default.diverged_step < off.steps
    got = pd.read_csv(tmp_path / "default" / "metrics.csv")
    assert got.step.iloc[-1] == default.diverged_step  # one last evaluation, where it stopped
    assert got.train_loss.iloc[0] == first

    absolute = train_run(_huge_lr(diverge_loss=1e30), tmp_path / "abs", data=small_digits)
    assert not absolute.diverged  # an explicit loss is still honoured

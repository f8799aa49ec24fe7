"""Seeds trained together (bnexp.run.vectorize) against separate runs of bnexp.run.train.train_run."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bnexp.config import DataConfig, RunConfig, experiment_from_dict, run_id
from bnexp.data import load_dataset
from bnexp.run.train import train_run
from bnexp.run.vectorize import group_by_seed, train_seeds, why_not_vectorized
from bnexp.sweep.runner import run_experiment

TOL = 1e-5
SUMMARY_KEYS = [
    "final_train_acc",
    "final_test_acc",
    "final_train_loss",
    "final_test_loss",
    "best_test_acc",
    "steps_to_target",
    "epochs_to_target",
    "diverged",
    "diverged_step",
    "steps",
    "epochs",
    "seed",
    "run_id",
]


@pytest.fixture(scope="module")
def small_digits():
    d = load_dataset(DataConfig())
    return replace(
        d,
        x_train=d.x_train[:300],
        y_train=d.y_train[:300],
        x_test=d.x_test[:100],
        y_test=d.y_test[:100],
    )


def cfg_for(seed: int, activation: str = "sigmoid", **train) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"arch": "mlp", "hidden": [32, 32], "activation": activation, "norm": "none"},
            "train": {
                "optimizer": "sgd",
                "lr": 0.2,
                "momentum": 0.9,
                "batch_size": 64,
                "epochs": 2,
                "seed": seed,
                "device": "cpu",
                **train,
            },
            "measure": {"target": {"metric": "train_acc", "value": 0.5}},
        }
    )


def assert_same_run(sep: Path, vec: Path, same_config: bool = True) -> None:
    a = pd.read_csv(sep / "metrics.csv")
    b = pd.read_csv(vec / "metrics.csv")
    assert list(a.columns) == list(b.columns) and a.shape == b.shape, f"{a.shape} vs {b.shape}"
    diff = np.nanmax(np.abs(a.to_numpy(float) - b.to_numpy(float)))
    assert np.array_equal(np.isnan(a.to_numpy(float)), np.isnan(b.to_numpy(float)))
    assert diff <= TOL, f"metrics.csv differ by {diff:.3g} (> {TOL}) in {vec}"
    sa, sb = (
        json.loads((sep / "summary.json").read_text()),
        json.loads((vec / "summary.json").read_text()),
    )
    for k in SUMMARY_KEYS:
        x, y = sa[k], sb[k]
        if isinstance(x, float):
            assert abs(x - y) <= TOL or (np.isnan(x) and np.isnan(y)), f"summary {k}: {x} vs {y}"
        else:
            assert x == y, f"summary {k}: {x!r} vs {y!r}"
    if same_config:
        assert (sep / "config.yaml").read_text() == (vec / "config.yaml").read_text()


@pytest.mark.parametrize(
    "extra", [{}, {"eval_every_steps": 3}, {"optimizer": "adam", "lr": 0.01, "momentum": 0.0}]
)
def test_vectorized_seeds_equal_separate_runs(tmp_path, small_digits, extra):
    cfgs = [cfg_for(s, **extra) for s in (0, 1, 5)]
    sums = train_seeds(cfgs, [tmp_path / f"vec{c.train.seed}" for c in cfgs], data=small_digits)
    assert [s.seeds_together for s in sums] == [3, 3, 3]
    for c in cfgs:
        train_run(c, tmp_path / f"sep{c.train.seed}", data=small_digits)
        assert_same_run(tmp_path / f"sep{c.train.seed}", tmp_path / f"vec{c.train.seed}")
    # the seeds really differ: own weights and data order
    finals = {
        json.loads((tmp_path / f"vec{c.train.seed}" / "summary.json").read_text())[
            "final_train_loss"
        ]
        for c in cfgs
    }
    assert len(finals) == 3


@pytest.mark.slow
def test_vectorized_cnn_equals_separate_runs(tmp_path, small_digits):
    cfgs = [
        RunConfig.model_validate(
            {
                "model": {"arch": "cnn", "channels": [4, 8], "activation": "relu", "norm": "none"},
                "train": {
                    "lr": 0.05,
                    "momentum": 0.9,
                    "batch_size": 50,
                    "epochs": 1,
                    "seed": s,
                    "device": "cpu",
                },
            }
        )
        for s in (0, 1)
    ]
    train_seeds(cfgs, [tmp_path / f"vec{c.train.seed}" for c in cfgs], data=small_digits)
    for c in cfgs:
        train_run(c, tmp_path / f"sep{c.train.seed}", data=small_digits)
        assert_same_run(tmp_path / f"sep{c.train.seed}", tmp_path / f"vec{c.train.seed}")


def test_divergence_of_one_seed_is_recorded_as_a_separate_run_would(tmp_path, small_digits):
    cfgs = [cfg_for(s, "relu", lr=10.0) for s in (0, 1, 2, 3)]
    seps = [train_run(c, tmp_path / f"sep{c.train.seed}", data=small_digits) for c in cfgs]
    diverged = [s.diverged for s in seps]
    assert any(diverged) and not all(diverged), (
        f"precondition: lr=10 should make some seeds diverge: {diverged}"
    )
    train_seeds(cfgs, [tmp_path / f"vec{c.train.seed}" for c in cfgs], data=small_digits)
    for c in cfgs:
        assert_same_run(tmp_path / f"sep{c.train.seed}", tmp_path / f"vec{c.train.seed}")


def test_why_not_vectorized_gives_reasons():
    assert why_not_vectorized([cfg_for(0), cfg_for(1)]) is None
    assert "differ in more than train.seed" in why_not_vectorized([cfg_for(0), cfg_for(1, lr=0.1)])
    assert "share a train.seed" in why_not_vectorized([cfg_for(0), cfg_for(0)])
    assert "single seed" in why_not_vectorized([cfg_for(0)])
    bn = [
        RunConfig.model_validate({**cfg_for(s).model_dump(), "model": {"norm": "torch"}})
        for s in (0, 1)
    ]
    assert "norm: torch" in why_not_vectorized(bn)
    with pytest.raises(ValueError, match="norm: torch"):
        train_seeds(bn, ["/nonexistent/a", "/nonexistent/b"])


def test_vectorize_seeds_is_not_part_of_the_run_id():
    assert run_id(cfg_for(0)) == run_id(cfg_for(0, vectorize_seeds=True))


def _exp(vectorize: bool) -> dict:
    return {
        "name": "vec",
        "data": {"dataset": "digits"},
        "model": {"arch": "mlp", "hidden": [16], "activation": "sigmoid"},
        "train": {
            "lr": 0.1,
            "batch_size": 128,
            "epochs": 1,
            "device": "cpu",
            "vectorize_seeds": vectorize,
        },
        "sweep": {"model.norm": ["none", "torch"], "train.seed": [0, 1]},
    }


def test_sweep_groups_seeds_and_falls_back_with_a_log_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="bnexp"):
        res = run_experiment(experiment_from_dict(_exp(True)), _exp(True), tmp_path / "v")
    assert sorted(res.ran) == sorted(r.run_id for r in res.plan) and not res.skipped
    together = dict(
        zip(
            res.summary["norm"] + res.summary["seed"].astype(str),
            res.summary["seeds_together"],
            strict=True,
        )
    )
    assert together == {"none0": 2, "none1": 2, "torch0": 1, "torch1": 1}
    fallbacks = [r.message for r in caplog.records if "one by one" in r.message]
    assert len(fallbacks) == 1 and "norm: torch" in fallbacks[0], fallbacks
    ref = run_experiment(experiment_from_dict(_exp(False)), _exp(False), tmp_path / "s")
    for run in ref.plan:  # same run ids, same numbers; config.yaml differs in vectorize_seeds only
        assert_same_run(
            tmp_path / "s" / "vec" / "runs" / run.run_id,
            tmp_path / "v" / "vec" / "runs" / run.run_id,
            same_config=False,
        )
    again = run_experiment(experiment_from_dict(_exp(True)), _exp(True), tmp_path / "v")
    assert again.ran == [] and len(again.skipped) == 4


def test_group_by_seed_keeps_cells_apart():
    exp = experiment_from_dict(_exp(True))
    from bnexp.config import expand

    groups = group_by_seed(expand(exp))
    assert [[r.params["train.seed"] for r in g] for g in groups] == [[0, 1], [0, 1]]
    assert [{r.params["model.norm"] for r in g} for g in groups] == [{"none"}, {"torch"}]


def test_peak_memory_is_recorded(tmp_path, small_digits):
    s = train_run(cfg_for(0, epochs=1), tmp_path / "r", data=small_digits)
    assert s.peak_rss_mb is not None and 50 < s.peak_rss_mb < 100_000, s.peak_rss_mb
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["peak_rss_mb"] == s.peak_rss_mb


def test_batched_divergence_check_finds_the_same_step(tmp_path, small_digits, monkeypatch):
    """The accelerator path (losses read every k steps) on the CPU: same diverged_step."""
    cfg = cfg_for(2, "relu", lr=10.0)
    per_step = train_run(cfg, tmp_path / "a", data=small_digits)
    assert per_step.diverged, "precondition: lr=10 diverges for seed 2"
    monkeypatch.setattr("bnexp.run.train.divergence_check_every", lambda device: 5)
    batched = train_run(cfg, tmp_path / "b", data=small_digits)
    assert batched.diverged_step == per_step.diverged_step, (
        batched.diverged_step,
        per_step.diverged_step,
    )
    assert 0 <= batched.steps - per_step.steps < 5, (batched.steps, per_step.steps)

"""Seeds trained together (bnexp.training.vectorize) against separate runs of
bnexp.training.train.train_run."""

from __future__ import annotations

import json
import logging

import pytest
from run_checks import assert_same_run

from bnexp.config import RunConfig, experiment_from_dict, run_id
from bnexp.sweep.runner import run_experiment
from bnexp.training.recorder import RunInterrupted
from bnexp.training.train import train_run
from bnexp.training.vectorize import group_by_seed, train_seeds, why_not_vectorized


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


@pytest.mark.parametrize(
    "extra",
    [
        {},
        pytest.param({"eval_every_steps": 3}, marks=pytest.mark.slow),
        pytest.param({"optimizer": "adam", "lr": 0.01, "momentum": 0.0}, marks=pytest.mark.slow),
    ],
    ids=["sgd", "eval-every-3-steps", "adam"],
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


@pytest.mark.slow
@pytest.mark.parametrize(
    "lr, diverge_loss",
    [(10.0, "off"), (3.0, None)],
    ids=["nan-or-inf-only", "default-100x-first-loss"],
)
def test_divergence_of_one_seed_is_recorded_as_a_separate_run_would(
    tmp_path, small_digits, lr, diverge_loss
):
    cfgs = [cfg_for(s, "relu", lr=lr, diverge_loss=diverge_loss) for s in (0, 1, 2, 3)]
    seps = [train_run(c, tmp_path / f"sep{c.train.seed}", data=small_digits) for c in cfgs]
    diverged = [s.diverged for s in seps]
    assert any(diverged) and not all(diverged), (
        f"precondition: lr={lr} should make some seeds diverge, not all: {diverged}"
    )
    train_seeds(cfgs, [tmp_path / f"vec{c.train.seed}" for c in cfgs], data=small_digits)
    for c in cfgs:
        assert_same_run(tmp_path / f"sep{c.train.seed}", tmp_path / f"vec{c.train.seed}")


def test_should_stop_interrupts_seeds_trained_together(tmp_path, small_digits):
    """As train_run: asked before each step; RunInterrupted, and no run counts as complete."""
    cfgs = [cfg_for(s, epochs=3) for s in (0, 1)]
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 6  # 5 steps an epoch (300 / 64): stop in the second epoch

    dirs = [tmp_path / f"vec{c.train.seed}" for c in cfgs]
    with pytest.raises(RunInterrupted, match="stopped at step 6"):
        train_seeds(cfgs, dirs, data=small_digits, should_stop=should_stop)
    for d in dirs:
        assert not (d / "summary.json").exists()
        rows = (d / "metrics.csv").read_text().splitlines()
        assert len(rows) == 3, rows  # header, step 0, end of epoch 1: what was measured stays


def test_execute_task_reports_an_interrupted_group_as_interrupted(tmp_path):
    from bnexp.config import expand
    from bnexp.sweep.store import RunStore
    from bnexp.sweep.worker import execute_task

    raw = _exp(True)
    raw["sweep"] = {"train.seed": [0, 1]}
    task = expand(experiment_from_dict(raw))
    assert why_not_vectorized([r.config for r in task]) is None, "precondition: one group"
    outcomes = execute_task(tmp_path, task, should_stop=lambda: True)
    assert [o.status for o in outcomes] == ["interrupted", "interrupted"], outcomes
    store = RunStore(tmp_path)
    assert all(store.summary(r.run_id) is None for r in task), "an interrupted run is not done"


def test_why_not_vectorized_gives_reasons():
    assert why_not_vectorized([cfg_for(0), cfg_for(1)]) is None
    assert "differ in more than train.seed" in why_not_vectorized([cfg_for(0), cfg_for(1, lr=0.1)])
    assert "share a train.seed" in why_not_vectorized([cfg_for(0), cfg_for(0)])
    assert "single seed" in why_not_vectorized([cfg_for(0)])
    noisy = [
        RunConfig.model_validate(
            {
                **cfg_for(s).model_dump(),
                "model": {"norm": "custom", "bn_noise": {"mean_std": 0.1}},
            }
        )
        for s in (0, 1)
    ]
    assert "bn_noise" in why_not_vectorized(noisy)
    with pytest.raises(ValueError, match="bn_noise"):
        train_seeds(noisy, ["/nonexistent/a", "/nonexistent/b"])


def test_vectorize_seeds_is_not_part_of_the_run_id():
    assert run_id(cfg_for(0)) == run_id(cfg_for(0, vectorize_seeds=True))


def _exp(vectorize: bool) -> dict:
    return {
        "name": "vec",
        "data": {"dataset": "digits"},
        "model": {"arch": "mlp", "hidden": [16], "activation": "sigmoid", "norm": "custom"},
        "train": {
            "lr": 0.1,
            "batch_size": 128,
            "epochs": 1,
            "device": "cpu",
            "vectorize_seeds": vectorize,
        },
        # a BN cell trained together, and one that must fall back (recalibration is per model)
        "sweep": {"model.eval_stats": ["running", "recalibrate"], "train.seed": [0, 1]},
    }


@pytest.mark.slow
def test_sweep_groups_seeds_and_falls_back_with_a_log_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="bnexp"):
        res = run_experiment(experiment_from_dict(_exp(True)), _exp(True), tmp_path / "v")
    assert sorted(res.ran) == sorted(r.run_id for r in res.plan) and not res.skipped
    stats = {r.run_id: r.params["model.eval_stats"] for r in res.plan}
    together = dict(
        zip(
            res.summary["run_id"].map(stats) + res.summary["seed"].astype(str),
            res.summary["seeds_together"],
            strict=True,
        )
    )
    assert together == {"running0": 2, "running1": 2, "recalibrate0": 1, "recalibrate1": 1}
    fallbacks = [r.message for r in caplog.records if "one by one" in r.message]
    assert len(fallbacks) == 1 and "recalibrate" in fallbacks[0], fallbacks
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
    cells = [{r.params["model.eval_stats"] for r in g} for g in groups]
    assert cells == [{"running"}, {"recalibrate"}]


def test_peak_memory_is_recorded(tmp_path, small_digits):
    s = train_run(cfg_for(0, epochs=1), tmp_path / "r", data=small_digits)
    assert s.peak_rss_mb is not None and 50 < s.peak_rss_mb < 100_000, s.peak_rss_mb
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["peak_rss_mb"] == s.peak_rss_mb


def test_batched_divergence_check_finds_the_same_step(tmp_path, small_digits, monkeypatch):
    """The accelerator path (losses read every k steps) on the CPU: same diverged_step."""
    cfg = cfg_for(2, "relu", lr=10.0)
    per_step = train_run(cfg, tmp_path / "a", data=small_digits)
    assert per_step.diverged, "precondition: lr=10 diverges for seed 2"
    monkeypatch.setattr("bnexp.training.train.divergence_check_every", lambda device: 5)
    batched = train_run(cfg, tmp_path / "b", data=small_digits)
    assert batched.diverged_step == per_step.diverged_step, (
        batched.diverged_step,
        per_step.diverged_step,
    )
    assert 0 <= batched.steps - per_step.steps < 5, (batched.steps, per_step.steps)

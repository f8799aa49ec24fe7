"""A validation split in training: val_loss and val_acc at every evaluation (both loops, with
measure.eval_subset, across a resume), and the summary's choices made on them.

The reference for the validation columns is the same run with the validation examples as its
test set: evaluation changes no training state, so its test columns must be the same numbers."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch
from run_checks import assert_same_run

from bnexp.config import RunConfig
from bnexp.data import load_dataset
from bnexp.results import METRIC_COLUMNS, VAL_COLUMNS
from bnexp.training.recorder import Clock, RunInterrupted, RunRecorder
from bnexp.training.train import train_run
from bnexp.training.vectorize import train_seeds

VAL_SUMMARY = ["final_val_acc", "final_val_loss", "best_val_acc", "best_val_epoch", "best_test_acc"]


def _cfg(val: float | None = 0.2, seed: int = 0, measure: dict | None = None, **train):
    budget = {} if "steps" in train else {"epochs": 4}
    return RunConfig.model_validate(
        {
            "data": {"val_fraction": val},
            "model": {"hidden": [16], "activation": "relu", "norm": "torch"},
            "train": {
                "lr": 0.05,
                "momentum": 0.9,
                "batch_size": 32,
                "seed": seed,
                "checkpoint_every": 1,
                "device": "cpu",
                **budget,
                **train,
            },  # fmt: skip
            "measure": measure or {},
        }
    )


def _files(run_dir):
    return pd.read_csv(run_dir / "metrics.csv"), json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def val_digits():
    return load_dataset(_cfg().data)


def test_val_columns_are_a_run_tested_on_the_validation_examples(tmp_path, val_digits):
    train_run(_cfg(), tmp_path / "val", data=val_digits)
    on_val = replace(val_digits, x_test=val_digits.x_val, y_test=val_digits.y_val)
    on_val = replace(on_val, x_val=None, y_val=None)
    train_run(_cfg(val=None), tmp_path / "ref", data=on_val)
    got, s = _files(tmp_path / "val")
    ref, r = _files(tmp_path / "ref")
    assert list(got.columns) == METRIC_COLUMNS + VAL_COLUMNS and list(ref.columns) == METRIC_COLUMNS
    assert got["val_loss"].tolist() == ref["test_loss"].tolist()
    assert got["val_acc"].tolist() == ref["test_acc"].tolist()
    assert got[METRIC_COLUMNS[:5]].equals(ref[METRIC_COLUMNS[:5]])  # the same training
    # the summary chooses on validation: the first evaluation with the highest val_acc
    best = got["val_acc"].idxmax()  # pandas: the first of equal maxima
    assert s["best_val_acc"] == got["val_acc"][best] and s["best_val_epoch"] == got["epoch"][best]
    assert s["best_test_acc"] == got["test_acc"][best]
    assert s["final_val_acc"] == got["val_acc"].iloc[-1]
    assert s["final_val_loss"] == got["val_loss"].iloc[-1]
    # without a split: empty validation columns, best_test_acc the highest test accuracy
    assert [r[k] for k in VAL_SUMMARY[:4]] == [None] * 4
    assert r["best_test_acc"] == ref["test_acc"].max()


def test_the_best_validation_evaluation_is_the_earliest_of_equals(tmp_path):
    rec = RunRecorder(_cfg(), tmp_path, Clock())
    rec.open()
    rows = [(0.5, 0.40), (0.7, 0.55), (0.7, 0.60), (0.6, 0.70)]  # (val_acc, test_acc)
    for epoch, (val_acc, test_acc) in enumerate(rows):
        m = {"train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0, "test_acc": test_acc}
        rec.record(epoch, 0.05, m | {"val_loss": 1.0, "val_acc": val_acc})
    s = rec.finish(torch.device("cpu"), None)
    assert (s.best_val_acc, s.best_val_epoch, s.best_test_acc) == (0.7, 1, 0.55)
    assert (s.final_val_acc, s.final_test_acc) == (0.6, 0.70)


@pytest.mark.slow
def test_seeds_trained_together_record_the_validation_of_separate_runs(tmp_path, val_digits):
    cfgs = [_cfg(seed=s, steps=50) for s in (0, 1)]  # a step budget ending mid-epoch
    sums = train_seeds(cfgs, [tmp_path / f"vec{c.train.seed}" for c in cfgs], data=val_digits)
    for c, vec in zip(cfgs, sums, strict=True):
        sep = train_run(c, tmp_path / f"sep{c.train.seed}", data=val_digits)
        assert_same_run(tmp_path / f"sep{c.train.seed}", tmp_path / f"vec{c.train.seed}")
        assert vec.steps == sep.steps == 50 and vec.best_val_epoch == sep.best_val_epoch
        for key in VAL_SUMMARY:
            assert getattr(vec, key) == pytest.approx(getattr(sep, key), rel=1e-4, abs=1e-5)


def test_eval_subset_runs_evaluate_the_validation_split_with_the_whole_sets(tmp_path, val_digits):
    measure = {"eval_subset": 100, "target": {"metric": "train_acc", "value": 0.8}}
    train_run(_cfg(measure=measure), tmp_path / "sub", data=val_digits)
    train_run(_cfg(measure={"target": measure["target"]}), tmp_path / "full", data=val_digits)
    sub, s = _files(tmp_path / "sub")
    full, _ = _files(tmp_path / "full")
    assert list(sub.columns) == METRIC_COLUMNS + VAL_COLUMNS and len(sub) < len(full)
    by_step = full.set_index("step")
    for _, row in sub.iterrows():  # every whole-set row is the full run's row at that step
        assert row.to_dict() == by_step.loc[row["step"]].to_dict() | {"step": row["step"]}
    best = sub["val_acc"].idxmax()
    assert s["best_val_epoch"] == sub["epoch"][best] and s["best_test_acc"] == sub["test_acc"][best]


def test_a_resumed_run_keeps_its_validation_rows_and_best_evaluation(tmp_path, val_digits):
    ref = train_run(_cfg(), tmp_path / "ref", data=val_digits)
    run_dir, done = tmp_path / "run", [0]
    with pytest.raises(RunInterrupted):
        train_run(_cfg(), run_dir, data=val_digits,
                  on_progress=lambda e, _: done.__setitem__(0, e),
                  should_stop=lambda: done[0] >= 2)  # fmt: skip
    got = train_run(_cfg(), run_dir, data=val_digits)
    assert got.resumed_from_epoch == 2
    assert (run_dir / "metrics.csv").read_bytes() == (tmp_path / "ref" / "metrics.csv").read_bytes()
    assert [getattr(got, k) for k in VAL_SUMMARY] == [getattr(ref, k) for k in VAL_SUMMARY]

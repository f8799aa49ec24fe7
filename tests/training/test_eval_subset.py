"""measure.eval_subset: estimates on a fixed training subset between whole-set evaluations, and
the whole sets at the first and last evaluation and wherever the target may be met. The reference
is the same run with every evaluation on the whole sets (evaluation changes no training state)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from run_checks import assert_same_run

from bnexp.config import ConfigError, RunConfig, experiment_from_dict, run_id
from bnexp.results import ESTIMATE_COLUMNS, ESTIMATES
from bnexp.training.recorder import NEAR_Z, RunInterrupted
from bnexp.training.train import train_run
from bnexp.training.vectorize import train_seeds


def _cfg(subset: int | None, target: float | None = 0.8, seed: int = 0, **train) -> RunConfig:
    measure: dict = {"eval_subset": subset}
    if target is not None:
        measure["target"] = {"metric": "train_acc", "value": target}
    return RunConfig.model_validate(
        {
            "model": {"hidden": [32], "activation": "relu", "norm": "torch"},
            "train": {
                "lr": 0.05,
                "momentum": 0.9,
                "batch_size": 32,
                "epochs": 8,
                "seed": seed,
                "checkpoint_every": 1,
                "device": "cpu",
                **train,
            },  # fmt: skip
            "measure": measure,
        }
    )


def _files(run_dir):
    return (
        pd.read_csv(run_dir / "metrics.csv"),
        json.loads((run_dir / "summary.json").read_text()),
    )


def test_whole_set_rows_are_the_full_runs_rows_at_the_points_the_report_uses(
    tmp_path, small_digits
):
    train_run(_cfg(None), tmp_path / "full", data=small_digits)
    full_m, full_s = _files(tmp_path / "full")
    train_run(_cfg(100), tmp_path / "sub", data=small_digits)
    sub_m, sub_s = _files(tmp_path / "sub")
    est = pd.read_csv(tmp_path / "sub" / ESTIMATES)
    assert list(est.columns) == ESTIMATE_COLUMNS
    # every whole-set row is the full run's row at that step, to the byte
    by_step = full_m.set_index("step")
    for _, r in sub_m.iterrows():
        assert r.to_dict() == by_step.loc[r["step"]].to_dict() | {"step": r["step"]}
    # the first and last evaluations, and the one where the target is first met
    reached = full_s["steps_to_target"]
    assert reached is not None and 0 < reached < full_s["steps"]  # the test's premise
    assert {0, full_s["steps"], reached} <= set(sub_m["step"])
    for key in ("steps_to_target", "final_train_acc", "final_test_acc", "gen_gap", "steps"):
        assert sub_s[key] == full_s[key], key
    # before the target, a whole-set row only where the estimate was near it; after it, none
    margin = NEAR_Z * (0.8 * 0.2 / 100) ** 0.5
    between = est.set_index("step")["train_acc"]
    for step in set(sub_m["step"]) - {0, full_s["steps"]}:
        assert step <= reached and between.loc[step] >= 0.8 - margin
    assert len(sub_m) < len(full_m) and len(est) == len(full_m) - 2  # all but first and last
    assert set(est["step"]) == set(full_m["step"]) - {0, full_s["steps"]}
    # the saving: fewer whole-set evaluations than epochs
    assert len(sub_m) <= 2 + sum(between.loc[:reached] >= 0.8 - margin)


def test_a_subset_as_large_as_the_training_set_estimates_exactly(tmp_path, small_digits):
    """eval_subset >= the training set: an estimate of all n examples is the whole-set training
    numbers of the full run at that step; the others are first looks at a quarter of them."""
    train_run(_cfg(None), tmp_path / "full", data=small_digits)
    train_run(_cfg(10_000), tmp_path / "sub", data=small_digits)
    full, _ = _files(tmp_path / "full")
    est = pd.read_csv(tmp_path / "sub" / ESTIMATES)
    n = len(small_digits.x_train)
    assert set(est["n"]) == {n // 4, n}  # premise: both kinds occur
    whole = est[est["n"] == n].set_index("step")
    cols = ["epoch", "lr", "train_loss", "train_acc"]
    want = full.set_index("step").loc[whole.index, cols]
    pd.testing.assert_frame_equal(whole[cols], want, check_exact=True)


def test_without_a_target_every_estimate_is_a_first_look(tmp_path, small_digits):
    """Nothing to decide: the estimates are curve points, each a quarter of the subset, and the
    whole sets are evaluated at the first and last evaluation only."""
    train_run(_cfg(100, target=None), tmp_path / "sub", data=small_digits)
    sub, summary = _files(tmp_path / "sub")
    est = pd.read_csv(tmp_path / "sub" / ESTIMATES)
    assert (est["n"] == 25).all() and len(est) == 7
    assert sub["step"].tolist() == [0, summary["steps"]]


def test_a_first_look_far_below_the_target_is_the_estimate(tmp_path, small_digits):
    """Epochs far from the target cost a quarter of the subset: a look at 25 of its 100
    examples is the estimate when it lies more than NEAR_Z of its standard errors below the
    target; nearer, the whole subset is evaluated; the whole-set rows stay the full run's."""
    train_run(_cfg(None, lr=0.005), tmp_path / "full", data=small_digits)
    train_run(_cfg(100, lr=0.005), tmp_path / "sub", data=small_digits)
    est = pd.read_csv(tmp_path / "sub" / ESTIMATES)
    full_m, full_s = _files(tmp_path / "full")
    sub_m, sub_s = _files(tmp_path / "sub")
    reached = sub_s["steps_to_target"]
    before = est[est["step"] < reached]
    assert set(before["n"]) == {25, 100}  # the premise: the first epochs are far below 0.8
    look = before[before["n"] == 25]
    assert (look["train_acc"] < 0.8 - NEAR_Z * (0.8 * 0.2 / 25) ** 0.5).all()
    assert ((look["train_acc"] * 25).round(9) % 1 == 0).all()  # counts out of 25 examples
    assert (est.loc[est["step"] > reached, "n"] == 25).all()  # met: nothing left to decide
    by_step = full_m.set_index("step")
    for _, r in sub_m.iterrows():
        assert r.to_dict() == by_step.loc[r["step"]].to_dict() | {"step": r["step"]}
    assert sub_s["steps_to_target"] == full_s["steps_to_target"] is not None


@pytest.mark.parametrize("lr", [0.05, 0.005], ids=["near", "first-looks"])
def test_seeds_trained_together_record_what_separate_runs_do(tmp_path, small_digits, lr):
    cfgs = [_cfg(100, seed=s, lr=lr) for s in (0, 1)]
    train_seeds(cfgs, [tmp_path / f"vec{c.train.seed}" for c in cfgs], data=small_digits)
    for c in cfgs:
        train_run(c, tmp_path / f"sep{c.train.seed}", data=small_digits)
        assert_same_run(tmp_path / f"sep{c.train.seed}", tmp_path / f"vec{c.train.seed}")
        a = pd.read_csv(tmp_path / f"sep{c.train.seed}" / ESTIMATES)
        b = pd.read_csv(tmp_path / f"vec{c.train.seed}" / ESTIMATES)
        pd.testing.assert_frame_equal(a, b, rtol=1e-4, atol=1e-5)


def test_a_resumed_run_ends_with_the_same_estimates(tmp_path, small_digits):
    train_run(_cfg(100), tmp_path / "ref", data=small_digits)
    run_dir, done = tmp_path / "run", [0]
    with pytest.raises(RunInterrupted):
        train_run(_cfg(100), run_dir, data=small_digits,
                  on_progress=lambda e, _: done.__setitem__(0, e),
                  should_stop=lambda: done[0] >= 3)  # fmt: skip
    assert train_run(_cfg(100), run_dir, data=small_digits).resumed_from_epoch == 3
    for name in ("metrics.csv", ESTIMATES):
        assert (run_dir / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_eval_subset_needs_a_train_acc_target_and_enters_the_run_id_only_when_set():
    base = {"name": "x", "measure": {"target": {"metric": "train_loss", "value": 0.1}}}
    with pytest.raises(ConfigError, match="expected target metric train_acc"):
        experiment_from_dict({**base, "measure": {**base["measure"], "eval_subset": 100}})
    assert run_id(_cfg(None)) != run_id(_cfg(100))
    plain = RunConfig.model_validate({"train": {"lr": 0.1}})
    unset = RunConfig.model_validate({"train": {"lr": 0.1}, "measure": {"eval_subset": None}})
    assert run_id(plain) == run_id(unset)

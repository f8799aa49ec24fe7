"""BN cells' seeds trained together (bnexp.training.vectorize) against separate runs.

The criterion: a batched BN kernel rounds differently from the unbatched one in the
last bit and training amplifies that, so not bit-equality but (1) equal within 1e-5 (relative +
absolute) for the first 20 steps, every step evaluated, and (2) over a whole run statistically
the same: each seed's steps to target within one evaluation of its separate run's, and its final
accuracies within the spread that separate seeds show.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from bnexp.config import RunConfig
from bnexp.training.train import train_run
from bnexp.training.vectorize import train_seeds, why_not_vectorized

RTOL = ATOL = 1e-5


def bn_cfg(seed: int, norm: str = "custom", model: dict | None = None, **train) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {
                "arch": "mlp",
                "hidden": [32, 32],
                "activation": "relu",
                "norm": norm,
                **(model or {}),
            },
            "train": {
                "optimizer": "sgd",
                "lr": 0.1,
                "momentum": 0.9,
                "batch_size": 15,
                "epochs": 1,
                "seed": seed,
                "device": "cpu",
                **train,
            },
            "measure": {"target": {"metric": "train_acc", "value": 0.9}},
        }
    )


def _metrics(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv")


@pytest.mark.parametrize(
    "norm, model",
    [
        ("custom", {}),
        ("torch", {}),
        pytest.param("custom", {"ghost_batch_size": 5}, marks=pytest.mark.slow),
        pytest.param("custom", {"bn_stats": "population"}, marks=pytest.mark.slow),
        pytest.param("custom", {"eval_stats": "batch"}, marks=pytest.mark.slow),
        pytest.param("torch", {"norm_position": "post_activation"}, marks=pytest.mark.slow),
    ],
    ids=["custom", "torch", "ghost-5", "population", "eval-batch-stats", "torch-post-act"],
)
def test_first_20_steps_equal_separate_runs_within_1e_5(tmp_path, small_digits, norm, model):
    """Every step evaluated (train and test loss and accuracy, running estimates in eval mode):
    300 images in batches of 15 = 20 steps."""
    cfgs = [bn_cfg(s, norm, model, eval_every_steps=1) for s in (0, 1, 2)]
    assert why_not_vectorized(cfgs) is None, why_not_vectorized(cfgs)
    train_seeds(cfgs, [tmp_path / f"vec{c.train.seed}" for c in cfgs], data=small_digits)
    for c in cfgs:
        train_run(c, tmp_path / f"sep{c.train.seed}", data=small_digits)
        sep, vec = (
            _metrics(tmp_path / f"sep{c.train.seed}"),
            _metrics(tmp_path / f"vec{c.train.seed}"),
        )
        assert list(sep.step) == list(range(21)) and list(vec.step) == list(sep.step)
        torch.testing.assert_close(
            torch.tensor(vec.to_numpy(float)),
            torch.tensor(sep.to_numpy(float)),
            rtol=RTOL,
            atol=ATOL,
            msg=lambda m, s=c.train.seed: f"seed {s}, metrics.csv vectorized vs separate: {m}",
        )
    losses = {float(_metrics(tmp_path / f"vec{s}").train_loss.iloc[-1]) for s in (0, 1, 2)}
    assert len(losses) == 3, "the seeds really differ: own weights, own data order"


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["custom", "torch"])
def test_whole_runs_are_statistically_the_same_as_separate_runs(tmp_path, small_digits, norm):
    """6 epochs (120 steps) of 4 seeds, evaluated each epoch (every 20 steps)."""
    cfgs = [bn_cfg(s, norm, epochs=6) for s in range(4)]
    vec = train_seeds(cfgs, [tmp_path / f"vec{c.train.seed}" for c in cfgs], data=small_digits)
    sep = [train_run(c, tmp_path / f"sep{c.train.seed}", data=small_digits) for c in cfgs]
    per_eval = 20  # steps between two evaluations
    for v, s in zip(vec, sep, strict=True):
        assert v.steps_to_target is not None and s.steps_to_target is not None, (
            "precondition: every seed reaches the target"
        )
        assert abs(v.steps_to_target - s.steps_to_target) <= per_eval, (
            f"seed {s.seed}: steps to target {v.steps_to_target} vectorized vs "
            f"{s.steps_to_target} separate (one evaluation = {per_eval} steps)"
        )
    for key in ("final_train_acc", "final_test_acc"):
        sep_values = [getattr(s, key) for s in sep]
        spread = max(sep_values) - min(sep_values)
        assert spread > 0, f"precondition: seeds differ in {key}: {sep_values}"
        for v, s in zip(vec, sep, strict=True):
            miss = abs(getattr(v, key) - getattr(s, key))
            assert miss <= spread, (
                f"seed {s.seed} {key}: {getattr(v, key)} vectorized vs {getattr(s, key)} "
                f"separate, miss {miss:.4f} > the separate seeds' spread {spread:.4f}"
            )
    summary = json.loads((tmp_path / "vec0" / "summary.json").read_text())
    assert summary["seeds_together"] == 4 and summary["norm"] == norm


def test_bn_cells_vectorize_unless_a_control_is_per_model():
    assert why_not_vectorized([bn_cfg(0, "torch"), bn_cfg(1, "torch")]) is None
    assert why_not_vectorized([bn_cfg(0), bn_cfg(1)]) is None
    noisy = {"bn_noise": {"mean_std": 0.1, "scale_std": 0.1}}
    assert "bn_noise" in why_not_vectorized([bn_cfg(0, model=noisy), bn_cfg(1, model=noisy)])
    recal = {"eval_stats": "recalibrate"}
    assert "recalibrate" in why_not_vectorized([bn_cfg(0, model=recal), bn_cfg(1, model=recal)])

"""`RunSummary`, the one definition of a run's summary.json and of summary.csv's columns, and the
columns of a run's CSVs. Imports no torch, so read-only commands stay fast."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from bnexp.config import RunConfig, run_id

METRIC_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]
# metrics.csv's last two columns with a validation split (data.val_fraction), absent without one
VAL_COLUMNS = ["val_loss", "val_acc"]
TIMING_COLUMNS = ["epoch", "step", "wall_s", "train_s", "eval_s"]
# training loss and accuracy on the measure.eval_subset examples, not the whole training set
ESTIMATE_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_acc", "n"]


@dataclass
class RunSummary:
    """summary.json of a complete run (the run store writes a shorter one for a failed run)."""

    run_id: str
    status: str  # "complete" (diverged runs too); the run store writes "failed" summaries
    norm: str
    batch_size: int
    lr: float
    seed: int
    final_train_acc: float
    final_test_acc: float
    final_train_loss: float
    final_test_loss: float
    gen_gap: float  # final_train_acc - final_test_acc
    loss_gap: float  # final_test_loss - final_train_loss
    # with data.val_fraction: the test accuracy at the best validation evaluation (best_val_epoch),
    # so that no choice is made on the test set; without a split: the highest test accuracy of
    # any evaluation (chosen on the test set: optimistic, and no verdict may rest on it)
    best_test_acc: float
    steps_to_target: int | None  # None: never reached (censored), never "fast"
    epochs_to_target: float | None  # fractional when reached at a mid-epoch evaluation
    time_to_target_s: float | None  # training seconds (evaluation excluded) until reached
    diverged: bool
    diverged_step: int | None
    steps: int
    epochs: int
    wall_s: float  # whole run, evaluation included
    train_s: float  # optimizer steps only
    eval_s: float
    device: str
    resumed_from_epoch: int | None = (
        None  # None: trained in one go; else the checkpoint it resumed from
    )
    params: dict[str, Any] = field(default_factory=dict)  # the swept keys and their values
    # peak resident memory of this process so far, MiB (CUDA: peak allocated on the device);
    # a worker that trains many runs reports its own high-water mark
    peak_rss_mb: float | None = None
    seeds_together: int = 1  # > 1: trained in one vectorized model with other seeds (shared times)
    # with data.val_fraction (else None, empty in summary.csv): the last evaluation's validation
    # numbers, and the evaluation with the highest val_acc (the earliest of equals): its val_acc
    # and epoch (fractional for a mid-epoch evaluation); best_test_acc is that evaluation's
    final_val_acc: float | None = None
    final_val_loss: float | None = None
    best_val_acc: float | None = None
    best_val_epoch: float | None = None

    # fields that say how a run went (time, machine, memory), not what it computed: `repro`
    # does not compare them
    HOW_IT_WENT = (
        "wall_s",
        "train_s",
        "eval_s",
        "time_to_target_s",
        "device",
        "resumed_from_epoch",
        "peak_rss_mb",
        "seeds_together",
    )

    @classmethod
    def from_run(
        cls,
        cfg: RunConfig,
        last: dict[str, float],
        reached: dict[str, Any] | None,
        best_test_acc: float,
        diverged_step: int | None,
        steps: int,
        wall_s: float,
        train_s: float,
        eval_s: float,
        device: str,
        params: dict[str, Any] | None,
        epochs: int | None = None,
        best_val: dict[str, float] | None = None,
        **extra: Any,
    ) -> RunSummary:
        """The summary of a finished run from its last metrics row and what it recorded on the way.

        `reached`: {steps, epochs, time_s} where measure.target was first met, else None.
        `best_val`: {val_acc, epoch, test_acc} of the best validation evaluation (None: no
        validation split); then best_test_acc is its test_acc, not `best_test_acc`.
        """
        return cls(
            run_id=run_id(cfg),
            status="complete",
            norm=cfg.model.norm,
            batch_size=cfg.train.batch_size,
            lr=cfg.train.lr,
            seed=cfg.train.seed,
            final_train_acc=last["train_acc"],
            final_test_acc=last["test_acc"],
            final_train_loss=last["train_loss"],
            final_test_loss=last["test_loss"],
            gen_gap=last["train_acc"] - last["test_acc"],
            loss_gap=last["test_loss"] - last["train_loss"],
            best_test_acc=best_val["test_acc"] if best_val else best_test_acc,
            steps_to_target=reached["steps"] if reached else None,
            epochs_to_target=reached["epochs"] if reached else None,
            time_to_target_s=round(reached["time_s"], 4) if reached else None,
            diverged=diverged_step is not None,
            diverged_step=diverged_step,
            steps=steps,
            epochs=cfg.train.epochs if epochs is None else epochs,  # with train.steps: started
            wall_s=round(wall_s, 4),
            train_s=round(train_s, 4),
            eval_s=round(eval_s, 4),
            device=device,
            params=dict(params or {}),
            final_val_acc=last.get("val_acc"),
            final_val_loss=last.get("val_loss"),
            best_val_acc=best_val["val_acc"] if best_val else None,
            best_val_epoch=best_val["epoch"] if best_val else None,
            **extra,
        )


# summary.csv's columns, in RunSummary's order: every field but the record-keeping ones
# (status: summary.csv holds complete runs only; params: spread out as one column per swept key)
SUMMARY_COLUMNS = [
    f.name for f in fields(RunSummary) if f.name not in ("status", "params", "resumed_from_epoch")
]

"""One run: `train_run(cfg, run_dir) -> RunSummary`.

The data live as tensors on the run's device; each epoch draws a seeded permutation and walks it
in mini-batches (no DataLoader on the hot path). After every epoch (and every
`train.eval_every_steps` steps, if set) the whole train and test sets are evaluated in eval mode
(with measure.eval_subset: see bnexp.training.recorder).
What the run leaves in run_dir (config.yaml, metrics.csv, timing.csv, checkpoint.pt,
summary.json) is written by its `RunRecorder` (bnexp.training.recorder). A run that finds an intact
checkpoint.pt of its own resumes from it: model, optimizer, data-order generator, global RNGs,
step and the rows so far are restored, so it ends with the same metrics.csv bytes as a run that
was never interrupted.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bnexp.config import RunConfig, TrainConfig
from bnexp.data import Dataset, load_dataset
from bnexp.nn.models import build_model, init_weights
from bnexp.nn.norm import recalibrate
from bnexp.results import RunSummary
from bnexp.training.device import resolve_device
from bnexp.training.probes import RunProbes
from bnexp.training.recorder import (
    Clock,
    RunInterrupted,
    RunRecorder,
    fractional_epoch,
    target_reached,
)
from bnexp.training.step import (
    batches_of_epoch,
    estimate_on_subset,
    evaluate_splits,
    image_layout,
    loss_and_correct,
    loss_of,
    make_optimizer,
    set_determinism,
    steps_per_epoch,
    train_subset,
)

# re-exported: what callers of a run import from here
__all__ = [
    "RunInterrupted",
    "batches_of_epoch",
    "loss_and_correct",
    "target_reached",
    "train_run",
]

log = logging.getLogger("bnexp")

# set (to anything): the first optimizer step of each run prints "<this name> <time.time()>" to
# stderr (the start-up benchmark's clock: launch -> first step)
FIRST_STEP_ENV = "BNEXP_PRINT_FIRST_STEP"


def divergence_check_every(device: torch.device) -> int:
    """Steps between divergence checks: every step on the CPU (free), every 32 elsewhere."""
    return 1 if device.type == "cpu" else 32


@contextmanager
def _deterministic_threads(tc: TrainConfig):
    """A deterministic CPU run uses one torch thread: CPU reductions (BN's batch statistics,
    sums over the batch) split their work by thread count, so their rounding, and then every
    later number, would depend on how many cores or workers there are. One thread is the count
    every machine has; sweeps fill the cores with parallel workers instead."""
    threads = torch.get_num_threads()
    if tc.deterministic and resolve_device(tc.device).type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _in_deterministic_threads(fn):
    @functools.wraps(fn)
    def wrapper(cfg: RunConfig, *args, **kwargs):
        with _deterministic_threads(cfg.train):
            return fn(cfg, *args, **kwargs)

    return wrapper


@_in_deterministic_threads
def train_run(
    cfg: RunConfig,
    run_dir: Path,
    params: dict[str, Any] | None = None,
    data: Dataset | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunSummary:
    """Train one run (resuming from run_dir/checkpoint.pt if there is one); summary.json last.

    `on_progress(epochs_done, epochs)` after each epoch; `should_stop()` before each step, and
    when it returns True the run raises RunInterrupted (the last checkpoint stays).
    """
    clock = Clock()
    tc = cfg.train
    device = resolve_device(tc.device)
    # before anything is written: a data file a user must fix (DataError) leaves no half run
    data = (data.to(device) if data is not None else load_dataset(cfg.data, device)).ready()
    rec = RunRecorder(cfg, run_dir, clock)  # writes config.yaml
    set_determinism(tc.seed, tc.deterministic)

    model = build_model(cfg.model, data.input_shape, data.num_outputs, tc.seed)
    init_weights(model, tc.seed)
    model.to(device).train()
    conv = cfg.model.kind in ("cnn", "resnet")  # images channels_last (step.image_layout)
    opt = make_optimizer(model.parameters(), tc)
    order = torch.Generator().manual_seed(tc.seed)  # data order, the same for every norm variant
    n_train = len(data.x_train)
    if n_train % tc.batch_size == 1 and n_train > 1:
        log.info(
            "dropping the final batch of 1 example each epoch (BN needs > 1 value per channel)"
        )
    rec.resume(model, opt, order, device)
    prog = rec.prog
    per_epoch = steps_per_epoch(n_train, tc.batch_size)
    rec.epochs = n_epochs = tc.epochs_for(per_epoch)
    rec.open()
    # measure.shift_probe / ics / bn_noise; no-ops when unset
    probes = RunProbes(cfg, model, data, rec.run_dir)

    def forward(xb: Tensor) -> Tensor:
        return model(xb).unsqueeze(0)  # (1, B, outputs): evaluate_splits takes S models

    subset = train_subset(data, cfg.measure.eval_subset)  # None: whole sets every time

    def record(epoch: float, last: bool = False) -> None:
        """An evaluation: of the whole sets (metrics.csv), or with measure.eval_subset first an
        estimate on the subset (estimates.csv), and the whole sets only if the recorder asks."""
        lr, evaluation = opt.param_groups[0]["lr"], None
        with clock.evaluating():
            if cfg.model.eval_stats == "recalibrate":  # running estimates from the training set
                recalibrate(model, data.x_train, tc.eval_batch_size, data.prepare)
            full = rec.full_due(last)
            if not full:
                bs = tc.eval_batch_size
                full = estimate_on_subset(forward, model, data, subset, bs, {0: rec}, epoch, lr)[0]
            if full:
                (evaluation,) = evaluate_splits(forward, model, data, tc.eval_batch_size)
        if evaluation is not None:
            rec.record(epoch, lr, evaluation)

    # Divergence check (speed, issue 7): reading the loss back is free on the CPU but stalls
    # an accelerator's queue, so there the losses stay on the device and are read every
    # `check_every` steps and at each evaluation; diverged_step is still the exact first step.
    check_every = divergence_check_every(device)
    pending: list[Tensor] = []  # losses of the steps not yet checked, oldest first

    def check_pending() -> bool:
        """Check the unchecked steps' losses (one read-back); True if one diverged."""
        if not pending:
            return False
        losses = (
            [float(pending[0])]
            if len(pending) == 1
            else torch.stack(pending).float().cpu().tolist()
        )
        pending.clear()
        return rec.check_losses(losses) is not None

    report_first_step = bool(os.environ.get(FIRST_STEP_ENV))
    try:
        if not prog.rows:
            record(0)
        if on_progress and prog.epoch:
            on_progress(prog.epoch, n_epochs)
        for epoch in range(prog.epoch, n_epochs):
            for idx in batches_of_epoch(n_train, tc.batch_size, order):
                if tc.budget_spent(prog.step):  # a step budget ends mid-epoch
                    break
                if should_stop is not None and should_stop():
                    raise RunInterrupted(f"run {rec.run_id} stopped at step {prog.step}")
                with clock.training():
                    xb, yb = image_layout(data.prepare(data.x_train[idx]), conv), data.y_train[idx]
                    loss = loss_of(model(xb), yb, data.binary)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    probes.before_step(prog.step + 1)  # ICS keeps G, layers >= l before the update
                    opt.step()
                    rec.stepped()
                if report_first_step:  # `make bench`'s start-up row: launch -> first step
                    report_first_step = False
                    print(f"{FIRST_STEP_ENV} {time.time():.6f}", file=sys.stderr, flush=True)
                probes.after_step(
                    prog.step, lambda m, xb=xb, yb=yb: loss_and_correct(m(xb), yb, data.binary)[0]
                )  # not timed
                pending.append(loss.detach())
                evaluate_now = tc.eval_every_steps and prog.step % tc.eval_every_steps == 0
                if (len(pending) >= check_every or evaluate_now) and check_pending():
                    break
                if evaluate_now and prog.step % per_epoch:
                    record(fractional_epoch(epoch, prog.step, per_epoch))
            if rec.diverged or check_pending():  # one last evaluation, where it stopped
                record(fractional_epoch(epoch, prog.step, per_epoch), last=True)
                break
            if tc.budget_spent(prog.step) and prog.step % per_epoch:
                # the budget's last step
                record(fractional_epoch(epoch, prog.step, per_epoch), last=True)
                break
            record(epoch + 1, last=epoch + 1 == n_epochs or tc.budget_spent(prog.step))
            rec.epoch_done(model, opt, order)
            if on_progress:
                on_progress(prog.epoch, n_epochs)
    finally:
        rec.close()
    probes.close()  # writes probes.csv and bn_noise.csv
    return rec.finish(device, params)

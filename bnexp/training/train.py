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
The regime is config: data.augment (bnexp.training.augment), train.lr_schedule
(bnexp.training.schedule), weight decay with or without BN's gamma/beta (step.make_optimizer);
see docs/regime.md. The loop's skeleton, shared with vectorize.train_seeds, is training.loop.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bnexp.config import RunConfig, TrainConfig
from bnexp.data import Dataset, load_dataset
from bnexp.nn.models import build_model, init_weights
from bnexp.results import RunSummary
from bnexp.training.augment import augment, check_images
from bnexp.training.device import resolve_device
from bnexp.training.loop import end_of_epoch, recording
from bnexp.training.probes import RunProbes
from bnexp.training.recorder import (
    Clock,
    RunInterrupted,
    RunRecorder,
    fractional_epoch,
    target_reached,
)
from bnexp.training.schedule import LrSchedule
from bnexp.training.step import (
    batches_of_epoch,
    image_layout,
    loss_and_correct,
    loss_of,
    make_optimizer,
    norm_parameter_names,
    set_determinism,
    steps_per_epoch,
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
    check_images(cfg.data.augment, data)
    rec = RunRecorder(cfg, run_dir, clock)  # writes config.yaml
    set_determinism(tc.seed, tc.deterministic)

    model = build_model(cfg.model, data.input_shape, data.num_outputs, tc.seed)
    init_weights(model, tc.seed)
    model.to(device).train()
    opt = make_optimizer(model.named_parameters(), tc, norm_parameter_names(model))
    order = torch.Generator().manual_seed(tc.seed)  # data order, the same for every norm variant
    n_train = len(data.x_train)
    if n_train % tc.batch_size == 1 and n_train > 1:
        log.info(
            "dropping the final batch of 1 example each epoch (BN needs > 1 value per channel)"
        )
    rec.resume(model, opt, order, device)
    rec.epochs = tc.epochs_for(steps_per_epoch(n_train, tc.batch_size))
    rec.open()
    # measure.shift_probe / ics / bn_noise; no-ops when unset
    probes = RunProbes(cfg, model, data, rec.run_dir)
    loop = _OneRun(cfg, data, model, opt, order, rec, probes, device)
    try:
        loop.epochs(on_progress, should_stop)
    finally:
        rec.close()
    probes.close()  # writes probes.csv and bn_noise.csv
    return rec.finish(device, params)


class _OneRun:
    """train_run's loop over epochs and steps, for one model and its recorder."""

    def __init__(
        self,
        cfg: RunConfig,
        data: Dataset,
        model: nn.Module,
        opt: Any,
        order: torch.Generator,
        rec: RunRecorder,
        probes: RunProbes,
        device: torch.device,
    ):
        self.cfg, self.tc, self.data, self.model, self.opt = cfg, cfg.train, data, model, opt
        self.order, self.rec, self.probes = order, rec, probes
        self.conv = cfg.model.kind in ("cnn", "resnet")  # images channels_last (step.image_layout)
        self.per_epoch = steps_per_epoch(len(data.x_train), cfg.train.batch_size)
        self.schedule = LrSchedule(cfg.train, self.per_epoch)
        self.schedule.apply(opt, rec.prog.step)  # the next step's lr (the first, or a resume's)

        def forward(xb: Tensor) -> Tensor:
            return model(xb).unsqueeze(0)  # (1, B, outputs): the loop's evaluations take S models

        to_all = recording(cfg, data, forward, model, [rec], rec.clock, opt)
        self.record = lambda epoch, last=False: to_all(epoch, [0], last)
        self.check = _DeferredLossCheck(rec, divergence_check_every(device))

    def epochs(
        self,
        on_progress: Callable[[int, int], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        prog, n_epochs, per_epoch = self.rec.prog, self.rec.epochs, self.per_epoch
        if not prog.rows:
            self.record(0)
        if on_progress and prog.epoch:
            on_progress(prog.epoch, n_epochs)
        for epoch in range(prog.epoch, n_epochs):
            self.steps_of(epoch, should_stop)
            if self.rec.diverged or self.check.check():  # one last evaluation, where it stopped
                self.record(fractional_epoch(epoch, prog.step, per_epoch), last=True)
                break
            if end_of_epoch(self.cfg, epoch, prog.step, per_epoch, n_epochs, self.record):
                break
            self.rec.epoch_done(self.model, self.opt, self.order)
            if on_progress:
                on_progress(prog.epoch, n_epochs)

    def steps_of(self, epoch: int, should_stop: Callable[[], bool] | None) -> None:
        """The optimizer steps of one epoch, until it ends, the step budget is spent or a loss
        diverges; with train.eval_every_steps, evaluations between."""
        tc, prog, data, probes = self.tc, self.rec.prog, self.data, self.probes
        for idx in batches_of_epoch(len(data.x_train), tc.batch_size, self.order):
            if tc.budget_spent(prog.step):  # a step budget ends mid-epoch
                break
            if should_stop is not None and should_stop():
                raise RunInterrupted(f"run {self.rec.run_id} stopped at step {prog.step}")
            xb, yb, loss = self.step(idx)
            probes.after_step(
                prog.step, lambda m, xb=xb, yb=yb: loss_and_correct(m(xb), yb, data.binary)[0]
            )  # not timed
            evaluate_now = tc.eval_every_steps and prog.step % tc.eval_every_steps == 0
            if self.check.add(loss, evaluate_now):
                break
            if evaluate_now and prog.step % self.per_epoch:
                self.record(fractional_epoch(epoch, prog.step, self.per_epoch))

    def step(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One optimizer step on the examples idx: the batch (x, y) and its loss (on the device)."""
        data, prog = self.data, self.rec.prog
        with self.rec.clock.training():
            xb = augment(self.cfg.data.augment, data.prepare(data.x_train[idx]), [self.order])
            xb, yb = image_layout(xb, self.conv), data.y_train[idx]
            loss = loss_of(self.model(xb), yb, data.binary)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.probes.before_step(prog.step + 1)  # ICS keeps G, layers >= l before the update
            self.schedule.apply(self.opt, prog.step)
            self.opt.step()
            self.rec.stepped()
        return xb, yb, loss


class _DeferredLossCheck:
    """The divergence check of one run. Reading the loss back is free on the CPU but stalls an
    accelerator's queue, so there the losses stay on the device and are read every
    `check_every` steps and at each evaluation; diverged_step is still the exact first step."""

    def __init__(self, rec: RunRecorder, check_every: int):
        self.rec, self.check_every = rec, check_every
        self.pending: list[Tensor] = []  # losses of the steps not yet checked, oldest first

    def add(self, loss: Tensor, evaluate_now: bool) -> bool:
        """The latest step's loss; True if a check is due now and finds a diverged step."""
        self.pending.append(loss.detach())
        return (len(self.pending) >= self.check_every or evaluate_now) and self.check()

    def check(self) -> bool:
        """Check the unchecked steps' losses (one read-back); True if one diverged."""
        pending = self.pending
        if not pending:
            return False
        losses = (
            [float(pending[0])]
            if len(pending) == 1
            else torch.stack(pending).float().cpu().tolist()
        )
        pending.clear()
        return self.rec.check_losses(losses) is not None

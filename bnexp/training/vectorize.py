"""Seeds trained together: the runs of one sweep cell that differ only in `train.seed`, as one
batched model (bnexp.training.stacked: batched matmuls for MLPs, torch.func.vmap for the rest).

Each seed keeps what a separate run has: its own initial weights (`init_weights(model, seed)`),
its own data order (a generator seeded by its seed), its own BN running statistics (buffers
stacked along a leading seed dim S and updated in place). The stacked parameters are ordinary
leaf tensors of shape (S, ...); the loss is the sum of the per-seed mean losses, so each seed's
slice of the gradient is its own run's gradient, and the optimizers used here (SGD, Adam) are
elementwise, so one optimizer on the stacked tensors takes every seed's own step.
Each run's folder is written by its own `RunRecorder`, the one `train.train_run` uses
(config.yaml, metrics.csv, timing.csv, summary.json last); the times in them are those of the
whole batch of seeds (`seeds_together` in summary.json says how many shared them).

BN cells are vectorized too (norm: torch and custom): each seed normalizes with its own batch
statistics and updates its own slice of the stacked running estimates (the BN layer is called
with the seeds folded into its channels, by hand for MLPs and by the vmap rules otherwise).
A batched kernel rounds differently from the unbatched one in the last bit, so a seed trained
here is not bit-identical to its separate run: it matches it within 1e-5 for the first steps
and is statistically the same run after that (tests/training/test_vectorize_bn.py checks both).
Cells with BN noise or recalibrated evaluation statistics fall back to separate runs
(`why_not_vectorized` says why).

Small models are bound by per-step overhead (Python, dispatch, optimizer), not arithmetic, so
S seeds in one step cost little more than one: that is where the speed comes from. Models
bound by arithmetic gain less (the cat/non-cat MLP's 12288 -> 20 first layer: see
benchmarks/README.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from bnexp.config import PlannedRun, RunConfig
from bnexp.data import Dataset, load_dataset
from bnexp.nn.models import build_model, init_weights
from bnexp.results import RunSummary
from bnexp.training.augment import augment, check_images
from bnexp.training.device import resolve_device
from bnexp.training.loop import end_of_epoch, recording
from bnexp.training.recorder import Clock, RunInterrupted, RunRecorder, fractional_epoch
from bnexp.training.schedule import LrSchedule
from bnexp.training.stacked import StackedMLP, Vmapped, stack
from bnexp.training.step import (
    batches_of_epoch,
    image_layout,
    make_optimizer,
    norm_parameter_names,
    seed_losses,
    steps_per_epoch,
)

log = logging.getLogger("bnexp")


def _without_seed(cfg: RunConfig) -> dict:
    return cfg.model_dump(mode="json", exclude={"name": True, "train": {"seed", "vectorize_seeds"}})


def why_not_vectorized(cfgs: list[RunConfig]) -> str | None:
    """None when these runs can train as one batched model, else the reason they cannot."""
    if len(cfgs) < 2:
        return "a single seed"
    first = _without_seed(cfgs[0])
    if any(_without_seed(c) != first for c in cfgs[1:]):
        return "the runs differ in more than train.seed"
    if len({c.train.seed for c in cfgs}) != len(cfgs):
        return "two runs share a train.seed"
    measure = cfgs[0].measure
    if measure.shift_probe or measure.ics or measure.bn_noise:
        return "measure.shift_probe / ics / bn_noise probe one model at a time"
    model = cfgs[0].model
    if model.factory is not None:
        # measured: a user's conv network batched by vmap (NCHW) rounds differently from its
        # separate runs (1e-7 in the loss), and "equal to a separate run" is the promise
        return "model.factory: a user's network trains one seed at a time"
    if model.bn_noise is not None:
        # the noise stream lives on the module (a generator per layer, seeded per run); the
        # stacked model calls one architecture, so the seeds would share one stream
        return "model.bn_noise draws from one generator per layer, not one per seed"
    if model.eval_stats == "recalibrate":
        return "model.eval_stats: recalibrate re-estimates one model at a time"
    return None


def group_by_seed(runs: list[PlannedRun]) -> list[list[PlannedRun]]:
    """Runs in plan order, those differing only in train.seed gathered into one group."""
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        key = yaml.safe_dump(_without_seed(run.config), sort_keys=True)
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def train_seeds(
    cfgs: list[RunConfig],
    run_dirs: list[Path],
    params_list: list[dict[str, Any]] | None = None,
    data: Dataset | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[RunSummary]:
    """Train runs that differ only in train.seed as one batched model; write each run's files.

    Raises ValueError (with the reason) when they cannot be vectorized: callers check
    `why_not_vectorized` first and fall back to `train_run`. `should_stop()` is asked before
    each step, as train_run does; when it returns True this raises RunInterrupted (seeds trained
    together keep no checkpoint: the group starts over when it runs again).
    """
    reason = why_not_vectorized(cfgs)
    if reason is not None:
        raise ValueError(f"cannot train these runs together: {reason}")
    clock = Clock()  # one for the group: the seeds share every second
    params_list = params_list or [{} for _ in cfgs]
    tc = cfgs[0].train
    device = resolve_device(tc.device)
    # before anything is written: a data file a user must fix (DataError) leaves no half run
    data = (data or load_dataset(cfgs[0].data)).to(device).ready()
    check_images(cfgs[0].data.augment, data)
    recs = [RunRecorder(c, d, clock) for c, d in zip(cfgs, run_dirs, strict=True)]

    models = []
    for cfg in cfgs:
        m = build_model(cfg.model, data.input_shape, data.num_outputs, cfg.train.seed)
        init_weights(m, cfg.train.seed)
        models.append(m.to(device).train())
    net = stack(models)
    del models
    opt = make_optimizer(net.params.items(), tc, norm_parameter_names(net.base))
    n_epochs = tc.epochs_for(steps_per_epoch(len(data.x_train), tc.batch_size))
    for rec in recs:
        rec.epochs = n_epochs
        rec.open()
    loop = _Seeds(cfgs, data, net, opt, recs, device)
    try:
        loop.epochs(on_progress, should_stop)
    finally:
        for rec in recs:
            rec.close()
    return [
        rec.finish(device, params, seeds_together=len(cfgs))
        for rec, params in zip(recs, params_list, strict=True)
    ]


class _Seeds:
    """train_seeds' loop over epochs and steps, for S stacked models and their recorders."""

    def __init__(
        self,
        cfgs: list[RunConfig],
        data: Dataset,
        net: Vmapped | StackedMLP,
        opt: Any,
        recs: list[RunRecorder],
        device: torch.device,
    ):
        self.cfg, self.tc, self.data, self.net, self.opt = cfgs[0], cfgs[0].train, data, net, opt
        self.recs, self.device = recs, device
        self.orders = [torch.Generator().manual_seed(c.train.seed) for c in cfgs]  # data orders
        self.per_epoch = steps_per_epoch(len(data.x_train), self.tc.batch_size)
        self.schedule = LrSchedule(self.tc, self.per_epoch)
        self.schedule.apply(opt, 0)  # the first step's lr

        def forward(xb: Tensor) -> Tensor:
            return net(xb, shared_input=True)

        self.record = recording(self.cfg, data, forward, net.base, recs, recs[0].clock, opt)
        # seeds not diverged; a diverged seed's later steps are computed and ignored, as if stopped
        self.active = list(range(len(cfgs)))
        self.step = 0

    def epochs(
        self,
        on_progress: Callable[[int, int], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        n_epochs = self.recs[0].epochs

        def record(epoch: float, last: bool = False) -> None:  # the seeds still training
            self.record(epoch, self.active, last)

        self.record(0, self.active)
        for epoch in range(n_epochs):
            self.steps_of(epoch, should_stop)
            if not self.active:
                break
            if end_of_epoch(self.cfg, epoch, self.step, self.per_epoch, n_epochs, record):
                break
            for s in self.active:
                self.recs[s].epoch_done()
            if on_progress:
                on_progress(epoch + 1, n_epochs)

    def steps_of(self, epoch: int, should_stop: Callable[[], bool] | None) -> None:
        """The optimizer steps of one epoch, until it ends, the step budget is spent or every
        seed has diverged; with train.eval_every_steps, evaluations between."""
        tc, recs, per_epoch = self.tc, self.recs, self.per_epoch
        n_train = len(self.data.x_train)
        chunks = [batches_of_epoch(n_train, tc.batch_size, g) for g in self.orders]
        for i in range(per_epoch):
            if tc.budget_spent(self.step):  # a step budget ends mid-epoch
                break
            if should_stop is not None and should_stop():
                ids = ", ".join(r.run_id for r in recs)
                raise RunInterrupted(f"runs {ids} (trained together) stopped at step {self.step}")
            with recs[0].clock.training():
                losses = self.train_step(torch.stack([c[i] for c in chunks]).to(self.device))
            self.step += 1
            for s in self.active:
                recs[s].stepped()
            values = losses.detach().tolist()  # one host read per step, as train_run on CPU
            newly = [s for s in self.active if recs[s].check_losses([values[s]]) is not None]
            if newly:  # what a separate run does: stop, evaluate where it stopped, record
                self.active = [s for s in self.active if s not in newly]
                self.record(fractional_epoch(epoch, self.step, per_epoch), newly, last=True)
                if not self.active:
                    break
            if tc.eval_every_steps and self.step % tc.eval_every_steps == 0:
                if self.step % per_epoch:
                    self.record(fractional_epoch(epoch, self.step, per_epoch), self.active)

    def train_step(self, idx: Tensor) -> Tensor:
        """One optimizer step of every seed on its own batch, idx (S, B) row indices: (S,) the
        seeds' mean losses."""
        data, opt = self.data, self.opt
        # prepare sees (S*B, ...) as one batch
        conv = self.cfg.model.kind in ("cnn", "resnet")
        xb = augment(
            self.cfg.data.augment, data.prepare(data.x_train[idx.reshape(-1)]), self.orders
        )
        xb = image_layout(xb, conv)
        xb, yb = xb.reshape(*idx.shape, *xb.shape[1:]), data.y_train[idx]
        losses = seed_losses(self.net(xb), yb, data.binary)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # seeds are independent: each its own gradient
        self.schedule.apply(opt, self.step)
        opt.step()
        return losses

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
from bnexp.training.device import resolve_device
from bnexp.training.recorder import Clock, RunInterrupted, RunRecorder, fractional_epoch
from bnexp.training.stacked import stack
from bnexp.training.step import (
    batches_of_epoch,
    estimate_on_subset,
    evaluate_splits,
    image_layout,
    make_optimizer,
    seed_losses,
    steps_per_epoch,
    train_subset,
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
    S = len(cfgs)
    params_list = params_list or [{} for _ in cfgs]
    cfg0, tc = cfgs[0], cfgs[0].train
    device = resolve_device(tc.device)
    # before anything is written: a data file a user must fix (DataError) leaves no half run
    data = (data or load_dataset(cfg0.data)).to(device).ready()
    recs = [RunRecorder(c, d, clock) for c, d in zip(cfgs, run_dirs, strict=True)]

    models = []
    for cfg in cfgs:
        m = build_model(cfg.model, data.input_shape, data.num_outputs, cfg.train.seed)
        init_weights(m, cfg.train.seed)
        models.append(m.to(device).train())
    net = stack(models)
    del models
    opt = make_optimizer(net.params.values(), tc)
    orders = [torch.Generator().manual_seed(c.train.seed) for c in cfgs]  # each seed's data order
    n_train = len(data.x_train)
    per_epoch = steps_per_epoch(n_train, tc.batch_size)
    n_epochs = tc.epochs_for(per_epoch)
    for rec in recs:
        rec.epochs = n_epochs
        rec.open()

    def forward(xb: Tensor) -> Tensor:
        return net(xb, shared_input=True)

    subset = train_subset(data, cfg0.measure.eval_subset)  # None: whole sets every time

    def record(epoch: float, seeds: list[int], last: bool = False) -> None:
        """As train_run's record, for `seeds`: the whole sets for those whose recorder asks."""
        lr = opt.param_groups[0]["lr"]
        with clock.evaluating():
            due = [s for s in seeds if recs[s].full_due(last)]
            rest = [s for s in seeds if s not in due]
            if rest:  # a subset estimate each; the whole sets for those near their target
                asked = {s: recs[s] for s in rest}
                bs = tc.eval_batch_size
                est = estimate_on_subset(forward, net.base, data, subset, bs, asked, epoch, lr)
                due += [s for s in rest if est[s]]
            evaluations = (
                evaluate_splits(forward, net.base, data, tc.eval_batch_size) if due else []
            )
        for s in sorted(due):
            recs[s].record(epoch, lr, evaluations[s])

    def batch_losses(idx: Tensor) -> Tensor:
        """(S,) mean loss of each seed on its own batch; idx: (S, B) row indices."""
        # prepare sees (S*B, ...) as one batch
        conv = cfg0.model.kind in ("cnn", "resnet")
        xb = image_layout(data.prepare(data.x_train[idx.reshape(-1)]), conv)
        xb, yb = xb.reshape(S, -1, *xb.shape[1:]), data.y_train[idx]
        logits = net(xb)
        return seed_losses(logits, yb, data.binary)

    # seeds not diverged; a diverged seed's later steps are computed and ignored, as if stopped
    active = list(range(S))
    step = 0
    try:
        record(0, active)
        for epoch in range(n_epochs):
            chunks = [batches_of_epoch(n_train, tc.batch_size, g) for g in orders]
            for i in range(per_epoch):
                if tc.budget_spent(step):  # a step budget ends mid-epoch
                    break
                if should_stop is not None and should_stop():
                    ids = ", ".join(r.run_id for r in recs)
                    raise RunInterrupted(f"runs {ids} (trained together) stopped at step {step}")
                with clock.training():
                    idx = torch.stack([c[i] for c in chunks]).to(device)
                    losses = batch_losses(idx)
                    opt.zero_grad(set_to_none=True)
                    losses.sum().backward()  # seeds are independent: each its own gradient
                    opt.step()
                step += 1
                for s in active:
                    recs[s].stepped()
                values = losses.detach().tolist()  # one host read per step, as train_run on CPU
                newly = [s for s in active if recs[s].check_losses([values[s]]) is not None]
                if newly:  # what a separate run does: stop, evaluate where it stopped, record
                    active = [s for s in active if s not in newly]
                    record(fractional_epoch(epoch, step, per_epoch), newly, last=True)
                    if not active:
                        break
                if tc.eval_every_steps and step % tc.eval_every_steps == 0 and step % per_epoch:
                    record(fractional_epoch(epoch, step, per_epoch), active)
            if not active:
                break
            if tc.budget_spent(step) and step % per_epoch:
                # the budget's last step
                record(fractional_epoch(epoch, step, per_epoch), active, last=True)
                break
            record(epoch + 1, active, last=epoch + 1 == n_epochs or tc.budget_spent(step))
            for s in active:
                recs[s].epoch_done()
            if on_progress:
                on_progress(epoch + 1, n_epochs)
    finally:
        for rec in recs:
            rec.close()
    return [
        rec.finish(device, params, seeds_together=S)
        for rec, params in zip(recs, params_list, strict=True)
    ]

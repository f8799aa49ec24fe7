"""Seeds trained together: the runs of one sweep cell that differ only in `train.seed`, as one
batched model (`torch.func`: stack_module_state, functional_call, vmap).

Each seed keeps what a separate run has: its own initial weights (`init_weights(model, seed)`),
its own data order (a generator seeded by its seed), its own BN running statistics (buffers
stacked along a leading seed dim S and updated in place under vmap). The stacked parameters
are ordinary leaf tensors of shape (S, ...); the loss is the sum of the per-seed mean losses, so
each seed's slice of the gradient is its own run's gradient, and the optimizers used here (SGD,
Adam) are elementwise, so one optimizer on the stacked tensors takes every seed's own step.
Each run's folder gets config.yaml, metrics.csv, timing.csv and (last) summary.json exactly as
`train.train_run` writes them; the times in them are those of the whole batch of seeds
(`seeds_together` in summary.json says how many shared them).

Only models without BN are vectorized: BN's batched kernels round differently from the
unbatched ones (see `why_not_vectorized`); other cells fall back to separate runs.

Small models are bound by per-step overhead (Python, dispatch, optimizer), not arithmetic, so
S seeds in one step cost little more than one: that is where the speed comes from.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from bnexp.config import PlannedRun, RunConfig
from bnexp.data import Dataset, load_dataset
from bnexp.io import atomic_write_json, atomic_write_text
from bnexp.nn.models import build_model, init_weights
from bnexp.results import METRIC_COLUMNS, TIMING_COLUMNS, RunSummary
from bnexp.run.device import peak_memory_mb, resolve_device
from bnexp.run.train import (
    _CsvLog,
    batches_of_epoch,
    is_diverged,
    loss_and_correct,
    loss_of,
    make_optimizer,
    target_reached,
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
    if cfgs[0].model.norm != "none":
        # measured: BN's batched kernels (torch's batching rule, and our layer's reductions under
        # vmap) round differently from the unbatched ones in the last bit; BN training amplifies
        # that to ~1e-4 in a few epochs, past the 1e-5 a vectorized run must match a separate one
        return (
            f"norm: {cfgs[0].model.norm} under vmap does not reproduce a separate run within 1e-5"
        )
    return None


def group_by_seed(runs: list[PlannedRun]) -> list[list[PlannedRun]]:
    """Runs in plan order, those differing only in train.seed gathered into one group."""
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        key = yaml.safe_dump(_without_seed(run.config), sort_keys=True)
        groups.setdefault(key, []).append(run)
    return list(groups.values())


class _Stacked:
    """S copies of one architecture as stacked tensors, called through vmap."""

    def __init__(self, models: list[torch.nn.Module]):
        self.params, self.buffers = stack_module_state(models)  # name -> (S, ...)
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture only

        def one(params: dict, buffers: dict, x: Tensor) -> Tensor:
            return functional_call(self.base, (params, buffers), (x,))

        self.train_fn = vmap(one, in_dims=(0, 0, 0))  # x: (S, B, ...), every seed its own batch
        self.eval_fn = vmap(one, in_dims=(0, 0, None))  # x: (B, ...), the same data for all

    def __call__(self, x: Tensor, shared_input: bool = False) -> Tensor:
        fn = self.eval_fn if shared_input else self.train_fn
        return fn(self.params, self.buffers, x)


def train_seeds(
    cfgs: list[RunConfig],
    run_dirs: list[Path],
    params_list: list[dict[str, Any]] | None = None,
    data: Dataset | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[RunSummary]:
    """Train runs that differ only in train.seed as one batched model; write each run's files.

    Raises ValueError (with the reason) when they cannot be vectorized: callers check
    `why_not_vectorized` first and fall back to `train_run`.
    """
    reason = why_not_vectorized(cfgs)
    if reason is not None:
        raise ValueError(f"cannot train these runs together: {reason}")
    t_start = time.perf_counter()
    S = len(cfgs)
    run_dirs = [Path(d) for d in run_dirs]
    params_list = params_list or [{} for _ in cfgs]
    for cfg, d in zip(cfgs, run_dirs, strict=True):
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            d / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
        )
    cfg0, tc = cfgs[0], cfgs[0].train
    device = resolve_device(tc.device)
    data = (data or load_dataset(cfg0.data)).to(device)

    models = []
    for cfg in cfgs:
        m = build_model(cfg.model, data.input_shape, data.num_outputs)
        init_weights(m, cfg.train.seed)
        models.append(m.to(device).train())
    net = _Stacked(models)
    del models
    opt = make_optimizer(net.params.values(), tc)
    orders = [torch.Generator().manual_seed(c.train.seed) for c in cfgs]  # each seed's data order
    n_train = len(data.x_train)
    steps_per_epoch = len(
        batches_of_epoch(n_train, tc.batch_size, torch.Generator().manual_seed(0))
    )
    target = cfg0.measure.target
    rows: list[list[dict]] = [[] for _ in range(S)]  # each seed's metrics.csv rows
    times: list[list[dict]] = [[] for _ in range(S)]  # each seed's timing.csv rows
    writers = [_CsvLog(d / "metrics.csv", METRIC_COLUMNS, []) for d in run_dirs]
    timers = [_CsvLog(d / "timing.csv", TIMING_COLUMNS, []) for d in run_dirs]
    step, train_s, eval_s = 0, 0.0, 0.0
    active = [True] * S  # False once a seed diverged: its later steps are computed and ignored
    reached: list[dict | None] = [None] * S
    diverged_step: list[int | None] = [None] * S
    last: list[dict] = [{} for _ in range(S)]
    best = [0.0] * S

    def evaluate(x_all: Tensor, y_all: Tensor) -> tuple[list[float], list[float]]:
        """Per seed (mean loss, accuracy), batched and summed as train.evaluate does."""
        net.base.eval()
        loss_sum, correct = [0.0] * S, [0] * S
        with torch.inference_mode():
            for i in range(0, len(x_all), tc.eval_batch_size):
                xb, yb = (
                    data.prepare(x_all[i : i + tc.eval_batch_size]),
                    y_all[i : i + tc.eval_batch_size],
                )
                logits = net(xb, shared_input=True)  # (S, B, outputs)
                for s in range(S):
                    loss, c = loss_and_correct(logits[s], yb, data.binary)
                    loss_sum[s] += float(loss) * len(yb)
                    correct[s] += int(c)
        net.base.train()
        n = len(x_all)
        return [v / n for v in loss_sum], [c / n for c in correct]

    def record(epoch: float, seeds: list[int]) -> None:
        nonlocal eval_s
        t0 = time.perf_counter()
        train_loss, train_acc = evaluate(data.x_train, data.y_train)
        test_loss, test_acc = evaluate(data.x_test, data.y_test)
        eval_s += time.perf_counter() - t0
        for s in seeds:
            row = {
                "epoch": round(epoch, 4),
                "step": step,
                "lr": opt.param_groups[0]["lr"],
                "train_loss": train_loss[s],
                "train_acc": train_acc[s],
                "test_loss": test_loss[s],
                "test_acc": test_acc[s],
            }
            timing = {
                "epoch": row["epoch"],
                "step": step,
                "wall_s": round(time.perf_counter() - t_start, 4),
                "train_s": round(train_s, 4),
                "eval_s": round(eval_s, 4),
            }
            rows[s].append(row)
            times[s].append(timing)
            writers[s].write(row)
            timers[s].write(timing)
            last[s] = row
            best[s] = max(best[s], test_acc[s])
            if target is not None and reached[s] is None and target_reached(target, row):
                reached[s] = {"steps": step, "epochs": round(epoch, 4), "time_s": train_s}

    def batch_losses(idx: Tensor) -> Tensor:
        """(S,) mean loss of each seed on its own batch; idx: (S, B) row indices."""
        xb = data.prepare(data.x_train[idx.reshape(-1)])  # prepare sees (S*B, ...) as one batch
        xb, yb = xb.reshape(S, -1, *xb.shape[1:]), data.y_train[idx]
        logits = net(xb)
        return vmap(lambda z, y: loss_of(z, y, data.binary))(logits, yb)

    try:
        record(0, list(range(S)))
        for epoch in range(tc.epochs):
            chunks = [batches_of_epoch(n_train, tc.batch_size, g) for g in orders]
            for i in range(steps_per_epoch):
                t0 = time.perf_counter()
                idx = torch.stack([c[i] for c in chunks]).to(device)
                losses = batch_losses(idx)
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()  # seeds are independent: each gets its own gradient
                opt.step()
                step += 1
                train_s += time.perf_counter() - t0
                values = losses.detach().tolist()  # one host read per step, as train_run on the CPU
                if any(is_diverged(v, tc.diverge_loss) for v in values):
                    newly = [
                        s for s in range(S) if active[s] and is_diverged(values[s], tc.diverge_loss)
                    ]
                    if newly:  # what a separate run does: stop, evaluate, record
                        for s in newly:
                            diverged_step[s], active[s] = step, False
                        record(
                            epoch + (step - epoch * steps_per_epoch) / steps_per_epoch, newly
                        )  # where it stopped
                        if not any(active):
                            break
                if (
                    tc.eval_every_steps
                    and step % tc.eval_every_steps == 0
                    and step % steps_per_epoch
                ):
                    record(
                        epoch + (step % steps_per_epoch) / steps_per_epoch,
                        [s for s in range(S) if active[s]],
                    )
            if not any(active):
                break
            record(epoch + 1, [s for s in range(S) if active[s]])
            if on_progress:
                on_progress(epoch + 1, tc.epochs)
    finally:
        for w in writers + timers:
            w.close()
    for s in range(S):  # complete files, rewritten whole and atomically, as train_run does
        writers[s].finish(rows[s])
        timers[s].finish(times[s])

    wall_s = time.perf_counter() - t_start
    summaries = []
    for s, (cfg, d) in enumerate(zip(cfgs, run_dirs, strict=True)):
        summary = RunSummary.from_run(
            cfg,
            last[s],
            reached[s],
            best[s],
            diverged_step[s],
            diverged_step[s] or step,
            wall_s,
            train_s,
            eval_s,
            str(device),
            params_list[s],
            seeds_together=S,
            peak_rss_mb=peak_memory_mb(device),
        )
        atomic_write_json(d / "summary.json", asdict(summary))
        summaries.append(summary)
    return summaries

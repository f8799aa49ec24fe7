"""One run: `train_run(cfg, run_dir) -> RunSummary`.

The data live as tensors on the run's device; each epoch draws a seeded permutation and walks it
in mini-batches (no DataLoader on the hot path). After every epoch (and every
`train.eval_every_steps` steps, if set) the whole train and test sets are evaluated in eval mode.

run_dir/
  config.yaml    the resolved config
  metrics.csv    one row per evaluation. A pure function of the config: with train.deterministic
                 the same config gives the same bytes, which is why wall times are not in it but in
  timing.csv     epoch, step, wall_s, train_s, eval_s per evaluation (machine- and load-dependent)
  checkpoint.pt  every train.checkpoint_every epochs while the run is in progress, removed at the end
  summary.json   written last, atomically: its presence means the run is complete

metrics.csv and timing.csv grow row by row (flushed, so they can be watched) and are rewritten
whole and atomically before summary.json. A run that finds checkpoint.pt resumes from it: model,
optimizer, data-order generator, global RNGs, step and the rows so far are restored, so it ends
with the same metrics.csv bytes as a run that was never interrupted.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from bnexp.config import RunConfig, TargetConfig, TrainConfig, run_id
from bnexp.data import Dataset, load_dataset
from bnexp.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from bnexp.nn.models import build_model, init_weights
from bnexp.nn.norm import recalibrate
from bnexp.results import CHECKPOINT, METRIC_COLUMNS, TIMING_COLUMNS, RunSummary
from bnexp.run.device import peak_memory_mb, resolve_device
from bnexp.run.probes import RunProbes

log = logging.getLogger("bnexp")


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def divergence_check_every(device: torch.device) -> int:
    """Steps between divergence checks: every step on the CPU (free), every 32 elsewhere."""
    return 1 if device.type == "cpu" else 32


def loss_of(logits: Tensor, y: Tensor, binary: bool) -> Tensor:
    """Mean loss only (the training step needs no accuracy: no argmax per step)."""
    if binary:
        z = logits.squeeze(1)
        return nn.functional.binary_cross_entropy_with_logits(z, y.to(z.dtype))
    return nn.functional.cross_entropy(logits, y)


def loss_and_correct(logits: Tensor, y: Tensor, binary: bool) -> tuple[Tensor, Tensor]:
    """Mean loss and number of correct predictions. Binary: logits (N, 1), threshold 0."""
    predicted = (logits.squeeze(1) > 0).long() if binary else logits.argmax(1)
    return loss_of(logits, y, binary), (predicted == y).sum()


@torch.inference_mode()
def evaluate(
    model: nn.Module, data: Dataset, x: Tensor, y: Tensor, batch_size: int
) -> tuple[float, float]:
    """(mean loss, accuracy) over all of x in eval mode; BN uses its running statistics."""
    was_training = model.training
    model.eval()
    total_loss, total_correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = data.prepare(x[i : i + batch_size]), y[i : i + batch_size]
        loss, correct = loss_and_correct(model(xb), yb, data.binary)
        total_loss += float(loss) * len(yb)
        total_correct += int(correct)
    model.train(was_training)
    return total_loss / len(x), total_correct / len(x)


def batches_of_epoch(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    """Index batches of one epoch: a seeded permutation cut into batch_size pieces.

    A final batch of one example is dropped: BN cannot train on one value per channel. It is
    dropped for every norm variant, so paired runs take the same steps on the same data.
    """
    perm = torch.randperm(n, generator=gen)
    chunks = list(perm.split(batch_size))
    if len(chunks[-1]) == 1 and n > 1:
        chunks.pop()
    return chunks


def target_reached(target: TargetConfig, row: dict[str, float]) -> bool:
    value = row[target.metric]
    return value >= target.value if target.metric.endswith("_acc") else value <= target.value


class RunInterrupted(Exception):
    """`should_stop()` asked the run to stop; its last checkpoint stays for a resume."""


def set_determinism(seed: int, deterministic: bool) -> None:
    """Seed Python's, numpy's and torch's global RNGs; turn torch's deterministic algorithms on/off.

    warn_only: an op without a deterministic kernel (a few CUDA backward ops) warns instead of
    failing the run; `bnexp repro` is the check that a run really is reproducible.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CPU and every CUDA device
    if deterministic:
        os.environ.setdefault(
            "CUBLAS_WORKSPACE_CONFIG", ":4096:8"
        )  # cuBLAS needs it to be deterministic
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def is_diverged(loss: float, limit: float | None) -> bool:
    """NaN or inf loss, or a loss above `train.diverge_loss`."""
    return not math.isfinite(loss) or (limit is not None and loss > limit)


@dataclass
class Progress:
    """Where a run stands. With the model, optimizer and RNG states it is a checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    rows: list[dict] = field(default_factory=list)  # metrics.csv rows so far
    timing: list[dict] = field(default_factory=list)  # timing.csv rows so far
    train_s: float = 0.0
    eval_s: float = 0.0
    wall_s: float = 0.0  # run time so far, across resumes
    reached: dict | None = None  # {"steps", "epochs", "time_s"} when measure.target was first met
    best_test_acc: float = 0.0
    diverged_step: int | None = None


def save_checkpoint(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    order: torch.Generator,
    progress: Progress,
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "order": order.get_state(),  # the data-order generator, between epochs
        "torch_rng": torch.get_rng_state(),  # global RNGs, for anything random inside the model
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "progress": asdict(progress),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    # Not fsynced: written every few epochs, and one lost to a power cut is only unreadable or
    # old, which load_checkpoint handles (the run starts over or resumes from an earlier epoch).
    atomic_write_bytes(path, buf.getvalue(), durable=False)


def load_checkpoint(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    order: torch.Generator,
    device: torch.device,
) -> Progress | None:
    """Restore model, optimizer and RNGs in place; None (start over) if the file cannot be used."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        order.set_state(state["order"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if (
            state["cuda_rng"]
            and torch.cuda.is_available()
            and len(state["cuda_rng"]) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        return Progress(**state["progress"])
    except Exception as e:  # noqa: BLE001 - a checkpoint is an optimization; never fatal
        log.warning(
            "ignoring checkpoint %s (%s: %s); the run starts over", path, type(e).__name__, e
        )
        return None


def _csv_text(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in columns} for r in rows)
    return buf.getvalue()


class _CsvLog:
    """A CSV that grows row by row (flushed, so a crash keeps what was measured and `tail -f`
    shows progress). It starts as an atomic write of `rows` (a resume's rows so far) and
    `finish()` rewrites it whole and atomically, so a complete run's file is never partial."""

    def __init__(self, path: Path, columns: list[str], rows: list[dict]):
        self.path, self.columns = path, columns
        atomic_write_text(path, _csv_text(columns, rows))
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=columns, lineterminator="\n")

    def write(self, row: dict) -> None:
        self.writer.writerow({k: row[k] for k in self.columns})
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def finish(self, rows: list[dict]) -> None:
        self.close()
        atomic_write_text(self.path, _csv_text(self.columns, rows))


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
    t_start = time.perf_counter()
    tc = cfg.train
    device = resolve_device(tc.device)
    # before anything is written: a data file a user must fix (DataError) leaves no half run
    data = data.to(device) if data is not None else load_dataset(cfg.data, device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rid = run_id(cfg)
    atomic_write_text(
        run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    )
    set_determinism(tc.seed, tc.deterministic)

    model = build_model(cfg.model, data.input_shape, data.num_outputs)
    init_weights(model, tc.seed)
    model.to(device).train()
    opt = make_optimizer(model.parameters(), tc)
    order = torch.Generator().manual_seed(tc.seed)  # data order, the same for every norm variant
    n_train = len(data.x_train)
    if n_train % tc.batch_size == 1 and n_train > 1:
        log.info(
            "dropping the final batch of 1 example each epoch (BN needs > 1 value per channel)"
        )

    ckpt = run_dir / CHECKPOINT
    prog, resumed_from = Progress(), None
    if ckpt.exists() and (loaded := load_checkpoint(ckpt, model, opt, order, device)) is not None:
        prog, resumed_from = loaded, loaded.epoch
        log.info("run %s: resuming from its checkpoint after epoch %d", rid, loaded.epoch)
    wall_before = prog.wall_s
    target = cfg.measure.target
    steps_per_epoch = len(
        batches_of_epoch(n_train, tc.batch_size, torch.Generator().manual_seed(0))
    )
    metrics = _CsvLog(run_dir / "metrics.csv", METRIC_COLUMNS, prog.rows)
    timing = _CsvLog(run_dir / "timing.csv", TIMING_COLUMNS, prog.timing)
    probes = RunProbes(
        cfg, model, data, run_dir
    )  # measure.shift_probe / ics / bn_noise; no-ops when unset

    def elapsed() -> float:
        return wall_before + time.perf_counter() - t_start

    def record(epoch: float) -> None:
        t0 = time.perf_counter()
        if cfg.model.eval_stats == "recalibrate":  # running estimates from the whole training set
            recalibrate(model, data.x_train, tc.eval_batch_size, data.prepare)
        train_loss, train_acc = evaluate(
            model, data, data.x_train, data.y_train, tc.eval_batch_size
        )
        test_loss, test_acc = evaluate(model, data, data.x_test, data.y_test, tc.eval_batch_size)
        prog.eval_s += time.perf_counter() - t0
        row = {
            "epoch": round(epoch, 4),
            "step": prog.step,
            "lr": opt.param_groups[0]["lr"],
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
        }
        times = {
            "epoch": row["epoch"],
            "step": prog.step,
            "wall_s": round(elapsed(), 4),
            "train_s": round(prog.train_s, 4),
            "eval_s": round(prog.eval_s, 4),
        }
        prog.rows.append(row)
        prog.timing.append(times)
        metrics.write(row)
        timing.write(times)
        prog.best_test_acc = max(prog.best_test_acc, test_acc)
        if target is not None and prog.reached is None and target_reached(target, row):
            prog.reached = {"steps": prog.step, "epochs": round(epoch, 4), "time_s": prog.train_s}

    # Divergence check (speed, issue 7): reading the loss back is free on the CPU but stalls
    # an accelerator's queue, so there the losses stay on the device and are read every
    # `check_every` steps and at each evaluation; diverged_step is still the exact first step.
    check_every = divergence_check_every(device)
    pending: list[Tensor] = []  # losses of the steps not yet checked, oldest first

    def first_diverged() -> int | None:
        """The first unchecked step whose loss is NaN/inf or above train.diverge_loss, if any."""
        if not pending:
            return None
        n = len(pending)
        losses = (
            [float(pending[0])] if n == 1 else torch.stack(pending).float().cpu().tolist()
        )  # one read-back
        pending.clear()
        return next(
            (
                prog.step - n + 1 + i
                for i, v in enumerate(losses)
                if is_diverged(v, tc.diverge_loss)
            ),
            None,
        )

    try:
        if not prog.rows:
            record(0)
        if on_progress and prog.epoch:
            on_progress(prog.epoch, tc.epochs)
        for epoch in range(prog.epoch, tc.epochs):
            for idx in batches_of_epoch(n_train, tc.batch_size, order):
                if should_stop is not None and should_stop():
                    raise RunInterrupted(f"run {rid} stopped at step {prog.step}")
                t0 = time.perf_counter()
                xb, yb = data.prepare(data.x_train[idx]), data.y_train[idx]
                loss = loss_of(model(xb), yb, data.binary)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                probes.before_step(prog.step + 1)  # ICS keeps G and layers >= l before the update
                opt.step()
                prog.step += 1
                prog.train_s += time.perf_counter() - t0
                probes.after_step(
                    prog.step, lambda m, xb=xb, yb=yb: loss_and_correct(m(xb), yb, data.binary)[0]
                )  # not timed
                pending.append(loss.detach())
                evaluate_now = tc.eval_every_steps and prog.step % tc.eval_every_steps == 0
                if len(pending) >= check_every or evaluate_now:
                    prog.diverged_step = first_diverged()
                    if prog.diverged_step is not None:
                        break
                if evaluate_now and prog.step % steps_per_epoch:
                    record(epoch + (prog.step % steps_per_epoch) / steps_per_epoch)
            if prog.diverged_step is None:
                prog.diverged_step = first_diverged()
            if prog.diverged_step is not None:  # one last evaluation, where it stopped
                record(epoch + (prog.step - epoch * steps_per_epoch) / steps_per_epoch)
                break
            record(epoch + 1)
            prog.epoch = epoch + 1
            if (
                tc.checkpoint_every
                and prog.epoch % tc.checkpoint_every == 0
                and prog.epoch < tc.epochs
            ):
                prog.wall_s = elapsed()
                save_checkpoint(ckpt, model, opt, order, prog)
            if on_progress:
                on_progress(prog.epoch, tc.epochs)
    finally:
        metrics.close()
        timing.close()
    metrics.finish(prog.rows)
    timing.finish(prog.timing)
    probes.close()  # writes probes.csv and bn_noise.csv

    last, reached = prog.rows[-1], prog.reached
    summary = RunSummary.from_run(
        cfg,
        last,
        reached,
        prog.best_test_acc,
        prog.diverged_step,
        prog.step,
        elapsed(),
        prog.train_s,
        prog.eval_s,
        str(device),
        params,
        resumed_from_epoch=resumed_from,
        peak_rss_mb=peak_memory_mb(device),
    )
    atomic_write_json(run_dir / "summary.json", asdict(summary))
    ckpt.unlink(missing_ok=True)
    return summary

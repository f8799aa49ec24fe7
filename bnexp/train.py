"""One run: `train_run(cfg, run_dir) -> RunSummary`.

The data live as tensors on the run's device; each epoch draws a seeded permutation and walks it
in mini-batches (no DataLoader on the hot path). After every epoch (and every
`train.eval_every_steps` steps, if set) the whole train and test sets are evaluated in eval mode,
and one row goes to metrics.csv. summary.json is written last, atomically: its presence means
the run is complete.
"""

from __future__ import annotations

import csv
import logging
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from bnexp.config import RunConfig, TargetConfig, TrainConfig, run_id
from bnexp.data import Dataset, load_dataset
from bnexp.io import atomic_write_json, atomic_write_text
from bnexp.models import build_model, init_weights

log = logging.getLogger("bnexp")

METRIC_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "wall_s"]


@dataclass
class RunSummary:
    run_id: str
    status: str  # "complete"
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
    params: dict[str, Any] = field(default_factory=dict)  # the swept keys and their values
    # peak resident memory of this process so far, MiB (CUDA: peak allocated on the device);
    # a worker that trains many runs reports its own high-water mark
    peak_rss_mb: float | None = None
    seeds_together: int = 1  # > 1: trained in one vectorized model with other seeds (shared times)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from bnexp.errors import BnexpError

        raise BnexpError("train.device: cuda was asked for but torch sees no CUDA device (use auto or cpu)")
    return torch.device(name)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far, MiB: the process's peak RSS on the CPU, allocated memory on CUDA.

    Linux: VmHWM of /proc/self/status, because ru_maxrss carries over a parent's peak into a
    child started by fork + exec (a subprocess of a 1.4 GB parent starts at 1.4 GB).
    """
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 2**10, 1)  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)


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
    if binary:
        z = logits.squeeze(1)
        loss = nn.functional.binary_cross_entropy_with_logits(z, y.to(z.dtype))
        return loss, ((z > 0).long() == y).sum()
    return nn.functional.cross_entropy(logits, y), (logits.argmax(1) == y).sum()


@torch.inference_mode()
def evaluate(model: nn.Module, data: Dataset, x: Tensor, y: Tensor, batch_size: int) -> tuple[float, float]:
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


class _MetricsWriter:
    """metrics.csv written row by row and flushed, so a crash keeps what was measured."""

    def __init__(self, path: Path):
        self.file = path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=METRIC_COLUMNS)
        self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow({k: row[k] for k in METRIC_COLUMNS})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def train_run(
    cfg: RunConfig,
    run_dir: Path,
    params: dict[str, Any] | None = None,
    data: Dataset | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> RunSummary:
    """Train one run, write config.yaml, metrics.csv and (last) summary.json under run_dir."""
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rid = run_id(cfg)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    tc = cfg.train
    device = resolve_device(tc.device)
    data = (data or load_dataset(cfg.data)).to(device)

    model = build_model(cfg.model, data.input_shape, data.num_outputs)
    init_weights(model, tc.seed)
    model.to(device).train()
    opt = make_optimizer(model.parameters(), tc)
    order = torch.Generator().manual_seed(tc.seed)  # data order, the same for every norm variant
    n_train = len(data.x_train)
    if n_train % tc.batch_size == 1 and n_train > 1:
        log.info("dropping the final batch of 1 example each epoch (BN needs > 1 value per channel)")

    target = cfg.measure.target
    metrics = _MetricsWriter(run_dir / "metrics.csv")
    step, train_s, eval_s = 0, 0.0, 0.0
    steps_per_epoch = len(batches_of_epoch(n_train, tc.batch_size, torch.Generator().manual_seed(0)))
    reached: dict[str, Any] | None = None
    diverged_step: int | None = None
    last: dict[str, float] = {}
    best_test_acc = 0.0

    def record(epoch: float) -> dict[str, float]:
        nonlocal eval_s, reached, best_test_acc
        t0 = time.perf_counter()
        train_loss, train_acc = evaluate(model, data, data.x_train, data.y_train, tc.eval_batch_size)
        test_loss, test_acc = evaluate(model, data, data.x_test, data.y_test, tc.eval_batch_size)
        eval_s += time.perf_counter() - t0
        row = {
            "epoch": round(epoch, 4), "step": step, "lr": opt.param_groups[0]["lr"],
            "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "wall_s": round(time.perf_counter() - t_start, 4),
        }
        metrics.write(row)
        best_test_acc = max(best_test_acc, test_acc)
        if target is not None and reached is None and target_reached(target, row):
            reached = {"steps": step, "epochs": round(epoch, 4), "time_s": train_s}
        return row

    # Divergence check (speed, issue 7): reading the loss back is free on the CPU but stalls
    # an accelerator's queue, so there the losses stay on the device and are read every
    # `check_every` steps and at each evaluation; diverged_step is still the exact first step.
    check_every = divergence_check_every(device)
    pending: list[Tensor] = []  # losses of the steps not yet checked, oldest first

    def first_nonfinite() -> int | None:
        if len(pending) <= 1:  # the CPU's case: one float() is the cheapest check
            ok = not pending or math.isfinite(float(pending.pop()))
            return None if ok else step
        bad = (~torch.isfinite(torch.stack(pending))).nonzero()
        first = step - len(pending) + 1 + int(bad[0, 0]) if len(bad) else None
        pending.clear()
        return first

    try:
        last = record(0)
        for epoch in range(tc.epochs):
            for idx in batches_of_epoch(n_train, tc.batch_size, order):
                t0 = time.perf_counter()
                xb, yb = data.prepare(data.x_train[idx]), data.y_train[idx]
                loss = loss_of(model(xb), yb, data.binary)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                pending.append(loss.detach())
                if len(pending) >= check_every or (tc.eval_every_steps and step % tc.eval_every_steps == 0):
                    diverged_step = first_nonfinite()
                train_s += time.perf_counter() - t0
                if diverged_step is not None:
                    break
                if tc.eval_every_steps and step % tc.eval_every_steps == 0 and step % steps_per_epoch:
                    last = record(epoch + (step % steps_per_epoch) / steps_per_epoch)
            if diverged_step is None:
                diverged_step = first_nonfinite()
            if diverged_step is not None:
                last = record(epoch + 1)
                break
            last = record(epoch + 1)
            if on_progress:
                on_progress(epoch + 1, tc.epochs)
    finally:
        metrics.close()

    summary = RunSummary(
        run_id=rid, status="complete", norm=cfg.model.norm, batch_size=tc.batch_size, lr=tc.lr, seed=tc.seed,
        final_train_acc=last["train_acc"], final_test_acc=last["test_acc"],
        final_train_loss=last["train_loss"], final_test_loss=last["test_loss"],
        gen_gap=last["train_acc"] - last["test_acc"], loss_gap=last["test_loss"] - last["train_loss"],
        best_test_acc=best_test_acc,
        steps_to_target=reached["steps"] if reached else None,
        epochs_to_target=reached["epochs"] if reached else None,
        time_to_target_s=round(reached["time_s"], 4) if reached else None,
        diverged=diverged_step is not None, diverged_step=diverged_step,
        steps=step, epochs=tc.epochs, wall_s=round(time.perf_counter() - t_start, 4),
        train_s=round(train_s, 4), eval_s=round(eval_s, 4), device=str(device),
        params=dict(params or {}), peak_rss_mb=peak_memory_mb(device),
    )
    atomic_write_json(run_dir / "summary.json", asdict(summary))
    return summary

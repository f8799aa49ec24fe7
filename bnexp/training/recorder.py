"""`RunRecorder`: everything one run leaves in its folder, written in one place for both
training loops (`train.train_run`, one run; `vectorize.train_seeds`, one recorder per seed).

run_dir/
  config.yaml    the resolved config, written first
  metrics.csv    one row per evaluation. A pure function of the config: with train.deterministic
                 the same config gives the same bytes, which is why wall times are not in it but in
  timing.csv     epoch, step, wall_s, train_s, eval_s per evaluation (machine- and load-dependent)
  checkpoint.pt  every train.checkpoint_every epochs while the run is in progress, removed at
                 the end
  summary.json   written last, atomically: its presence means the run is complete

  estimates.csv  with measure.eval_subset: the subset estimates between metrics.csv's rows

With measure.eval_subset the loop asks `full_due` before each evaluation: the first and the last
are of the whole sets; any other is first an estimate on the subset (`estimate`), followed by a
whole-set evaluation only while the target is unmet on the whole training set and the estimate
is within NEAR_Z binomial standard errors of it. Each estimate starts with a first look at a
fixed quarter of the subset, and that look is the estimate (its `n` in estimates.csv says how
many examples it took) unless it decides something: the whole subset is evaluated only while
the target is unmet (`deciding`) and the look is not more than NEAR_Z of its own standard errors
below it (`far_below`). So steps to target, the matched-fit gap and the final numbers are those
of whole-set evaluations, at the cost of a few of them per run.

metrics.csv and timing.csv grow row by row (flushed, so they can be watched) and are rewritten
whole and atomically before summary.json. The recorder also keeps the best test accuracy, the
first evaluation that met `measure.target`, the divergence rule and the checkpoint. With a
validation split (data.val_fraction) each metrics.csv row also holds val_loss and val_acc, and
the recorder keeps the evaluation with the best val_acc (the earliest of equals): the summary's
best_test_acc is the test accuracy there, so no choice is made on the test set.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from bnexp.config import RunConfig, TargetConfig, run_id
from bnexp.io import atomic_write_json, atomic_write_text
from bnexp.results import (
    CHECKPOINT,
    CONFIG,
    ESTIMATE_COLUMNS,
    ESTIMATES,
    METRIC_COLUMNS,
    METRICS,
    SUMMARY,
    TIMING,
    TIMING_COLUMNS,
    VAL_COLUMNS,
    RunSummary,
)
from bnexp.training.checkpoint import load_checkpoint, save_checkpoint
from bnexp.training.device import peak_memory_mb

log = logging.getLogger("bnexp")

# train.diverge_loss: null means this many times the first evaluation's training loss (at
# initialisation, ~ln(classes)): a network whose loss rose 100-fold is not training, and no
# healthy run of the shipped configs comes near it (their evaluated losses stay below 1.2x)
DEFAULT_DIVERGE_FACTOR = 100.0
# a subset estimate this many binomial standard errors below the target (or closer) calls a
# whole-set evaluation: a run meeting the target on the whole set is missed with probability
# < 4e-5 per evaluation (normal tail at 4 SE)
NEAR_Z = 4.0


class RunInterrupted(Exception):
    """`should_stop()` asked the run to stop; its last checkpoint stays for a resume."""


def target_reached(target: TargetConfig, row: dict[str, float]) -> bool:
    value = row[target.metric]
    return value >= target.value if target.metric.endswith("_acc") else value <= target.value


def diverge_limit(setting: float | str | None, first_train_loss: float) -> float:
    """The training loss above which a run counts as diverged (inf: never, by size alone).

    `setting` is train.diverge_loss: a loss, "<k>x" (k times the first evaluation's training
    loss), "off", or None (= DEFAULT_DIVERGE_FACTOR times that loss).
    """
    if setting == "off":
        return math.inf
    if setting is None or isinstance(setting, str):
        factor = DEFAULT_DIVERGE_FACTOR if setting is None else float(setting[:-1])
        return factor * first_train_loss if math.isfinite(first_train_loss) else math.inf
    return float(setting)


def is_diverged(loss: float, limit: float) -> bool:
    """NaN or inf loss, or a loss above the limit."""
    return not math.isfinite(loss) or loss > limit


def fractional_epoch(epoch: int, step: int, steps_per_epoch: int) -> float:
    """Where `step` falls, in epochs, during 0-based `epoch` (for evaluations mid-epoch)."""
    return epoch + (step - epoch * steps_per_epoch) / steps_per_epoch


class Clock:
    """Seconds spent by one run (or by a group of seeds trained together, which share one),
    across resumes: wall time, optimizer steps only (train_s), evaluations only (eval_s)."""

    def __init__(self) -> None:
        self.t_start = time.perf_counter()
        self.wall_before, self.train_s, self.eval_s = 0.0, 0.0, 0.0

    def elapsed(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    @contextmanager
    def training(self) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.train_s += time.perf_counter() - t0

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.eval_s += time.perf_counter() - t0


@dataclass
class Progress:
    """Where a run stands. With the model, optimizer and RNG states it is a checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    rows: list[dict] = field(default_factory=list)  # metrics.csv rows so far
    estimates: list[dict] = field(default_factory=list)  # estimates.csv rows so far
    timing: list[dict] = field(default_factory=list)  # timing.csv rows so far
    train_s: float = 0.0
    eval_s: float = 0.0
    wall_s: float = 0.0  # run time so far, across resumes
    reached: dict | None = None  # {"steps", "epochs", "time_s"} when measure.target was first met
    best_test_acc: float = 0.0
    diverged_step: int | None = None
    best_val: dict | None = None  # {"val_acc", "epoch", "test_acc"} of the best val evaluation


def _csv_text(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r.get(k, "") for k in columns} for r in rows)  # "": a column added later
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
        self.writer.writerow({k: row.get(k, "") for k in self.columns})
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def finish(self, rows: list[dict]) -> None:
        self.close()
        atomic_write_text(self.path, _csv_text(self.columns, rows))


class RunRecorder:
    """One run's folder and bookkeeping. The loop owns the model and the clock's stopwatch; it
    calls, in order: `resume(...)` (optional), `open()`, then per evaluation `record(...)`, per
    step `stepped()` and `check_losses(...)`, per epoch `epoch_done(...)`, and at the end
    `finish(...)` (or `close()` if the run ends by an exception)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, clock: Clock):
        self.cfg, self.run_dir, self.clock = cfg, Path(run_dir), clock
        self.run_id = run_id(cfg)
        self.prog = Progress()
        self.resumed_from: int | None = None  # the epoch of the checkpoint it resumed from
        self.epochs = cfg.train.epochs  # epochs the loop starts (more with a step budget)
        self._logs: tuple[_CsvLog, _CsvLog] | None = None
        self._estimates: _CsvLog | None = None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
        atomic_write_text(self.run_dir / CONFIG, config)

    # ---- checkpoint -------------------------------------------------------------------------

    def resume(
        self,
        model: nn.Module,
        opt: Any,  # torch.optim.Optimizer or bnexp.training.sgd.SGD (state_dict, load_state_dict)
        order: torch.Generator,
        device: torch.device,
    ) -> None:
        """Continue from checkpoint.pt if it is an intact checkpoint of this run (else a warning
        and a fresh start); model, optimizer and RNGs are restored in place."""
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            return
        state = load_checkpoint(path, self.run_id, model, opt, order, device)
        if state is None:
            return
        self.prog = Progress(**state)
        self.resumed_from = self.prog.epoch
        self.clock.wall_before = self.prog.wall_s
        self.clock.train_s, self.clock.eval_s = self.prog.train_s, self.prog.eval_s
        log.info("run %s: resumed from epoch %d (its checkpoint)", self.run_id, self.prog.epoch)

    def epoch_done(
        self,
        model: nn.Module | None = None,
        opt: Any = None,  # the optimizer (state_dict), or None
        order: torch.Generator | None = None,
    ) -> None:
        """One more epoch completed; with the model, optimizer and data order, a checkpoint every
        train.checkpoint_every epochs (not after the last: the run is about to finish). Seeds
        trained together pass none: their state is one stacked model, not this run's."""
        self.prog.epoch += 1
        tc = self.cfg.train
        if model is not None and tc.checkpoint_every and self.prog.epoch % tc.checkpoint_every == 0:
            if self.prog.epoch < self.epochs:
                p = self.prog
                p.wall_s, p.train_s, p.eval_s = (
                    self.clock.elapsed(),
                    self.clock.train_s,
                    self.clock.eval_s,
                )
                save_checkpoint(
                    self.run_dir / CHECKPOINT, self.run_id, model, opt, order, asdict(p)
                )

    # ---- rows ---------------------------------------------------------------------------------

    def open(self) -> None:
        """Start metrics.csv and timing.csv with the rows so far (a resume's, else none)."""
        val = VAL_COLUMNS if self.cfg.data.val_fraction is not None else []
        self._logs = (
            _CsvLog(self.run_dir / METRICS, METRIC_COLUMNS + val, self.prog.rows),
            _CsvLog(self.run_dir / TIMING, TIMING_COLUMNS, self.prog.timing),
        )
        if self.cfg.measure.eval_subset is not None:
            self._estimates = _CsvLog(
                self.run_dir / ESTIMATES, ESTIMATE_COLUMNS, self.prog.estimates
            )

    def full_due(self, last: bool = False) -> bool:
        """Whether this evaluation is of the whole sets outright: always without
        measure.eval_subset, else the first and the `last` (otherwise `estimate` decides)."""
        return self.cfg.measure.eval_subset is None or last or not self.prog.rows

    def deciding(self) -> bool:
        """Whether an estimate now decides anything (an unmet target): if not, a first look at
        the subset is the estimate, a point of the curve in estimates.csv."""
        return self.cfg.measure.target is not None and self.prog.reached is None

    def _lowest_near(self, n: int) -> float:
        """The lowest accuracy near the target for an estimate from n examples: the target less
        NEAR_Z binomial standard errors at it. Call it while `deciding`."""
        t = self.cfg.measure.target.value
        return t - NEAR_Z * math.sqrt(max(t * (1 - t), 0.0) / n)

    def far_below(self, train_acc: float, n: int) -> bool:
        """Whether a first look at n subset examples puts training accuracy more than NEAR_Z
        standard errors below the unmet target. Then that look is the estimate: a model that
        meets the target on the whole set looks that low with probability < 4e-5 (the rule
        `estimate` applies to the whole subset, at the look's own standard error)."""
        return self.deciding() and train_acc < self._lowest_near(n)

    def estimate(
        self, epoch: float, lr: float, train_loss: float, train_acc: float, n: int
    ) -> bool:
        """One subset estimate from n examples (estimates.csv); True if a whole-set evaluation is
        due now: the target is unmet on the whole set and the estimate lies within NEAR_Z
        standard errors below it (or above it). No target: never (the whole sets at the first
        and last only)."""
        p = self.prog
        row = {"epoch": round(epoch, 4), "step": p.step, "lr": lr}
        row |= {"train_loss": train_loss, "train_acc": train_acc, "n": n}
        p.estimates.append(row)
        self._estimates.write(row)
        return self.deciding() and train_acc >= self._lowest_near(n)

    def record(self, epoch: float, lr: float, evaluation: dict[str, float]) -> None:
        """One evaluation (train_loss, train_acc, test_loss, test_acc) at the current step."""
        p, clock = self.prog, self.clock
        row = {"epoch": round(epoch, 4), "step": p.step, "lr": lr, **evaluation}
        times = {
            "epoch": row["epoch"],
            "step": p.step,
            "wall_s": round(clock.elapsed(), 4),
            "train_s": round(clock.train_s, 4),
            "eval_s": round(clock.eval_s, 4),
        }
        p.rows.append(row)
        p.timing.append(times)
        metrics, timing = self._logs
        metrics.write(row)
        timing.write(times)
        p.best_test_acc = max(p.best_test_acc, row["test_acc"])
        if "val_acc" in row and (p.best_val is None or row["val_acc"] > p.best_val["val_acc"]):
            p.best_val = {"val_acc": row["val_acc"], "epoch": row["epoch"]}
            p.best_val["test_acc"] = row["test_acc"]
        target = self.cfg.measure.target
        if target is not None and p.reached is None and target_reached(target, row):
            p.reached = {"steps": p.step, "epochs": row["epoch"], "time_s": clock.train_s}

    # ---- steps and divergence -----------------------------------------------------------------

    def stepped(self) -> None:
        self.prog.step += 1

    @property
    def diverged(self) -> bool:
        return self.prog.diverged_step is not None

    def check_losses(self, losses: list[float]) -> int | None:
        """Training losses of the last len(losses) steps (the latest is the current step),
        oldest first: the first diverged step, recorded, or None. The limit is set by
        train.diverge_loss and the first evaluation's training loss (`diverge_limit`)."""
        limit = diverge_limit(self.cfg.train.diverge_loss, self.prog.rows[0]["train_loss"])
        first = self.prog.step - len(losses) + 1
        hit = next((first + i for i, v in enumerate(losses) if is_diverged(v, limit)), None)
        self.prog.diverged_step = hit
        return hit

    # ---- the end ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the growing CSVs (what was measured stays on disk); safe to call twice."""
        for csv_log in [*(self._logs or ()), *([self._estimates] if self._estimates else [])]:
            csv_log.close()

    def finish(self, device: torch.device, params: dict[str, Any] | None, **extra) -> RunSummary:
        """Rewrite metrics.csv and timing.csv whole, write summary.json (last, atomically) and
        remove the checkpoint. `extra`: further RunSummary fields (e.g. seeds_together)."""
        metrics, timing = self._logs
        metrics.finish(self.prog.rows)
        timing.finish(self.prog.timing)
        if self._estimates is not None:
            self._estimates.finish(self.prog.estimates)
        p = self.prog
        summary = RunSummary.from_run(
            self.cfg,
            p.rows[-1],
            p.reached,
            p.best_test_acc,
            p.diverged_step,
            p.step,
            self.clock.elapsed(),
            self.clock.train_s,
            self.clock.eval_s,
            str(device),
            params,
            resumed_from_epoch=self.resumed_from,
            epochs=self.epochs,
            peak_rss_mb=peak_memory_mb(device),
            best_val=p.best_val,
            **extra,
        )
        atomic_write_json(self.run_dir / SUMMARY, asdict(summary))
        (self.run_dir / CHECKPOINT).unlink(missing_ok=True)
        return summary

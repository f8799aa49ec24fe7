"""Plan -> executor -> run store: `run_experiment` trains every run of a plan not finished yet
and rebuilds summary.csv (the folder's layout: bnexp.results.folder), after every sweep, even an
interrupted one.

Resume, skip and claims live in the run store (`bnexp.sweep.store`) and the worker
(`bnexp.sweep.worker`); executors only decide where a worker runs (bnexp.sweep.executors): in
this process, in a local process pool, or as Ray tasks. A rerun skips runs whose summary.json
exists (failed ones too, unless retry_failed), resumes partial runs from their checkpoint,
retrains damaged ones, and waits for runs another process is training.

Stopping: Ctrl-C (SIGINT) and SIGTERM (timeout, systemd, Slurm, docker stop) both stop the runs
in progress within a step, keep finished ones and return `interrupted=True` with the signal. A
results folder that cannot be written (full disk, read-only) stops the sweep the same way and
raises StorageError (one line); nothing is recorded as failed for it, so a rerun resumes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bnexp.config import ExperimentConfig, PlannedRun, expand
from bnexp.errors import BnexpError
from bnexp.results import SUMMARY_COLUMNS, ResultsFolder, is_blank
from bnexp.sweep.executors import (
    PoolExecutor,
    RayExecutor,
    SerialExecutor,
    Task,
    cpu_cores,
    main_not_reimportable,
)
from bnexp.sweep.folder import (
    is_storage_error,
    plan_frame,  # noqa: F401 - re-exported: plan.csv's table
    prepare_results_dir,
    storage_error,
    write_plan,
)
from bnexp.sweep.store import Outcome, RunStore
from bnexp.training.vectorize import group_by_seed, why_not_vectorized

log = logging.getLogger("bnexp")

EXECUTORS = ("local", "ray")
POLL_S = 1.0  # how often a sweep looks again at runs that another process is training


@dataclass
class SweepResult:
    results_dir: Path
    plan: list[PlannedRun]
    outcomes: dict[str, Outcome]  # run id -> what this call did with it
    skipped: list[str]  # run ids already complete (or failed) before this call
    summary: pd.DataFrame
    interrupted: bool = False
    workers: int = 1
    stop_signal: int | None = None  # interrupted by: signal.SIGINT (Ctrl-C) or signal.SIGTERM

    @property
    def ran(self) -> list[str]:
        return [r for r, o in self.outcomes.items() if o.status in ("complete", "diverged")]

    @property
    def failed(self) -> dict[str, str]:
        """Run id -> error, for runs that failed in this call or before it."""
        store = RunStore(self.results_dir)
        out = {}
        for run in self.plan:
            s = store.summary(run.run_id)
            if s is not None and s.get("status") == "failed":
                out[run.run_id] = s.get("error", "")
            elif (o := self.outcomes.get(run.run_id)) is not None and o.status == "lost":
                out[run.run_id] = o.error or ""
        return out

    @property
    def failed_here(self) -> dict[str, str]:
        """Run id -> error, for the runs that failed in this call, in the order they ended."""
        return {r: o.error or "" for r, o in self.outcomes.items() if o.status == "failed"}

    @property
    def diverged(self) -> list[str]:
        return list(self.summary.loc[self.summary["diverged"].fillna(False).astype(bool), "run_id"])


def collect_summary(results_dir: Path, plan: pd.DataFrame) -> pd.DataFrame:
    """summary.csv's table: one row per complete run of `plan` (plan.csv's table), swept keys as
    extra columns.

    Failed runs have no metrics and are left out (`bnexp status` and the run command list them);
    diverged runs are complete and in, with diverged = True; damaged ones are left out (warned).
    """
    store, rows = RunStore(results_dir), []
    extra = [c for c in plan.columns if c != "run_id"]
    for planned in plan.to_dict("records"):
        s = store.summary(planned["run_id"])
        if s is None or s.get("status") != "complete":
            continue
        row = {k: s.get(k) for k in SUMMARY_COLUMNS}
        # the swept values of this plan row (a run serving several cells has one row per cell),
        # else (a plan.csv without them) those the run recorded
        swept = {k: planned[k] for k in extra if not is_blank(planned[k])} or s.get("params") or {}
        row.update({k: v for k, v in swept.items() if k not in row})
        rows.append(row)
    columns = SUMMARY_COLUMNS + [k for k in extra if k not in SUMMARY_COLUMNS]
    df = pd.DataFrame(rows, columns=columns)
    df["steps_to_target"] = df["steps_to_target"].astype("Int64")
    df["diverged_step"] = df["diverged_step"].astype("Int64")
    return df


def runs_to_do(
    store: RunStore, plan: list[PlannedRun], redo: frozenset[str]
) -> tuple[list[PlannedRun], list[str]]:
    """(runs to hand to the executor, run ids skipped as already finished)."""
    todo, skipped, seen = [], [], set()
    for run in plan:
        if run.run_id in seen:  # one run serving several cells (a baseline): trained once
            continue
        seen.add(run.run_id)
        state = store.state(run.run_id)
        if state in ("done", "failed") and state not in redo:
            skipped.append(run.run_id)
            store.tidy(run.run_id)
        else:
            todo.append(run)
    return todo, skipped


def default_workers(n_runs: int, uses_cuda: bool) -> int:
    """One worker per core (CPU runs) or one for all (GPU runs share the device); never more
    than runs."""
    return max(1, min(n_runs, 1 if uses_cuda else cpu_cores()))


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as for Ctrl-C."""


class _StorageStop(Exception):
    def __init__(self, error: OSError):
        self.error = error


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated (a KeyboardInterrupt) in this thread, so a sweep stopped by
    `timeout`, systemd, Slurm or `docker stop` stops like one stopped with Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- the sweep


def run_experiment(
    exp: ExperimentConfig,
    raw: dict,
    out_root: Path,
    source: str = "<config>",
    overrides: list[str] | None = None,
    *,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    force: bool = False,
    extend: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_run_start: Callable[[PlannedRun], None] | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_wait: Callable[[list[str]], None] | None = None,
) -> SweepResult:
    """Train every planned run that is not finished yet; rebuild summary.csv at the end.

    workers: None = `default_workers`; never more than tasks. Ctrl-C (KeyboardInterrupt) and
    SIGTERM stop the runs in progress within a step, keep finished ones and return with
    `interrupted=True` and `stop_signal`. `extend`: the results folder may hold another plan of
    the same name; this plan's runs are added to it (see bnexp.sweep.folder.write_plan).
    `on_start(to_run, workers)` once, `on_outcome` per finished run (in this process),
    `on_wait(run_ids)` while waiting for runs another process has claimed.
    """
    _check_options(executor, workers)
    results_dir = Path(out_root) / exp.name
    plan = expand(exp)
    folder_plan = _write_plan(results_dir, raw, source, overrides, plan, extend)
    store = RunStore(results_dir)
    redo = frozenset({"done", "failed"} if force else {"failed"} if retry_failed else set())
    todo, skipped = runs_to_do(store, plan, redo)
    tasks = make_tasks(todo)
    uses_cuda = any(_may_use_cuda(r) for r in todo)
    # never more workers than tasks: each idle worker would cost a process with torch loaded
    n_workers = max(1, min(workers or default_workers(len(todo), uses_cuda), len(tasks)))
    if executor == "local" and n_workers > 1 and (why := main_not_reimportable()):
        log.warning("%s: training the runs one by one in this process", why)
        n_workers = 1
    with _sigterm_as_interrupt():
        # the executor first: a pool's workers start (a fresh interpreter importing torch,
        # seconds) while this process checks the data and models
        pool = (
            _make_executor(
                executor, results_dir, n_workers, workers, address, on_run_start, on_epoch
            )
            if todo
            else None
        )
        try:
            preflight(todo)
        except BaseException:
            if pool is not None:
                pool.close()
            raise
        if on_start:
            on_start(len(todo), n_workers)
        outcomes: dict[str, Outcome] = {}
        stop_signal, full = _run_until_stopped(
            pool, tasks, todo, redo, outcomes, on_outcome, on_wait
        )
        skipped += [r for r, o in outcomes.items() if o.status == "skipped"]
        df = _write_summary(results_dir, folder_plan, full)
    return SweepResult(
        results_dir, plan, outcomes, skipped, df, stop_signal is not None, n_workers, stop_signal
    )


def _check_options(executor: str, workers: int | None) -> None:
    if executor not in EXECUTORS:
        raise BnexpError(
            f"--executor {executor}: unknown executor (expected one of: {', '.join(EXECUTORS)})"
        )
    if workers is not None and workers < 1:
        raise BnexpError(f"--workers {workers}: expected a whole number >= 1")


def _write_plan(results_dir, raw, source, overrides, plan, extend) -> pd.DataFrame:
    """experiment.yaml and plan.csv (bnexp.sweep.folder.write_plan); the plan the folder holds."""
    prepare_results_dir(results_dir)
    try:
        return write_plan(results_dir, raw, source, list(overrides or []), plan, extend=extend)
    except OSError as e:
        if is_storage_error(e):
            raise storage_error(results_dir, e) from None
        raise


def _write_summary(results_dir: Path, folder_plan: pd.DataFrame, full: OSError | None):
    """summary.csv from the runs on disk; StorageError when the folder could not be written
    (during the sweep: `full`, or now)."""
    df = collect_summary(results_dir, folder_plan)
    try:
        ResultsFolder(results_dir).write_summary(df)
    except OSError as e:
        if not is_storage_error(e):
            raise
        full = full or e
    if full is not None:
        raise storage_error(results_dir, full, "; the sweep stopped")
    return df


def _run_until_stopped(pool, tasks, todo, redo, outcomes, on_outcome, on_wait):
    """Hand out every task, until the end or until a signal or a full disk stops the sweep;
    returns (the signal that stopped it or None, the storage OSError that stopped it or None)."""
    if pool is None:
        return None, None
    stop_signal = full = None
    ignored: dict = {}
    try:
        _hand_out(pool, tasks, todo, redo, outcomes, on_outcome, on_wait)
    except KeyboardInterrupt as e:
        stop_signal = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        # One Ctrl-C may arrive as several SIGINTs (`timeout` signals the process and then its
        # group); the shutdown below is bounded by GRACE_S, so further ones are ignored.
        if threading.current_thread() is threading.main_thread():
            ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        pool.stop()
    except _StorageStop as e:
        full = e.error
        pool.stop()
    except OSError as e:  # a claim or a temporary file that could not be written
        if not is_storage_error(e):
            raise
        full = e
        pool.stop()
    finally:
        try:
            pool.close()
        finally:
            for s, previous in ignored.items():
                signal.signal(s, previous)
    return stop_signal, full


def preflight(todo: list[PlannedRun]) -> None:
    """Load each distinct dataset and build each distinct model once, here, before any run starts.

    A problem the user must fix (a missing or corrupt data file, a CNN on vector data) raises
    BnexpError now, as one line and exit 2, instead of being recorded as a failure of every run.
    """
    from bnexp.data import load_dataset
    from bnexp.nn.models import build_model
    from bnexp.training.augment import check_images
    from bnexp.training.device import resolve_device

    checked: set[str] = set()
    for run in todo:
        key = run.config.data.model_dump_json() + run.config.model.model_dump_json()
        if key in checked:
            continue
        checked.add(key)
        resolve_device(run.config.train.device)  # cuda without CUDA: one line, no run started
        data = load_dataset(run.config.data)
        build_model(run.config.model, data.input_shape, data.num_outputs)
        check_images(run.config.data.augment, data)  # data.augment on vector data


def _may_use_cuda(run: PlannedRun) -> bool:
    import torch

    return run.config.train.device == "cuda" or (
        run.config.train.device == "auto" and torch.cuda.is_available()
    )


def _make_executor(kind, results_dir, n_workers, workers_asked, address, on_run_start, on_epoch):
    if kind == "ray":
        return RayExecutor(results_dir, workers_asked, address)
    if n_workers == 1:
        return SerialExecutor(results_dir, on_run_start, on_epoch)
    return PoolExecutor(results_dir, n_workers)


def make_tasks(todo: list[PlannedRun]) -> list[Task]:
    """The units of work: one run each, except that with train.vectorize_seeds the runs of a cell
    that differ only in train.seed form one task, trained as one batched model
    (bnexp.training.vectorize) where it can be; where it cannot, its runs stay separate and a log
    line says why."""
    if not any(r.config.train.vectorize_seeds for r in todo):
        return [[r] for r in todo]
    tasks: list[Task] = []
    for group in group_by_seed(todo):
        if group[0].config.train.vectorize_seeds and len(group) > 1:
            reason = why_not_vectorized([r.config for r in group])
            if reason is None:
                tasks.append(group)
                continue
            log.warning(
                "vectorize_seeds: training %d seeds of a cell one by one: %s", len(group), reason
            )
        tasks.extend([r] for r in group)
    return tasks


def _hand_out(
    pool, tasks: list[Task], todo: list[PlannedRun], redo, outcomes: dict, on_outcome, on_wait
) -> None:
    """Hand tasks to the executor; runs claimed by another process come back "busy" and are
    offered again every POLL_S until that process finishes them (skipped) or dies (resumed
    here). A run that could not write its files ("storage") stops the sweep."""
    by_id = {r.run_id: r for r in todo}
    while tasks:
        busy = []
        for outcome in pool.outcomes(tasks, redo):
            if outcome.status == "busy":
                busy.append(outcome.run_id)
                continue
            if outcome.status == "storage":
                raise _StorageStop(outcome.exception or OSError(outcome.error))
            if outcome.status == "lost":  # recorded as failed: a rerun does not call it missing
                outcome = RunStore(pool.results_dir).record_lost(by_id[outcome.run_id], outcome)
            outcomes[outcome.run_id] = outcome
            if on_outcome:
                on_outcome(outcome)
        if busy:
            if on_wait:
                on_wait(busy)
            time.sleep(POLL_S)
        tasks = [[by_id[r]] for r in busy]


def resume_command(argv: list[str]) -> str:
    """The command line that resumes this sweep: the same one (minus --force, which would redo
    finished runs)."""
    import shlex

    args = [a for a in argv if a != "--force"]
    return " ".join(shlex.quote(a) for a in ["bnexp", *args])

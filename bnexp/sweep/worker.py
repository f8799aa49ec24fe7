"""What a worker does with a task, in whatever process trains it (this one, a pool worker, a
Ray task): claim its runs, train them or skip the finished ones, and record failures.
`execute_run` takes one run, `execute_task` one run or the seeds of a cell trained together.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from bnexp.config import PlannedRun
from bnexp.sweep.store import Outcome, RunStore
from bnexp.training.recorder import RunInterrupted
from bnexp.training.train import train_run


def execute_run(
    results_dir: str | Path,
    run: PlannedRun,
    redo: frozenset[str] = frozenset(),
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
) -> Outcome:
    """Claim `run`, then train it unless it is done or failed (unless `redo` names that state).

    A failure inside the run is recorded in its summary.json and returned, never raised.
    """
    store = RunStore(results_dir)
    t0 = time.perf_counter()
    with store.claim(run.run_id) as claimed:
        if not claimed:
            return Outcome(run.run_id, "busy")
        if not store.ready_to_train(run.run_id, redo):
            return Outcome(run.run_id, "skipped")
        try:
            summary = train_run(
                run.config,
                store.run_dir(run.run_id),
                params=run.params,
                on_progress=on_epoch,
                should_stop=should_stop,
            )
        except RunInterrupted:
            return Outcome(run.run_id, "interrupted", seconds=time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - recorded, and the sweep goes on
            return store.failure_outcome(run, e, time.perf_counter() - t0)
        return Outcome(
            run.run_id,
            "diverged" if summary.diverged else "complete",
            seconds=time.perf_counter() - t0,
            resumed_from_epoch=summary.resumed_from_epoch,
        )


def execute_task(
    results_dir: str | Path,
    task: list[PlannedRun],
    redo: frozenset[str] = frozenset(),
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
) -> list[Outcome]:
    """One run (`execute_run`), or the seeds of a cell trained together as one batched model.

    Each run of a group is claimed first; those another process holds come back "busy", those
    finished are skipped, and the rest train together (one alone trains as usual). A failure is
    recorded in every run of the group. Batched training keeps no checkpoint: a group that is
    interrupted trains again from the start.
    """
    if len(task) == 1:
        return [execute_run(results_dir, task[0], redo, should_stop, on_epoch)]
    from bnexp.training.vectorize import train_seeds

    store = RunStore(results_dir)
    outcomes: list[Outcome] = []
    t0 = time.perf_counter()
    with contextlib.ExitStack() as claims:
        todo = []
        for run in task:
            if not claims.enter_context(store.claim(run.run_id)):
                outcomes.append(Outcome(run.run_id, "busy"))
            elif not store.ready_to_train(run.run_id, redo):
                outcomes.append(Outcome(run.run_id, "skipped"))
            else:
                todo.append(run)
        if len(todo) >= 2:
            try:
                summaries = train_seeds(
                    [r.config for r in todo],
                    [store.run_dir(r.run_id) for r in todo],
                    [r.params for r in todo],
                    on_progress=on_epoch,
                    should_stop=should_stop,
                )
            except RunInterrupted:
                seconds = time.perf_counter() - t0
                return outcomes + [Outcome(r.run_id, "interrupted", seconds=seconds) for r in todo]
            except Exception as e:  # noqa: BLE001 - recorded, and the sweep goes on
                seconds = time.perf_counter() - t0
                return outcomes + [store.failure_outcome(r, e, seconds) for r in todo]
            seconds = (time.perf_counter() - t0) / len(todo)
            return outcomes + [
                Outcome(s.run_id, "diverged" if s.diverged else "complete", seconds=seconds)
                for s in summaries
            ]
    # zero or one run left: released above, so execute_run can claim it again
    return outcomes + [execute_run(results_dir, r, redo, should_stop, on_epoch) for r in todo]

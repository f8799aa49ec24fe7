"""The flow of `bnexp run` and `bnexp.run`, composed once: sweep -> report -> trackers.

The CLI adds its display (progress bars, the printed report) through `Display`'s hooks; the API
adds nothing but its return value. Both get the same loading, run store, executors, report and
trackers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bnexp.config import ExperimentConfig, PlannedRun

if TYPE_CHECKING:
    from bnexp.report import Report
    from bnexp.sweep.runner import SweepResult
    from bnexp.sweep.store import Outcome


@dataclass
class SweepOptions:
    """How to run the sweep (the options `bnexp run` and `bnexp.run` share)."""

    workers: int | None = None  # None: one per core (one for GPU runs)
    executor: str = "local"  # local | ray
    address: str | None = None  # the Ray cluster to join (None: start a local Ray)
    retry_failed: bool = False
    force: bool = False
    extend: bool = False  # add this plan's runs to another plan of the same name
    track: list[str] = field(default_factory=list)  # trackers besides the config's `track:`


@dataclass
class Display:
    """What a caller shows while the sweep runs; every hook is optional."""

    on_start: Callable[[int, int], None] | None = None  # (runs to train, workers)
    on_run_start: Callable[[PlannedRun], None] | None = None  # in-process runs only
    on_epoch: Callable[[int, int], None] | None = None  # (epoch, epochs), in-process runs only
    on_outcome: Callable[[Outcome], None] | None = None
    on_wait: Callable[[list[str]], None] | None = None  # runs claimed by another process


@dataclass
class FlowResult:
    sweep: SweepResult
    report: Report | None  # None: no complete run to report on
    tracked: list[str]  # where each tracker shows the runs (e.g. `mlflow ui ...`)

    @property
    def results_dir(self) -> Path:
        return self.sweep.results_dir


def run_and_report(
    exp: ExperimentConfig,
    raw: dict,
    out: Path,
    *,
    source: str = "<config>",
    overrides: Iterable[str] | None = None,
    options: SweepOptions | None = None,
    display: Display | None = None,
) -> FlowResult:
    """Train every run of `exp` not finished yet, rebuild summary.csv, build the report (also
    after an interrupt: it covers every complete run on disk) and log the runs to the trackers.

    Raises BnexpError for bad input or an unusable results folder (KeyboardInterrupt before any
    run started); an interrupt during the runs is returned (`sweep.interrupted`), not raised.
    """
    from bnexp.sweep.runner import run_experiment
    from bnexp.track import Trackers, with_trackers

    options, display = options or SweepOptions(), display or Display()
    trackers = Trackers(Path(out) / exp.name, with_trackers(exp.track, options.track), exp.name)

    def on_outcome(outcome: Outcome) -> None:
        trackers.log_run(outcome.run_id)
        if display.on_outcome:
            display.on_outcome(outcome)

    sweep = run_experiment(
        exp,
        raw,
        Path(out),
        source=source,
        overrides=list(overrides or []),
        workers=options.workers,
        executor=options.executor,
        address=options.address,
        retry_failed=options.retry_failed,
        force=options.force,
        extend=options.extend,
        on_start=display.on_start,
        on_run_start=display.on_run_start,
        on_epoch=display.on_epoch,
        on_outcome=on_outcome,
        on_wait=display.on_wait,
    )
    report = None
    if not sweep.summary.empty:
        from bnexp.report import build_report  # after the runs: not on the first step's path

        report = build_report(sweep.results_dir)
    trackers.close(interrupted=sweep.interrupted)
    return FlowResult(sweep, report, trackers.where())

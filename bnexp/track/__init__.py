"""Log finished runs to the trackers a group already uses: MLflow and TensorBoard.

Trackers read a run's files, never the training loop: a run is logged once its summary.json says
it is complete (from `run_experiment`'s on_outcome, in the process that drives the sweep), and
`Trackers.close` logs every complete run not logged yet (runs finished by an earlier call or by
another process) and the sweep's report. Logging is idempotent: a run already in a tracker is
skipped, so a resumed or repeated sweep continues its tracker runs instead of duplicating them.

A tracker that fails (package missing, bad URI, server down) is one warning and is switched off
for the rest of the call; training and the results on disk are never touched. The results stay
the record: rerunning the same command later logs what is missing.

Imports only the base (config, errors, io, results); mlflow and tensorboard are imported when a
tracker opens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from filelock import FileLock

from bnexp.config import MlflowTrackConfig, TrackConfig
from bnexp.errors import BnexpError
from bnexp.results import CONFIG, METRICS, SUMMARY, TIMING, ResultsFolder

log = logging.getLogger("bnexp.track")

TRACKERS = ("mlflow", "tensorboard")
# summary.json's numbers that restate the config or the bookkeeping: params and tags, not metrics
NOT_RESULTS = ("batch_size", "lr", "seed", "epochs", "seeds_together", "resumed_from_epoch")


def with_trackers(track: TrackConfig, names: Iterable[str] | None) -> TrackConfig:
    """`track` plus the trackers named on the command line (`--track mlflow`), at their defaults."""
    names = list(names or [])
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise BnexpError(
            f"--track {bad[0]}: unknown tracker (expected one of: {', '.join(TRACKERS)})"
        )
    out = track.model_copy()
    if "mlflow" in names and out.mlflow is None:
        out.mlflow = MlflowTrackConfig()
    if "tensorboard" in names:
        out.tensorboard = True
    return out


# --------------------------------------------------------------------------- a run's files


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; lists stay values ("hidden": [16])."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return {k.removesuffix("."): v for k, v in out.items()}


@dataclass
class RunFiles:
    """What trackers log of one complete run, read from results/<name>/runs/<run_id>/."""

    folder: Path

    @property
    def run_id(self) -> str:
        return self.folder.name

    @cached_property
    def summary(self) -> dict[str, Any]:
        return json.loads((self.folder / SUMMARY).read_text(encoding="utf-8"))

    @property
    def complete(self) -> bool:
        try:
            return self.summary.get("status") == "complete"
        except (OSError, ValueError):
            return False

    @cached_property
    def config(self) -> dict[str, Any]:
        """The resolved run config, flattened to dotted keys."""
        return flatten(yaml.safe_load((self.folder / CONFIG).read_text(encoding="utf-8")) or {})

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """metrics.csv: one row per evaluation (epoch, step, lr, train_loss, ...)."""
        return pd.read_csv(self.folder / METRICS)

    @property
    def params(self) -> dict[str, Any]:
        """The swept keys and their values."""
        return dict(self.summary.get("params") or {})

    @property
    def label(self) -> str:
        """`norm=torch seed=1`, as the progress bar names a run; the run id if nothing is swept."""
        return " ".join(f"{k.split('.')[-1]}={v}" for k, v in self.params.items()) or self.run_id

    def final_metrics(self) -> dict[str, float]:
        """The summary's numbers (final_test_acc, gen_gap, steps_to_target, ...); booleans as 0/1,
        absent values (a target never reached) left out."""
        out = {}
        for key, value in self.summary.items():
            if isinstance(value, bool):
                out[key] = float(value)
            elif isinstance(value, int | float) and key not in NOT_RESULTS:
                out[key] = float(value)
        return out

    def timestamps_ms(self) -> list[int]:
        """One time per metrics row, in ms since the epoch, that is the same every time it is
        read (so a metric logged twice is one point): the run's end (summary.json's mtime)
        minus the wall seconds still to come after that row (timing.csv, when present)."""
        end = (self.folder / SUMMARY).stat().st_mtime
        n = len(self.metrics)
        try:
            wall = pd.read_csv(self.folder / TIMING)["wall_s"].astype(float).tolist()
        except (OSError, KeyError, ValueError):
            wall = []
        if len(wall) != n:
            return [int(end * 1000)] * n
        return [int((end - (wall[-1] - w)) * 1000) for w in wall]

    def files(self) -> list[Path]:
        """The run's records worth keeping beside it: config, summary and every CSV."""
        keep = [self.folder / CONFIG, self.folder / SUMMARY, *sorted(self.folder.glob("*.csv"))]
        return [p for p in keep if p.is_file()]


def complete_runs(results_dir: Path) -> list[RunFiles]:
    """Every complete run of the sweep, in plan.csv's order (runs not in the plan come last)."""
    folder = ResultsFolder(results_dir)
    order = folder.plan_order()
    found = folder.run_ids_on_disk()
    ids = [r for r in order if r in found] + [r for r in found if r not in order]
    return [r for r in (RunFiles(folder.run(rid)) for rid in ids) if r.complete]


# --------------------------------------------------------------------------- the trackers


class Trackers:
    """The trackers a sweep logs to. Every call is guarded: a failure warns once and switches
    that tracker off; nothing here ever raises into the sweep."""

    def __init__(self, results_dir: str | Path, track: TrackConfig, experiment: str):
        self.results_dir = Path(results_dir)
        self.active: list[Any] = []
        # one process logs at a time (no duplicate runs)
        self._lock = FileLock(str(ResultsFolder(self.results_dir).track_lock))
        if track.mlflow is not None:
            self._open("mlflow", track.mlflow, experiment)
        if track.tensorboard:
            self._open("tensorboard", None, experiment)

    def _open(self, name: str, cfg: Any, experiment: str) -> None:
        try:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            with self._lock:
                if name == "mlflow":
                    from bnexp.track.mlflow import MlflowTracker

                    self.active.append(MlflowTracker(self.results_dir, cfg, experiment))
                else:
                    from bnexp.track.tensorboard import TensorBoardTracker

                    self.active.append(TensorBoardTracker(self.results_dir))
        except Exception as e:  # noqa: BLE001 - any tracker failure is a warning, never a stop
            self._warn(name, e)

    def _warn(self, name: str, e: BaseException) -> None:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, ImportError):
            msg = f"{msg} (install it with: pip install 'bnexp[{name}]')"
        log.warning(
            "tracking: %s is off for this call: %s. Training goes on and the results stay in %s; "
            "rerun the same command once it works to log the runs.",
            name,
            msg,
            self.results_dir,
        )

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self.active):
            try:
                with self._lock:
                    getattr(tracker, method)(*args)
            except Exception as e:  # noqa: BLE001
                self.active.remove(tracker)
                self._warn(tracker.name, e)

    def log_run(self, run_id: str) -> None:
        """Log one run if it is complete (call it from run_experiment's on_outcome)."""
        run = RunFiles(ResultsFolder(self.results_dir).run(run_id))
        if self.active and run.complete:
            self._each("log_run", run)

    def close(self, interrupted: bool = False) -> None:
        """Log every complete run not logged yet, then the sweep's own files; end the trackers."""
        if not self.active:
            return
        runs = complete_runs(self.results_dir)
        for run in runs:
            self._each("log_run", run)
        self._each("finish", interrupted, runs)

    def where(self) -> list[str]:
        """The commands that show the logged runs (e.g. `mlflow ui --backend-store-uri ...`)."""
        return [t.where() for t in self.active]

"""bnexp from Python: run an experiment, load its results as DataFrames, validate a config.

    import bnexp
    res = bnexp.run("configs/quickstart.yaml", overrides=["train.epochs=5"])
    res.summary                   # one row per complete run (summary.csv)
    res.metrics()                 # every evaluation of every run, with its swept keys
    res.tables["speedup"]         # the report's tables (tables/*.csv)
    res.claims                    # the report's verdicts as data

`run` is `bnexp run` without the terminal: the same loading, overrides, run store (resume, skip,
claims), executors, report and trackers. Every config problem is one `ConfigError` whose
`.details` lists each problem as data (file, line, key, message).
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bnexp.config import (
    ConfigError,
    ExperimentConfig,
    PlannedRun,
    Source,
    apply_overrides,
    expand,
    load_experiment,
    parse_yaml,
    resolve_factory_files,
    validate_experiment,
)
from bnexp.errors import BnexpError, RunsFailed
from bnexp.results import METRICS, ResultsFolder

log = logging.getLogger("bnexp")

ConfigLike = str | Path | Mapping[str, Any]
# claims.json (written by the report): one object per claim with these keys
CLAIM_COLUMNS = ["claim", "verdict", "text", "norm", "cell", "estimate", "ci_low", "ci_high", "n"]


# --------------------------------------------------------------------------- configs


def load_config(
    config: ConfigLike, overrides: Iterable[str] | None = None
) -> tuple[ExperimentConfig, dict, str]:
    """(validated experiment, raw mapping after overrides, where it came from).

    config: a path to a YAML file, YAML text (anything with a newline or a `key: value`), or a
    dict. overrides: `dotted.key=value` strings, as `--set` takes them.
    """
    overrides = list(overrides or [])
    if isinstance(config, Path) or (isinstance(config, str) and not _looks_like_yaml(config)):
        exp, raw = load_experiment(Path(config), overrides)
        return exp, raw, str(config)
    if isinstance(config, str):
        source, (raw, lines) = "<yaml>", parse_yaml(config, "<yaml>")
    elif isinstance(config, Mapping):
        source, raw, lines = "<dict>", copy.deepcopy(dict(config)), {}
    else:
        raise TypeError(
            f"config: expected a path, YAML text or a dict, found {type(config).__name__}"
        )
    touched, problems = apply_overrides(raw, overrides)
    resolve_factory_files(raw, Path.cwd())  # no file to be relative to: the working directory
    return validate_experiment(raw, Source(source, lines, touched), problems), raw, source


def _looks_like_yaml(text: str) -> bool:
    if "\n" in text:
        return True
    if text.endswith((".yaml", ".yml")) or Path(text).exists():
        return False
    return ": " in text or text.lstrip().startswith("{")


def validate(config: ConfigLike, overrides: Iterable[str] | None = None) -> list[PlannedRun]:
    """The plan (one PlannedRun per run: run_id, swept params, resolved config); runs nothing.

    Raises ConfigError carrying every problem at once: `err.details` is a list of
    bnexp.errors.Problem(file, line, key, message, text).
    """
    exp, _, _ = load_config(config, overrides)
    return expand(exp)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Results:
    """A results folder (results/<name>/) read as DataFrames. Each property reads the files
    again, so a Results of a sweep still running shows its progress."""

    path: Path

    @property
    def folder(self) -> ResultsFolder:
        return ResultsFolder(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def plan(self) -> pd.DataFrame:
        """plan.csv: run_id and every swept key, one row per planned run."""
        return self.folder.read_plan()

    @property
    def summary(self) -> pd.DataFrame:
        """summary.csv: one row per complete run (bnexp.results.SUMMARY_COLUMNS + swept keys)."""
        summary = self.folder.read_summary()
        return summary if summary is not None else pd.DataFrame(columns=["run_id"])

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The report's tables by name (speedup, regularization, ...): tables/<name>.csv."""
        return self.folder.read_tables()

    def metrics(self, run_id: str | Iterable[str] | None = None) -> pd.DataFrame:
        """Every evaluation row (metrics.csv) of the given runs (default: all with a metrics.csv,
        runs in progress included), long format: run_id, the swept keys, then epoch, step, lr,
        train_loss, train_acc, test_loss, test_acc."""
        plan = self.plan
        known = list(dict.fromkeys(plan["run_id"]))  # a baseline run may serve several cells
        wanted = set(known if run_id is None else _ids(run_id, known))
        keys = [c for c in plan.columns if c != "run_id"]
        frames = []
        for planned in plan.to_dict("records"):  # one block per plan row (per cell it serves)
            rid = planned["run_id"]
            path = self.folder.run_file(rid, METRICS)
            if rid not in wanted or not path.exists():
                continue
            frame = pd.read_csv(path)
            for key in reversed(keys):
                frame.insert(0, key, planned[key])
            frame.insert(0, "run_id", rid)
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=["run_id", *keys])
        return pd.concat(frames, ignore_index=True)

    @property
    def report_path(self) -> Path | None:
        """report.md, written by the report after every sweep (None before that)."""
        path = self.folder.report_md
        return path if path.exists() else None

    @property
    def claims(self) -> pd.DataFrame:
        """The report's verdicts (claims.json), one row per claim: claim, verdict, text, norm,
        cell (dict of the cell's keys), estimate, ci_low, ci_high, n. Empty before a report."""
        frame = pd.DataFrame(self.folder.read_claims())
        extra = [c for c in frame.columns if c not in CLAIM_COLUMNS]
        return frame.reindex(columns=CLAIM_COLUMNS + extra)

    @property
    def failed(self) -> dict[str, str]:
        """run id -> error, for the runs of the plan recorded as failed (read through the run
        store: a damaged summary.json is a warning, not an error here)."""
        from bnexp.sweep.store import RunStore

        store, out = RunStore(self.path), {}
        for rid in dict.fromkeys(self.plan["run_id"]):
            s = store.summary(rid)
            if s is not None and s["status"] == "failed":
                out[rid] = s.get("error", "")
        return out

    def __repr__(self) -> str:
        return f"Results({str(self.path)!r}: {len(self.summary)} of {len(self.plan)} runs complete)"


def _ids(run_id: str | Iterable[str], known: list[str]) -> list[str]:
    """Run ids, each given whole or as a unique prefix (as `bnexp repro` takes them)."""
    out = []
    for rid in [run_id] if isinstance(run_id, str) else list(run_id):
        matches = [k for k in known if k.startswith(rid)]
        if len(matches) != 1:
            found = "no run" if not matches else f"{len(matches)} runs ({', '.join(matches[:5])})"
            raise BnexpError(f"run id {rid!r}: {found} in plan.csv match (expected exactly one)")
        out.append(matches[0])
    return out


def load(results_dir: str | Path) -> Results:
    """The results folder written by `bnexp run` / `bnexp.run` (e.g. results/quickstart)."""
    path = Path(results_dir)
    ResultsFolder(path).read_plan()  # BnexpError (one line) when it is not a results folder
    return Results(path)


# --------------------------------------------------------------------------- running


def run(
    config: ConfigLike,
    *,
    overrides: Iterable[str] | None = None,
    out: str | Path = "results",
    workers: int | None = None,
    track: Iterable[str] | None = None,
    progress: bool = False,
    executor: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    force: bool = False,
    extend: bool = False,
) -> Results:
    """Run an experiment (every run of its sweep not finished yet), write summary.csv and the
    report, and return the results folder: `bnexp run` without the terminal.

    overrides: `dotted.key=value` strings (`train.lr=0.1`, `sweep.train.seed=[0,1]`).
    track: extra trackers to log to ("mlflow", "tensorboard"), besides the config's `track:`.
    progress: one line per finished run on stderr. A rerun resumes, as the CLI's does.
    executor, address: "local" or "ray", and the Ray cluster to join. extend: the results folder
    may hold another plan of this name; add this plan's runs to it (as `--extend`).
    Works from a notebook, `python -c`, `python -` and a script without a main guard (its runs
    then train one by one in this process: workers would run the script again).
    Raises ConfigError for a bad config, BnexpError for other bad input, RunsFailed (with the
    first run's error) when every run of this call failed, KeyboardInterrupt when interrupted
    (finished runs are kept); when only some fail, they are logged and listed in `.failed`.
    """
    from bnexp.flow import Display, SweepOptions, run_and_report

    exp, raw, source = load_config(config, overrides)
    done = 0

    def on_outcome(o) -> None:
        nonlocal done
        done += 1
        if progress:
            resumed = (
                f" (resumed from epoch {o.resumed_from_epoch})" if o.resumed_from_epoch else ""
            )
            print(f"[{done}] {o.run_id} {o.status}{resumed}", file=sys.stderr, flush=True)

    options = SweepOptions(
        workers, executor, address, retry_failed, force, extend, track=list(track or [])
    )
    flow = run_and_report(
        exp,
        raw,
        Path(out),
        source=source,
        overrides=overrides,
        options=options,
        display=Display(on_outcome=on_outcome),
    )
    result = flow.sweep
    if result.interrupted:
        raise KeyboardInterrupt(f"{result.results_dir}: interrupted; finished runs are kept")
    failed = result.failed_here
    if failed and not result.ran:
        rid, error = next(iter(failed.items()))
        raise RunsFailed(
            f"{result.results_dir}: every run failed ({len(failed)}); the first, {rid}: {error}"
        )
    if result.failed:
        log.warning("%d run(s) failed: %s", len(result.failed), ", ".join(result.failed))
    return Results(result.results_dir)


__all__ = ["ConfigError", "Results", "RunsFailed", "load", "load_config", "run", "validate"]

"""Plan -> runs -> results folder.

results/<name>/
  experiment.yaml            the file as given, plus overrides
  plan.csv                   run_id + every swept key, one row per run
  runs/<run_id>/...          written by train.train_run; summary.json last = complete
  summary.csv                one row per complete run, rebuilt from the summary.json files
A run whose summary.json exists is skipped, so rerunning the same experiment resumes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from bnexp.config import ExperimentConfig, PlannedRun, expand
from bnexp.io import atomic_write_csv, atomic_write_text
from bnexp.train import RunSummary, train_run
from bnexp.vectorize import train_cell_seeds

SUMMARY_COLUMNS = [
    "run_id", "norm", "batch_size", "lr", "seed",
    "final_train_acc", "final_test_acc", "final_train_loss", "final_test_loss",
    "gen_gap", "loss_gap", "best_test_acc",
    "steps_to_target", "epochs_to_target", "time_to_target_s",
    "diverged", "diverged_step", "steps", "epochs", "wall_s", "train_s", "eval_s", "device",
    "peak_rss_mb", "seeds_together",
]


@dataclass
class SweepResult:
    results_dir: Path
    plan: list[PlannedRun]
    ran: list[str]  # run ids trained by this call
    skipped: list[str]  # run ids already complete
    summary: pd.DataFrame


def plan_frame(plan: list[PlannedRun]) -> pd.DataFrame:
    return pd.DataFrame([{"run_id": r.run_id, **r.params} for r in plan], columns=["run_id", *(plan[0].params if plan else [])])


def write_experiment(results_dir: Path, raw: dict, source: str, overrides: list[str], plan: list[PlannedRun]) -> None:
    header = f"# bnexp experiment, from {source}" + "".join(f"\n#   --set {o}" for o in overrides)
    atomic_write_text(results_dir / "experiment.yaml", header + "\n" + yaml.safe_dump(raw, sort_keys=False))
    atomic_write_csv(results_dir / "plan.csv", plan_frame(plan))


def is_complete(run_dir: Path) -> bool:
    return (run_dir / "summary.json").exists()


def collect_summary(results_dir: Path, plan: list[PlannedRun]) -> pd.DataFrame:
    """summary.csv's table: one row per complete run of the plan, swept keys as extra columns."""
    rows = []
    for run in plan:
        path = results_dir / "runs" / run.run_id / "summary.json"
        if not path.exists():
            continue
        s = json.loads(path.read_text())
        row = {k: s.get(k) for k in SUMMARY_COLUMNS}
        row.update({k: v for k, v in s.get("params", {}).items() if k not in row})
        rows.append(row)
    extra = list(plan[0].params) if plan else []
    columns = SUMMARY_COLUMNS + [k for k in extra if k not in SUMMARY_COLUMNS]
    df = pd.DataFrame(rows, columns=columns)
    df["steps_to_target"] = df["steps_to_target"].astype("Int64")
    return df


def run_experiment(
    exp: ExperimentConfig,
    raw: dict,
    out_root: Path,
    source: str = "<config>",
    overrides: list[str] | None = None,
    on_run_start: Callable[[PlannedRun, int, int], None] | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """Train every planned run that is not complete yet; rebuild summary.csv at the end."""
    results_dir = Path(out_root) / exp.name
    plan = expand(exp)
    write_experiment(results_dir, raw, source, list(overrides or []), plan)
    ran, skipped = [], []
    grouped: set[str] = set()  # vectorize_seeds: runs already trained with, or tried in, their cell
    for i, run in enumerate(plan):
        run_dir = results_dir / "runs" / run.run_id
        if is_complete(run_dir):
            if run.run_id not in ran:
                skipped.append(run.run_id)
            continue
        if on_run_start:
            on_run_start(run, i, len(plan))
        if run.config.train.vectorize_seeds and run.run_id not in grouped:  # issue 7 hook
            together, considered = train_cell_seeds(run, plan, results_dir, on_progress=on_epoch)
            grouped.update(considered)
            ran.extend(together)
            if together:
                continue
        summary: RunSummary = train_run(run.config, run_dir, params=run.params, on_progress=on_epoch)
        ran.append(summary.run_id)
    df = collect_summary(results_dir, plan)
    atomic_write_csv(results_dir / "summary.csv", df)
    return SweepResult(results_dir, plan, ran, skipped, df)

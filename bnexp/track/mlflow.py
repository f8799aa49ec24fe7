"""MLflow: one parent run per sweep (results folder), one child run per bnexp run.

A child holds the resolved config flattened to dotted params (train.lr, model.norm, ...), every
metrics.csv row as step-indexed metrics (x = optimizer step), the summary's numbers as final
metrics, and the run's CSVs, config.yaml and summary.json as artifacts. The parent holds the
sweep's files: experiment.yaml, plan.csv, summary.csv, report.md, tables/ and plots/.

Identity lives in tags, so a resumed sweep finds its runs again: the parent has
`bnexp.role = sweep` and `bnexp.results_dir = <absolute path>`, a child `bnexp.run_id`. A child
already FINISHED is never logged again; one left unfinished (logging interrupted) is completed in
place, its metrics logged again with the same timestamps, which the SQL store de-duplicates.

The default store is SQLite beside the results (sqlite:///<results>/<name>/mlflow.db, artifacts in
<results>/<name>/mlartifacts/), so `mlflow ui --backend-store-uri <that uri>` shows the sweep with
nothing else running; any tracking URI (an MLflow server, Databricks, ...) works the same.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from bnexp.config import MlflowTrackConfig
from bnexp.results import ResultsFolder
from bnexp.results.folder import MLFLOW_ARTIFACTS, REPORT_FOLDERS, SWEEP_FILES

PARENT, RUN_ID, RESULTS_DIR = "bnexp.role", "bnexp.run_id", "bnexp.results_dir"
BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAM_BATCH = 100  # and of params
PARAM_MAX = 6000  # characters of one param value


def default_uri(results_dir: Path) -> str:
    return f"sqlite:///{ResultsFolder(results_dir).mlflow_db.resolve()}"


def _quiet() -> None:
    """MLflow's store setup logs migrations at INFO; a dead server is retried for minutes by
    default. Keep the sweep's output clean and a failure quick (a user's own setting wins)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    import mlflow  # noqa: F401 - sets its loggers' levels on import: quieten them after that

    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


class MlflowTracker:
    name = "mlflow"

    def __init__(self, results_dir: Path, cfg: MlflowTrackConfig, experiment: str):
        _quiet()
        from mlflow.tracking import (
            MlflowClient,
        )  # ImportError: the caller's warning names the extra

        self.results_dir = Path(results_dir)
        self.uri = cfg.tracking_uri or default_uri(self.results_dir)
        self.client = MlflowClient(tracking_uri=self.uri)
        name = cfg.experiment or experiment
        found = self.client.get_experiment_by_name(name)
        if found is None:
            self.experiment_id = self.client.create_experiment(name, self._artifact_location())
        else:
            self.experiment_id = found.experiment_id
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(self.experiment_id)
        self.parent = self._parent(experiment)
        # run id -> (MLflow run id, status) of the children already in the store
        self.children = self._find_children()

    def _find_children(self, also: str = "") -> dict[str, tuple[str, str]]:
        runs = self._search(f"tags.`mlflow.parentRunId` = '{self.parent}'{also}")
        return {
            r.data.tags[RUN_ID]: (r.info.run_id, r.info.status)
            for r in runs
            if RUN_ID in r.data.tags
        }

    def _artifact_location(self) -> str | None:
        """Artifacts beside a local SQLite store; None lets a server choose its own."""
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri.removeprefix("sqlite:///"))
            return (db.parent / MLFLOW_ARTIFACTS).resolve().as_uri()
        return None

    def _search(self, filter_string: str) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string, max_results=1000, page_token=token
            )
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def _parent(self, experiment: str) -> str:
        """The sweep's parent run: found again by its results folder, else created."""
        where = str(self.results_dir.resolve())
        for r in self._search(f"tags.`{PARENT}` = 'sweep'"):
            if r.data.tags.get(RESULTS_DIR) == where:
                if r.info.status != "RUNNING":
                    self.client.update_run(r.info.run_id, status="RUNNING")
                return r.info.run_id
        run = self.client.create_run(
            self.experiment_id,
            tags={PARENT: "sweep", RESULTS_DIR: where, "bnexp.experiment": experiment},
            run_name=experiment,
        )
        return run.info.run_id

    def log_run(self, run: Any) -> None:
        """Log one complete run (a bnexp.track.RunFiles) as a child of the sweep's run."""
        from mlflow.entities import Metric, Param

        if run.run_id not in self.children:  # another process on this folder may have logged it
            self.children.update(self._find_children(f" and tags.`{RUN_ID}` = '{run.run_id}'"))
        mlflow_id, status = self.children.get(run.run_id, (None, None))
        if status == "FINISHED":
            return
        if mlflow_id is None:
            tags = {"mlflow.parentRunId": self.parent, RUN_ID: run.run_id}
            tags.update({f"bnexp.{k}": str(v) for k, v in run.params.items()})
            mlflow_id = self.client.create_run(
                self.experiment_id, tags=tags, run_name=run.label
            ).info.run_id
            self.children[run.run_id] = (mlflow_id, "RUNNING")
        params = [Param(k, _param_value(v)) for k, v in sorted(run.config.items())]
        for i in range(0, len(params), PARAM_BATCH):
            self.client.log_batch(mlflow_id, params=params[i : i + PARAM_BATCH])

        rows, times = run.metrics, run.timestamps_ms()
        metrics = [
            Metric(col, float(row[col]), times[i], int(row["step"]))
            for i, (_, row) in enumerate(rows.iterrows())
            for col in rows.columns
            if col != "step"
        ]
        steps = int(run.summary.get("steps") or (rows["step"].iloc[-1] if len(rows) else 0))
        end = times[-1] if times else 0
        metrics += [Metric(k, v, end, steps) for k, v in run.final_metrics().items()]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(mlflow_id, metrics=metrics[i : i + BATCH])
        for path in run.files():
            self.client.log_artifact(mlflow_id, str(path))
        self.client.set_terminated(mlflow_id, "FINISHED", end_time=end or None)
        self.children[run.run_id] = (mlflow_id, "FINISHED")

    def finish(self, interrupted: bool, runs: list[Any]) -> None:
        """The sweep's files on the parent run, which ends FINISHED (KILLED when interrupted)."""
        root = self.results_dir
        for name in SWEEP_FILES:
            if (root / name).is_file():
                self.client.log_artifact(self.parent, str(root / name))
        for folder in REPORT_FOLDERS:
            if (root / folder).is_dir() and any((root / folder).iterdir()):
                self.client.log_artifacts(self.parent, str(root / folder), folder)
        self.client.set_terminated(self.parent, "KILLED" if interrupted else "FINISHED")

    def where(self) -> str:
        return f"mlflow ui --backend-store-uri {self.uri}"


def _param_value(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= PARAM_MAX else text[: PARAM_MAX - 3] + "..."

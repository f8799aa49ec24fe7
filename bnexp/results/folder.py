"""The results folder of one experiment, results/<name>/: every file name, every path, and the
reads and writes of the sweep-level files. Everything else asks this module; no other module
spells a file name of the folder.

results/<name>/
  experiment.yaml           the file as given, plus overrides (and earlier plans with --extend)
  plan.csv                  run_id + every swept key under its dotted name, one row per run
  runs/<run_id>/
    config.yaml             the resolved config
    metrics.csv             one row per evaluation (METRIC_COLUMNS); reproducible bytes
    timing.csv              one row per evaluation (TIMING_COLUMNS); machine-dependent
    estimates.csv           with measure.eval_subset: subset estimates between evaluations
    probes.csv, bn_noise.csv  the shift probe and the BN-noise measurements
    checkpoint.pt           while the run is in progress
    .lock, claim.json       the claim of the process training it (bnexp.sweep.store)
    summary.json            written last, atomically: its presence means the run is finished
  summary.csv               one row per complete run, rebuilt from the summary.json files
  tables/<name>.csv, plots/<name>.png, claims.json, report.md, report.html   the report
  noise/bn_noise.csv        `bnexp noise`: the BN noise at initialization
  mlflow.db, mlartifacts/, tensorboard/, .track.lock                        the trackers

One rule for the cells of plan.csv and summary.csv (`read_table`): run ids are strings, an empty
cell is missing (NaN), every other cell is its value ("none" and "None" stay strings). A cell is
empty where a run of an extended plan does not sweep that key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnexp.errors import BnexpError
from bnexp.io import atomic_write_csv, atomic_write_text

if TYPE_CHECKING:  # pandas is imported where a table is read or written
    import pandas as pd

# the folder's own files
EXPERIMENT = "experiment.yaml"
PLAN = "plan.csv"
SUMMARY_CSV = "summary.csv"
CLAIMS = "claims.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
TABLES = "tables"
PLOTS = "plots"
RUNS = "runs"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"  # beside a local SQLite MLflow store
TENSORBOARD = "tensorboard"
NOISE_AT_INIT = "noise"  # `bnexp noise`: the BN noise of every run's model at initialization
TRACK_LOCK = ".track.lock"  # one process logs to the trackers at a time
# a run's files (runs/<run_id>/)
CONFIG = "config.yaml"
METRICS = "metrics.csv"
TIMING = "timing.csv"
ESTIMATES = "estimates.csv"
PROBES = "probes.csv"
BN_NOISE = "bn_noise.csv"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
CLAIM = "claim.json"
RUN_LOCK = ".lock"

# the sweep-level files a tracker keeps beside its parent run, and the report's folders
SWEEP_FILES = (EXPERIMENT, PLAN, SUMMARY_CSV, REPORT_MD, REPORT_HTML, CLAIMS)
REPORT_FOLDERS = (TABLES, PLOTS)

_RUN_ID = re.compile(r"^[0-9a-f]{10}$")
_REWRITE = "rerun `bnexp run` with the experiment file to rewrite it"
_NOT_RESULTS = "expected a results folder written by `bnexp run`, e.g. results/quickstart"


# pandas.read_csv's options for the folder's one rule for cells (run ids as text, only an empty
# cell missing); for tables bnexp writes itself, where a missing number is an empty cell
CELL_RULE: dict[str, Any] = {"dtype": {"run_id": str}, "keep_default_na": False, "na_values": [""]}


def read_table(path: Path) -> pd.DataFrame:
    """plan.csv, summary.csv or a report table, under the folder's one rule for cells."""
    import pandas as pd

    return pd.read_csv(path, **CELL_RULE)


def is_blank(value: object) -> bool:
    """A cell `read_table` reads as missing."""
    return value is None or (isinstance(value, float) and value != value)


class ResultsFolder:
    """results/<name>/: the paths of its files and the reads and writes of the sweep's own files
    (a run's files are written by bnexp.training and bnexp.sweep.store through `run_file`)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ResultsFolder({str(self.root)!r})"

    # ---------------------------------------------------------------- paths

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def experiment(self) -> Path:
        return self.root / EXPERIMENT

    @property
    def plan_csv(self) -> Path:
        return self.root / PLAN

    @property
    def summary_csv(self) -> Path:
        return self.root / SUMMARY_CSV

    @property
    def claims_json(self) -> Path:
        return self.root / CLAIMS

    @property
    def report_md(self) -> Path:
        return self.root / REPORT_MD

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def tables(self) -> Path:
        return self.root / TABLES

    @property
    def plots(self) -> Path:
        return self.root / PLOTS

    @property
    def runs(self) -> Path:
        return self.root / RUNS

    @property
    def mlflow_db(self) -> Path:
        return self.root / MLFLOW_DB

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def noise_at_init(self) -> Path:
        return self.root / NOISE_AT_INIT / BN_NOISE

    @property
    def track_lock(self) -> Path:
        return self.root / TRACK_LOCK

    def run(self, rid: str) -> Path:
        """runs/<rid>/."""
        return self.runs / str(rid)

    def run_file(self, rid: str, name: str) -> Path:
        """runs/<rid>/<name>, name one of this module's run file names."""
        return self.run(rid) / name

    def table(self, name: str) -> Path:
        return self.tables / f"{name}.csv"

    def plot(self, name: str) -> Path:
        return self.plots / f"{name}.png"

    def run_ids_on_disk(self) -> list[str]:
        """The run folders present, sorted."""
        return sorted(p.name for p in self.runs.glob("*") if p.is_dir())

    # ---------------------------------------------------------------- plan.csv

    def has_plan(self) -> bool:
        return self.plan_csv.exists()

    def read_plan(self) -> pd.DataFrame:
        """plan.csv; BnexpError (one line) when it is absent, empty, cut short or not a plan."""
        import pandas as pd

        path = self.plan_csv
        if not self.root.is_dir():
            raise BnexpError(f"{self.root}: not a folder ({_NOT_RESULTS})")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BnexpError(f"{self.root}: no {PLAN} here ({_NOT_RESULTS})") from None
        except OSError as e:
            raise BnexpError(f"{path}: cannot read it ({e.strerror or e})") from None
        if not data.strip():
            raise BnexpError(f"{path}: the file is empty (damaged?); {_REWRITE}")
        if not data.endswith(b"\n"):  # pandas ends every row with one: the file was cut short
            raise BnexpError(f"{path}: the file ends mid-row (cut short?); {_REWRITE}")
        try:
            plan = read_table(path)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BnexpError(f"{path}: not a readable plan ({reason}); {_REWRITE}") from None
        if "run_id" not in plan.columns:
            found = ", ".join(map(str, plan.columns))
            raise BnexpError(f"{path}: no run_id column (found {found}); {_REWRITE}")
        for i, rid in enumerate(plan["run_id"]):
            if not _RUN_ID.match(str(rid)):
                raise BnexpError(
                    f"{path}:{i + 2}: {str(rid)[:40]!r} is not a run id (10 hex digits); {_REWRITE}"
                )
        return plan

    def plan_order(self) -> list[str]:
        """The run ids of plan.csv in order ([] without a readable one)."""
        try:
            return list(dict.fromkeys(self.read_plan()["run_id"]))
        except BnexpError:
            return []

    def write_plan(self, plan: pd.DataFrame, experiment_text: str) -> None:
        atomic_write_text(self.experiment, experiment_text)
        atomic_write_csv(self.plan_csv, plan)

    def read_experiment(self) -> str | None:
        try:
            return self.experiment.read_text()
        except (OSError, UnicodeDecodeError):
            return None

    # ---------------------------------------------------------------- summary.csv

    def read_summary(self) -> pd.DataFrame | None:
        """summary.csv, None when there is none yet."""
        return read_table(self.summary_csv) if self.summary_csv.exists() else None

    def write_summary(self, df: pd.DataFrame) -> None:
        atomic_write_csv(self.summary_csv, df)

    def summary_damaged(self) -> bool:
        """summary.csv is there but empty or cut short."""
        try:
            text = self.summary_csv.read_bytes()
        except OSError:
            return False
        return not text.strip() or not text.endswith(b"\n")

    # ---------------------------------------------------------------- the report

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        atomic_write_csv(self.table(name), frame)

    def read_tables(self) -> dict[str, pd.DataFrame]:
        return {p.stem: read_table(p) for p in sorted(self.tables.glob("*.csv"))}

    def write_claims(self, claims: list[dict[str, Any]]) -> None:
        atomic_write_text(self.claims_json, json.dumps(claims, indent=2, ensure_ascii=False) + "\n")

    def read_claims(self) -> list[dict[str, Any]]:
        """claims.json ([] before a report)."""
        if not self.claims_json.exists():
            return []
        return json.loads(self.claims_json.read_text(encoding="utf-8"))

    def write_report(self, markdown: str, html: str) -> None:
        atomic_write_text(self.report_md, markdown)
        atomic_write_text(self.report_html, html)

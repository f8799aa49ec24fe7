"""How far a sweep is, read from its results folder only (`bnexp status`): no torch, no writes.

`read_plan` reads plan.csv and refuses a damaged one with one line; `sweep_status` counts, per
cell (every swept key except the seed), the runs in each state of the run store, diverged runs
counted apart among the done ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bnexp.errors import BnexpError
from bnexp.sweep.store import RunStore

# the columns of `bnexp status`, in order: the run store's states, diverged after done
COLUMNS = ("done", "diverged", "failed", "damaged", "running", "partial", "missing")
_RUN_ID = re.compile(r"^[0-9a-f]{10}$")
_REWRITE = "rerun `bnexp run` with the experiment file to rewrite it"


def read_plan(results: Path) -> pd.DataFrame:
    """plan.csv of a results folder, run ids as strings; BnexpError (one line) when it is absent,
    empty, cut short or not a plan."""
    path = Path(results) / "plan.csv"
    if not Path(results).is_dir():
        raise BnexpError(
            f"{results}: not a folder (expected a results folder written by `bnexp run`, "
            "e.g. results/quickstart)"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BnexpError(
            f"{results}: no plan.csv here (expected a results folder written by `bnexp run`, "
            "e.g. results/quickstart)"
        ) from None
    except OSError as e:
        raise BnexpError(f"{path}: cannot read it ({e.strerror or e})") from None
    if not data.strip():
        raise BnexpError(f"{path}: the file is empty (damaged?); {_REWRITE}")
    if not data.endswith(b"\n"):  # pandas ends every row with one: the file was cut short
        raise BnexpError(f"{path}: the file ends mid-row (cut short?); {_REWRITE}")
    try:
        plan = pd.read_csv(path, dtype={"run_id": str}, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BnexpError(f"{path}: not a readable plan ({reason}); {_REWRITE}") from None
    if "run_id" not in plan.columns:
        raise BnexpError(
            f"{path}: no run_id column (found {', '.join(map(str, plan.columns))}); {_REWRITE}"
        )
    for i, rid in enumerate(plan["run_id"]):
        if not _RUN_ID.match(str(rid)):
            raise BnexpError(
                f"{path}:{i + 2}: {str(rid)[:40]!r} is not a run id (10 hex digits); {_REWRITE}"
            )
    return plan


@dataclass
class SweepStatus:
    results: Path
    keys: list[str]  # the swept keys that make a cell (all but train.seed)
    cells: dict[tuple, dict[str, int]]  # cell values -> state -> runs
    totals: dict[str, int]
    runs: int
    notes: list[str] = field(default_factory=list)  # damaged runs and files, one line each

    @property
    def finished(self) -> bool:
        """Every run done or failed: nothing left for a sweep to do."""
        return self.totals["done"] + self.totals["failed"] == self.runs


def sweep_status(results: Path) -> SweepStatus:
    results = Path(results)
    plan = read_plan(results)
    store = RunStore(results)
    keys = [c for c in plan.columns if c not in ("run_id", "train.seed")]
    cells: dict[tuple, dict[str, int]] = {}
    totals = dict.fromkeys(COLUMNS, 0)
    notes = []
    for _, row in plan.iterrows():
        rid = row["run_id"]
        state = store.state(rid, warn=False)  # said in the notes
        counts = cells.setdefault(tuple(row[k] for k in keys), dict.fromkeys(COLUMNS, 0))
        found = [state]
        if state == "done" and (store.read_summary(rid)[0] or {}).get("diverged"):
            found.append("diverged")
        if state == "damaged":
            notes.append(
                f"run {rid}: {store.read_summary(rid)[1]}; the next `bnexp run` retrains it"
            )
        for s in found:
            counts[s] += 1
            totals[s] += 1
    summary_csv = results / "summary.csv"
    if summary_csv.exists():
        text = summary_csv.read_bytes()
        if not text.strip() or not text.endswith(b"\n"):
            notes.append(
                f"{summary_csv}: empty or cut short; the next `bnexp run` rebuilds it from the runs"
            )
    return SweepStatus(results, keys, cells, totals, len(plan), notes)

"""How far a sweep is, read from its results folder only (`bnexp status`): no torch, no writes.

`sweep_status` reads the plan through bnexp.results (a damaged one is refused with one line) and
counts, per cell (every swept key except the seed), the runs in each state of the run store,
diverged runs counted apart among the done ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bnexp.results import ResultsFolder, is_blank
from bnexp.sweep.store import RunStore

# the columns of `bnexp status`, in order: the run store's states, diverged after done
COLUMNS = ("done", "diverged", "failed", "damaged", "running", "partial", "missing")


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
    plan = ResultsFolder(results).read_plan()
    store = RunStore(results)
    keys = [c for c in plan.columns if c not in ("run_id", "train.seed")]
    cells: dict[tuple, dict[str, int]] = {}
    totals = dict.fromkeys(COLUMNS, 0)
    notes = []
    for _, row in plan.iterrows():
        rid = row["run_id"]
        state = store.state(rid, warn=False)  # said in the notes
        # an empty cell (NaN, never equal to itself) is None: one cell for every run that has it
        cell = tuple(None if is_blank(row[k]) else row[k] for k in keys)
        counts = cells.setdefault(cell, dict.fromkeys(COLUMNS, 0))
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
    folder = ResultsFolder(results)
    if folder.summary_damaged():
        notes.append(
            f"{folder.summary_csv}: empty or cut short; the next `bnexp run` rebuilds it from "
            "the runs"
        )
    return SweepStatus(results, keys, cells, totals, len(plan), notes)

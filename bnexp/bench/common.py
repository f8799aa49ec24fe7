"""What every benchmark section shares: the long table's rows, interleaved timing, the terminal
table.

One row per measurement: section, case, measure, value, unit, goal, ok, note. `goal` is the
issue's target as text (">= 0.95") and `ok` whether `value` meets it (None for a plain figure).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

COLUMNS = ["section", "case", "measure", "value", "unit", "goal", "ok", "note"]


def row(section, case, measure, value, unit="", goal=None, note="") -> dict:
    ok = None
    if goal is not None and isinstance(value, (int, float)):
        op, bound = goal.split()
        ok = value >= float(bound) if op == ">=" else value <= float(bound)
    return dict(
        section=section,
        case=case,
        measure=measure,
        value=value,
        unit=unit,
        goal=goal or "",
        ok=ok,
        note=note,
    )


def interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list]:
    """Each variant called `repeats` times, the order rotated every repeat, so that load from
    other processes hits all variants alike. Returns variant -> its results in call order."""
    names, out = list(variants), {k: [] for k in variants}
    for r in range(repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            out[k].append(variants[k]())
    return out


def rich_table(df: pd.DataFrame, title: str = "bnexp bench train"):
    """The long table for the terminal: figures to 3 significant digits, goals marked."""
    from rich.table import Table

    table = Table(title=title)
    for col in ["section", "case", "measure", "value", "unit", "goal", "met", "note"]:
        table.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    for r in df.itertuples(index=False):
        value = (
            f"{r.value:,.3g}"
            if isinstance(r.value, (int, float)) and r.value >= 1000
            else (f"{r.value:.3g}" if isinstance(r.value, (int, float)) else str(r.value))
        )
        if isinstance(r.value, float) and r.value >= 1000:
            value = f"{r.value:,.0f}"
        met = (
            ""
            if r.ok is None or (isinstance(r.ok, float) and np.isnan(r.ok))
            else ("[green]yes[/]" if r.ok else "[red]no[/]")
        )
        table.add_row(r.section, r.case, r.measure, value, r.unit, r.goal, met, r.note)
    return table

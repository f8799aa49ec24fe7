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


TABLE_WIDTH = 100  # the terminal table's width; the notes stay in the CSV


def _figure(value) -> str:
    """3 significant digits; thousands separated, no exponent."""
    if not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _met(ok) -> str:
    if ok is None or (isinstance(ok, float) and np.isnan(ok)):
        return ""
    return "[green]yes[/]" if ok else "[red]no[/]"


def rich_table(df: pd.DataFrame, title: str = "bnexp benchmarks"):
    """The long table for a TABLE_WIDTH-column terminal: one bold line per section and case, then
    its measures, figures to 3 significant digits, goals marked. The notes are left to the CSV."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", width=TABLE_WIDTH)
    table.add_column("measure", ratio=1, overflow="fold")
    table.add_column("value", justify="right", no_wrap=True)
    for col in ("unit", "goal", "met"):
        table.add_column(col, no_wrap=True)
    for (section, case), rows in df.groupby(["section", "case"], sort=False):
        table.add_row(f"[bold]{section}: {case}[/]")
        for r in rows.itertuples(index=False):
            table.add_row(f"  {r.measure}", _figure(r.value), r.unit, r.goal, _met(r.ok))
    return table

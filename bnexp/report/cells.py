"""Cells: the one grouping every table, plot and claim of the report uses.

A *cell* is one setting of every swept key except the seed and the norm. Its key columns are
`batch_size` (the summary's column, standing for `train.batch_size`) and every other dotted
swept column (`train.lr`, `model.ghost_batch_size`, ...). Inside a cell the norm variants are
compared over seeds, paired: the same seed gives the same data order and initial weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import pandas as pd

NORM_ORDER = {"none": 0, "torch": 1, "custom": 2}
# swept columns that are not cell keys: the seed and the norm are compared inside a cell, and
# train.batch_size is the summary's `batch_size` column
NOT_CELL_KEYS = ("train.seed", "model.norm", "train.batch_size")


def cell_keys(frame: pd.DataFrame) -> list[str]:
    """The cell's key columns present in `frame` (summary.csv or a result table), batch_size first.

    bn_noise tables are the exception: their batch_size is the measured mini-batch size.
    """
    swept = [c for c in frame.columns if "." in str(c) and c not in NOT_CELL_KEYS]
    return (["batch_size"] if "batch_size" in frame.columns else []) + swept


def ghost_key(frame: pd.DataFrame) -> str | None:
    """The swept ghost-batch column (e.g. model.ghost_batch_size), if the sweep varies one."""
    return next((c for c in frame.columns if c.endswith("ghost_batch_size") and "." in c), None)


def groups(frame: pd.DataFrame, keys: list[str]) -> Iterator[tuple[dict, pd.DataFrame]]:
    """(dict of key values, sub-frame) per group, in order of appearance; NaN keys kept."""
    if not keys:
        yield {}, frame
        return
    for values, g in frame.groupby(keys, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        yield dict(zip(keys, values, strict=True)), g


def merge_shared_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Summary rows with each set of cells that hold the very same runs made one cell.

    A swept key the runs ignore (the ghost size under population statistics: the run ids agree)
    plans the same runs in several cells. Left apart, each copy would be a cell of its own in a
    Holm family (one result counted m times) and a ghost size compared with itself. Cells with
    the same (norm, seed, run_id) rows merge into the first of them; the keys they differ in
    become null (NaN: "null" in labels), and the copies' rows are dropped.
    """
    keys = cell_keys(df)
    if df.empty or not keys:
        return df
    same_runs: dict[frozenset, list[tuple[dict, pd.DataFrame]]] = defaultdict(list)
    for cell, g in groups(df, keys):
        runs = frozenset(zip(g["norm"], g["seed"].astype(str), g["run_id"].astype(str)))
        same_runs[runs].append((cell, g))
    if all(len(cells) == 1 for cells in same_runs.values()):
        return df
    out = []
    for cells in same_runs.values():
        g = cells[0][1].copy()
        for k in keys:
            if len({key_value(c[k]) for c, _ in cells}) > 1:
                g[k] = np.nan  # a key these runs ignore
        out.append(g)
    return pd.concat(out).sort_index().reset_index(drop=True)


def in_cell(frame: pd.DataFrame, cell: dict) -> np.ndarray:
    """Boolean mask of the rows of `frame` whose keys equal `cell` (NaN matches NaN)."""
    mask = np.ones(len(frame), dtype=bool)
    for k, v in cell.items():
        col = frame[k]
        mask &= ((col == v) | (col.isna() & pd.isna(v))).to_numpy()
    return mask


def norm_sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Stable sort by `keys`, the norm column in the order none, torch, custom."""
    if frame.empty:
        return frame
    by = [k for k in keys if k in frame.columns]
    return frame.sort_values(
        by,
        key=lambda c: c.map(lambda v: NORM_ORDER.get(v, 9)) if c.name == "norm" else c,
        kind="stable",
    ).reset_index(drop=True)


def cell_label(cell: dict) -> str:
    """'batch_size=64, lr=0.1' (last part of each dotted key), or 'all runs'. A swept value read
    back from CSV as a float prints as written (16.0 -> 16; empty, i.e. null -> null)."""
    return ", ".join(f"{k.split('.')[-1]}={key_value(v)}" for k, v in cell.items()) or "all runs"


def cell_id(cell: dict) -> tuple:
    """A hashable key for a cell, equal for equal cells (NaN, a null key, equals NaN; 16.0 = 16)."""
    return tuple(sorted((k, key_value(v)) for k, v in cell.items()))


def key_value(v: object) -> object:
    """A swept value as written: a whole float as an int (16.0 -> 16: CSV reads a column with a
    null as floats), NaN as "null"; anything else unchanged."""
    if isinstance(v, float):
        if v != v:  # NaN: a null swept value (e.g. ghost_batch_size: null = full-batch statistics)
            return "null"
        if v.is_integer():
            return int(v)
    return v

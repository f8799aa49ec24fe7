"""Summary -> comparison tables.

A *cell* is one setting of every swept key except the seed and the norm; inside a cell the norm
variants are compared over seeds (paired: the same seed gives the same data order and weights).
"""

from __future__ import annotations

import pandas as pd
from rich.table import Table

NORM_ORDER = {"none": 0, "torch": 1, "custom": 2}


def cell_keys(df: pd.DataFrame) -> list[str]:
    """The columns that define a cell: batch_size plus swept keys other than seed and norm."""
    swept = [c for c in df.columns if "." in c and c not in ("train.seed", "model.norm", "train.batch_size")]
    return ["batch_size", *swept]


def _mean_std(s: pd.Series, fmt: str) -> str:
    s = s.dropna().astype(float)
    if s.empty:
        return "—"
    return f"{s.mean():{fmt}} ± {s.std(ddof=1):{fmt}}" if len(s) > 1 else f"{s.mean():{fmt}}"


def comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell × norm: mean ± std over seeds of test accuracy, gen gap and steps to target;
    plus how many seeds diverged, when any did (their final metrics are those of a broken net)."""
    keys = [*cell_keys(df), "norm"]
    rows = []
    for values, g in df.groupby(keys, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        reached = g["steps_to_target"].dropna()
        rows.append({
            **dict(zip(keys, values)),
            "seeds": len(g),
            "final_test_acc": _mean_std(g["final_test_acc"], ".3f"),
            "gen_gap": _mean_std(g["gen_gap"], ".3f"),
            "steps_to_target": _mean_std(reached, ".0f"),
            "reached": f"{len(reached)}/{len(g)}",
            "diverged": f"{int(g['diverged'].fillna(False).astype(bool).sum())}/{len(g)}",
        })
    out = pd.DataFrame(rows)
    if not out.empty and (out["diverged"].str.split("/").str[0] == "0").all():
        out = out.drop(columns="diverged")  # shown only where some run diverged
    if not out.empty:
        out = out.sort_values([*keys[:-1], "norm"], key=lambda c: c.map(NORM_ORDER) if c.name == "norm" else c, kind="stable")
    return out


def rich_table(frame: pd.DataFrame, title: str) -> Table:
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), justify="left" if col == "norm" else "right")
    for _, row in frame.iterrows():
        table.add_row(*(str(v) for v in row))
    return table

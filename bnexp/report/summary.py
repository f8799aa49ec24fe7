"""The terminal's summary table: per cell x norm, mean ± std over seeds of the headline numbers."""

from __future__ import annotations

import pandas as pd

from .cells import cell_keys, groups, norm_sorted


def _mean_std(values: pd.Series, fmt: str) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "—"
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}}" if len(v) > 1 else f"{v.mean():{fmt}}"


def comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell x norm: final test accuracy, gen gap and steps to target, mean ± std over seeds.

    steps_to_target averages the seeds that reached the target; `reached` says how many did;
    `diverged` (shown only where some run diverged) how many broke: their final metrics are
    those of a broken network.
    """
    keys = [*cell_keys(df), "norm"]
    rows = []
    for values, g in groups(df, keys):
        reached = g["steps_to_target"].dropna()
        rows.append(
            {
                **values,
                "seeds": len(g),
                "final_test_acc": _mean_std(g["final_test_acc"], ".3f"),
                "gen_gap": _mean_std(g["gen_gap"], ".3f"),
                "steps_to_target": _mean_std(reached, ".0f"),
                "reached": f"{len(reached)}/{len(g)}",
                "diverged": f"{int(g['diverged'].fillna(False).astype(bool).sum())}/{len(g)}",
            }
        )
    out = pd.DataFrame(rows)
    if not out.empty and (out["diverged"].str.split("/").str[0] == "0").all():
        out = out.drop(columns="diverged")  # shown only where some run diverged
    return norm_sorted(out, keys)

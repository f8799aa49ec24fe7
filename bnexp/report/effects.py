"""The inputs of the BN verdicts: matched fit, the one BN variant, each variant's best lr (by
steps for speed, by validation accuracy for regularization), the trend of the regularization
effect across batch sizes, the trajectory read at a common train loss, and "ours ≡ torch's".

Matched fit (a column of the regularization table, not a verdict: networks there have not yet
overfit): a run's gaps at its first metrics.csv row that meets its own measure.target (read
from its config.yaml): gen gap = train_acc - test_acc, loss gap = test_loss - train_loss there.
Runs that never meet it have no matched-fit gap (left out of matched-fit effects, and counted).

One BN variant: torch's BatchNorm and ours are one algorithm. The verdicts judge "BN" as torch's
(the reference implementation) wherever a cell has torch runs, else ours (`custom`: e.g. the
ghost-batch cells torch's layer cannot run); the equivalence table checks that ours is torch's.

Trend: effect(b) = test acc(BN) - test acc(none) per seed at SGD batch b (ghost sweeps: test
acc(ghost size m) - test acc(full-batch statistics) for the BN variant at a fixed SGD batch),
fitted by least squares against log2(b) per seed; the t-interval of the per-seed slopes is the
slope's CI (bnexp.stats.seed_slopes). Sign convention: effect > 0 = BN (ghost noise) gives the
higher test accuracy (regularizes); slope < 0 = the effect shrinks as the (ghost) batch grows
("fades"), slope > 0 = it grows.

Trajectory: each run's test metrics at the lowest train loss every run of its cell and seed
reaches (at_common_loss): the curve of test metric against train loss, read at one level.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bnexp.stats import mean_ci, seed_slopes

from .cells import cell_id, cell_keys, ghost_key, groups, in_cell

FIT_COLUMNS = ("fit_step", "fit_gen_gap", "fit_loss_gap")
# "ours ≡ torch's" is "equivalent" when the 95% CI of the paired difference lies inside
# ± these tolerances: steps to target relative to torch's mean steps, final test accuracy absolute
EQUIV_STEPS_REL = 0.10
EQUIV_TEST_ACC = 0.01


# --------------------------------------------------------------------------- matched fit


def reached(value: float, target: dict) -> bool:
    """The training loop's rule: accuracies are met when >= value, losses when <= value."""
    if target["metric"].endswith("_acc"):
        return value >= target["value"]
    return value <= target["value"]


def matched_fit(metrics: pd.DataFrame, targets: dict[str, dict | None]) -> pd.DataFrame:
    """Per run_id: the step and the gaps at its first metrics.csv row that meets its target.

    targets: run_id -> that run's measure.target ({metric, value}) or None. Runs without a
    target, without metrics or never meeting it get NaN.
    """
    rows = []
    by_run = dict(iter(metrics.groupby("run_id", sort=False))) if not metrics.empty else {}
    for rid, target in targets.items():
        row = dict.fromkeys(FIT_COLUMNS, math.nan)
        m = by_run.get(rid)
        if target and m is not None and target["metric"] in m.columns:
            m = m.sort_values("step", kind="stable")
            hit = m[[reached(v, target) for v in m[target["metric"]]]]
            if len(hit):
                r = hit.iloc[0]
                row = {
                    "fit_step": float(r["step"]),
                    "fit_gen_gap": float(r["train_acc"] - r["test_acc"]),
                    "fit_loss_gap": float(r["test_loss"] - r["train_loss"]),
                }
        rows.append({"run_id": rid, **row})
    return pd.DataFrame(rows, columns=["run_id", *FIT_COLUMNS])


def with_matched_fit(df: pd.DataFrame, fit: pd.DataFrame) -> pd.DataFrame:
    """summary rows with the FIT_COLUMNS of `matched_fit` (NaN for runs it lacks)."""
    df = df.drop(columns=[c for c in FIT_COLUMNS if c in df.columns])
    return (
        df.merge(fit, on="run_id", how="left")
        if not fit.empty
        else df.assign(**dict.fromkeys(FIT_COLUMNS, math.nan))
    )


# --------------------------------------------------------------------------- variant, best lr


def bn_variant(norms) -> str | None:
    """The variant the BN verdicts judge among `norms`: torch's, else ours, else any non-none."""
    norms = [n for n in dict.fromkeys(norms) if n != "none" and isinstance(n, str)]
    for preferred in ("torch", "custom"):
        if preferred in norms:
            return preferred
    return norms[0] if norms else None


def lr_swept(df: pd.DataFrame) -> bool:
    return "train.lr" in df.columns and df["train.lr"].nunique() > 1


def at_best_lr(df: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """The runs of each (cell without lr) x norm at that variant's best lr, without train.lr.

    `best` is best_lr_table's frame: best = fewest censored runs, then fewest mean steps to
    target (censored runs counted at their length), so a diverged lr is never best while one
    reached the target. The lr each run used stays in the summary's `lr` column.
    """
    if best.empty or "train.lr" not in df.columns:
        return df
    on = [k for k in cell_keys(df) if k != "train.lr"] + ["norm"]
    m = df.merge(best[[*on, "best_lr"]], on=on, how="left")  # NaN keys match NaN keys
    keep = (m["train.lr"] == m["best_lr"]).to_numpy()
    return df[keep].drop(columns="train.lr").reset_index(drop=True)


def has_validation(df: pd.DataFrame) -> bool:
    """The runs carry a validation split's metrics (data.val_fraction set)."""
    return "final_val_acc" in df.columns and df["final_val_acc"].notna().any()


def best_val_lr(df: pd.DataFrame) -> pd.DataFrame:
    """Per (cell without lr) x norm: the lr with the highest mean final_val_acc over seeds
    (diverged runs count as 0), as `best_lr`; empty without train.lr or validation metrics.
    The regularization choices are made here, never on test metrics."""
    if not lr_swept(df) or not has_validation(df):
        return pd.DataFrame()
    on = [k for k in cell_keys(df) if k != "train.lr"] + ["norm"]
    val = df.assign(v=df["final_val_acc"].where(~df["diverged"], 0.0).fillna(0.0))
    mean = val.groupby([*on, "train.lr"], dropna=False)["v"].mean().reset_index()
    best = mean.sort_values("v", ascending=False, kind="stable").drop_duplicates(on)
    return best.rename(columns={"train.lr": "best_lr", "v": "best_val_acc"}).reset_index(drop=True)


def val_choice(best: pd.DataFrame) -> dict:
    """best_val_lr's frame as {cell items (sorted, without lr): {norm: lr}}."""
    if best.empty:
        return {}
    keys = [k for k in cell_keys(best) if k != "train.lr"]
    out: dict = {}
    for _, b in best.iterrows():
        out.setdefault(cell_id({k: b[k] for k in keys}), {})[b["norm"]] = b["best_lr"]
    return out


# --------------------------------------------------------------------------- trend


def _per_seed(frame: pd.DataFrame, col: str) -> pd.Series:
    return frame.groupby("seed")[col].mean()


def _trend_rows(group: dict, kind: str, xs: list, effects: dict, fitted: dict) -> list[dict]:
    """effects: x -> Series (seed -> paired effect); fitted: x -> the lowest final train acc of
    the runs compared at x. One table row per x, the per-seed slope fit repeated."""
    seeds = sorted(set().union(*(effects[x].dropna().index for x in xs)))
    mat = np.array([[effects[x].get(s, math.nan) for x in xs] for s in seeds], dtype=float)
    mat = mat.reshape(-1, len(xs))
    fit = seed_slopes(np.log2(np.asarray(xs, dtype=float)), mat)
    rows = []
    for j, x in enumerate(xs):
        iv = mean_ci(mat[:, j])
        rows.append(
            {
                **group,
                "kind": kind,
                "basis": TREND_BASIS,
                "x": x,
                "seeds": iv.n,
                "train_acc_min": fitted[x],
                "effect_mean": iv.mean,
                "effect_ci_low": iv.low,
                "effect_ci_high": iv.high,
                "fitted": fit.intercept + fit.slope * math.log2(x),
                "band_low": fit.band_low[j],
                "band_high": fit.band_high[j],
                "slope": fit.slope,
                "slope_ci_low": fit.low,
                "slope_ci_high": fit.high,
                "slope_se": fit.se,
                "slope_p": fit.p,
                "slope_seeds": fit.n,
            }
        )
    return rows


TREND_BASIS = "final test acc"


def _low_fit(*frames: pd.DataFrame) -> float:
    return min((float(f["final_train_acc"].min()) for f in frames if len(f)), default=math.nan)


def trend_table(df: pd.DataFrame) -> pd.DataFrame:
    """The regularization effect vs log2 batch size (kind "batch") and, in a ghost sweep, vs
    log2 ghost size at each SGD batch (kind "ghost").

    Effect (basis "final test acc"): test acc(BN) - test acc(none) per seed at batch b; ghost:
    test acc(ghost m) - test acc(full-batch statistics). One row per group x kind x x: the
    effect's mean and t-CI over seeds at x, the lowest final train acc of the runs compared
    there (`train_acc_min`, for the verdict's fit check), the fitted line and its t band at x,
    and the slope (mean of per-seed slopes, t-CI, p; repeated). Diverged runs are left out.
    """
    if df.empty:
        return pd.DataFrame()
    ok = df[~df["diverged"]]
    ghost = ghost_key(df)
    col = "final_test_acc"
    rows: list[dict] = []
    others = [k for k in cell_keys(df) if k not in ("batch_size", ghost)]
    # plain batch trend: per other keys (and ghost size, for which none is matched ignoring it)
    for group, g in groups(ok, [*others, *([ghost] if ghost else [])]):
        variant = bn_variant(g["norm"])
        sizes = sorted(g["batch_size"].dropna().unique())
        if variant is None or len(sizes) < 2:
            continue
        none = ok[(ok["norm"] == "none").to_numpy() & in_cell(ok, {k: group[k] for k in others})]
        if none.empty:
            continue
        bn = g[g["norm"] == variant]
        arms = {b: (none[none["batch_size"] == b], bn[bn["batch_size"] == b]) for b in sizes}
        eff = {b: _per_seed(bn, col) - _per_seed(no, col) for b, (no, bn) in arms.items()}
        fitted = {b: _low_fit(*arms[b]) for b in sizes}
        rows += _trend_rows({**group, "norm": variant}, "batch", sizes, eff, fitted)
    if ghost:
        for group, g in groups(ok[ok["norm"] != "none"], [*others, "batch_size"]):
            variant = bn_variant(g["norm"])
            g = g[g["norm"] == variant]
            full = g[g[ghost].isna()] if g[ghost].isna().any() else g[g[ghost] == g[ghost].max()]
            sizes = sorted(g[ghost].dropna().unique())
            if full.empty or len(sizes) < 2:
                continue
            eff = {m: _per_seed(g[g[ghost] == m], col) - _per_seed(full, col) for m in sizes}
            fitted = {m: _low_fit(full, g[g[ghost] == m]) for m in sizes}
            rows += _trend_rows({**group, "norm": variant}, "ghost", sizes, eff, fitted)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- trajectory

COMMON_COLUMNS = ("common_train_loss", "common_test_acc", "common_test_loss")


def at_common_loss(metrics: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Per summary row (the frame is aligned with df's index): its run's test acc and loss at
    the lowest train loss every run of its cell and seed reaches (the curve of test metric
    against train loss, read at one level for all arms).

    Level L = the largest of the runs' smallest metrics.csv train_loss in the group (cell keys
    without the norm, and the seed); each run is read at its first row with train_loss <= L.
    Runs without metrics (or diverged) get NaN. In a ghost sweep `none` runs (ghost size null)
    form their own group, so their level is their own. A run planned in several cells (a shared
    baseline) is one row in each, read at each cell's own level.
    """
    out = pd.DataFrame(math.nan, index=df.index, columns=list(COMMON_COLUMNS))
    if metrics.empty or "train_loss" not in metrics.columns:
        return out
    by_run = dict(iter(metrics.groupby("run_id", sort=False)))
    lowest = {rid: float(m["train_loss"].min()) for rid, m in by_run.items()}
    ok = df[~df["diverged"]]
    for _, g in groups(ok, [*cell_keys(df), "seed"]):
        rows = {i: str(r) for i, r in zip(g.index, g["run_id"]) if str(r) in by_run}
        if len(set(rows.values())) < 2:
            continue
        level = max(lowest[r] for r in rows.values())
        for i, rid in rows.items():
            m = by_run[rid].sort_values("step", kind="stable")
            hit = m[m["train_loss"] <= level].iloc[0]
            out.loc[i] = [level, float(hit["test_acc"]), float(hit["test_loss"])]
    return out


def with_common_loss(df: pd.DataFrame, common: pd.DataFrame) -> pd.DataFrame:
    """summary rows with the COMMON_COLUMNS of `at_common_loss` (aligned by index: a run that
    serves several cells keeps one row per cell, never a product of them)."""
    df = df.drop(columns=[c for c in COMMON_COLUMNS if c in df.columns])
    return pd.concat([df, common.reindex(df.index)], axis=1)


# --------------------------------------------------------------------------- ours ≡ torch's


def _equivalence_row(m: pd.DataFrame) -> dict:
    """Paired custom - torch over the pairs in m (one row per cell x seed, columns _t / _c)."""
    both_censored = m["censored_t"] & m["censored_c"]
    s = m[~both_censored]
    steps = mean_ci(s["steps_c_c"] - s["steps_c_t"])
    rel = mean_ci((s["steps_c_c"] - s["steps_c_t"]) / s["steps_c_t"])
    fine = ~(m["diverged_t"] | m["diverged_c"])
    acc = mean_ci((m["final_test_acc_c"] - m["final_test_acc_t"])[fine])
    return {
        "pairs": len(m),
        "steps_diff_mean": steps.mean,
        "steps_diff_ci_low": steps.low,
        "steps_diff_ci_high": steps.high,
        "steps_rel_diff_mean": rel.mean,
        "steps_rel_diff_ci_low": rel.low,
        "steps_rel_diff_ci_high": rel.high,
        "steps_rel_diff_n": rel.n,
        "steps_rel_tolerance": EQUIV_STEPS_REL,
        "test_acc_diff_mean": acc.mean,
        "test_acc_diff_ci_low": acc.low,
        "test_acc_diff_ci_high": acc.high,
        "test_acc_diff_n": acc.n,
        "test_acc_tolerance": EQUIV_TEST_ACC,
    }


def equivalence_table(df: pd.DataFrame) -> pd.DataFrame:
    """ours (custom) - torch's, paired by seed in each cell with both, with t-CIs: one row per
    cell (scope "cell") and one over every pair of every cell (scope "all cells", first).

    steps: steps to target (censored runs at their length, as in the speed-up table; a pair with
    both censored is left out), also relative to torch's (custom - torch) / torch; test_acc:
    final test accuracy (pairs without a diverged run). Tolerances: EQUIV_STEPS_REL on the
    relative steps, EQUIV_TEST_ACC on the accuracy.
    """
    if df.empty or not {"torch", "custom"} <= set(df["norm"]):
        return pd.DataFrame()
    from .tables import censored_steps  # the speed-up table's censoring, one definition

    keys = cell_keys(df)
    if df["steps_to_target"].notna().any():
        d = censored_steps(df, keys)
    else:
        d = df.assign(steps_c=math.nan, censored=True)
    pairs, rows = [], []
    for cell, g in groups(d, keys):
        t, c = g[g["norm"] == "torch"], g[g["norm"] == "custom"]
        if t.empty or c.empty:
            continue
        m = t.merge(c, on="seed", suffixes=("_t", "_c"))
        pairs.append(m)
        rows.append({"scope": "cell", **cell, **_equivalence_row(m)})
    if not rows:
        return pd.DataFrame()
    pooled = {"scope": "all cells", **_equivalence_row(pd.concat(pairs, ignore_index=True))}
    return pd.DataFrame([pooled, *rows])

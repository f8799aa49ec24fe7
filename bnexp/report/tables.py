"""Result tables: pure functions from summary.csv rows (or stacked per-run CSVs) to DataFrames.

Every table has one row per cell x norm (x layer, site where the measure has them); see
`bnexp.report.cells` for what a cell is. Intervals are 95%: Student t over seeds, paired by
seed where two variants are compared; ratios are exp of the t-interval of per-seed log ratios
(bnexp.stats.paired_log_ratio).

Censoring: a run that never reaches the target enters the step counts as its run length (a
diverged run: the cell's full length), i.e. as a lower bound, flagged, never as fast.

Columns listed in PAIR_COUNTS hold how many seeds a paired interval used: claims.json reports
them, the CSV files leave them out (their columns stay what they were).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bnexp.stats import (
    Interval,
    fmt_interval,
    loglog_slope,
    mean_ci,
    p_value,
    paired_difference_ci,
    paired_log_ratio,
)

from .cells import cell_keys, ghost_key, groups, in_cell, norm_sorted

PAIR_COUNTS = (
    "effect_n",
    "acc_effect_n",
    "acc_effect_vs_full_stats_n",
    "effect_vs_full_stats_n",
    "speedup_at_best_lr_pairs",
    "fit_effect_n",
)


def iv_cols(prefix: str, iv: Interval) -> dict:
    return {f"{prefix}_mean": iv.mean, f"{prefix}_ci_low": iv.low, f"{prefix}_ci_high": iv.high}


# columns of the report's tables whose values are settings, not measurements: never rounded
CSV_EXACT = ("batch_size", "lr", "best_lr", "x", "layer", "seed", "unit")


def for_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as tables/<name>.csv holds it: without the pair counts, and each measured value
    (a float column that is not a key and not all whole numbers: means, CIs, slopes, effects,
    ratios) rounded to 4 significant digits, what seeds-level intervals support; -0.0 as 0.0.
    Keys (batch_size, lr, x, layer, swept dotted keys) and counts are kept as they are."""
    out = frame.drop(columns=[c for c in PAIR_COUNTS if c in frame.columns])
    for col in out.columns:
        values = out[col]
        if col in CSV_EXACT or "." in str(col) or not pd.api.types.is_float_dtype(values):
            continue
        finite = values[np.isfinite(values)]
        if (finite == finite.round()).all():  # counts and step numbers stored as floats
            continue
        out[col] = values.map(lambda v: float(f"{v:.4g}") + 0.0 if math.isfinite(v) else v)
    return out


# --------------------------------------------------------------------------- speed-up


def censored_steps(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Adds steps_c / epochs_c / time_c (value, or the censoring point) and `censored`."""
    df = df.copy()
    df["censored"] = df["steps_to_target"].isna()
    full_steps = (
        df.groupby(keys, dropna=False)["steps"].transform("max") if keys else df["steps"].max()
    )
    full_epochs = df["epochs"] if "epochs" in df.columns else np.nan
    run_steps = np.where(df["diverged"], full_steps, df["steps"])
    df["steps_c"] = np.where(df["censored"], run_steps, df["steps_to_target"]).astype(float)
    df["epochs_c"] = np.where(
        df["censored"], full_epochs, df.get("epochs_to_target", np.nan)
    ).astype(float)
    train_s = df["train_s"] if "train_s" in df.columns else np.nan
    df["time_c"] = np.where(df["censored"], train_s, df.get("time_to_target_s", np.nan)).astype(
        float
    )
    return df


def steps_display(g: pd.DataFrame) -> str:
    """'660 [441, 879]', or a bound when some runs are censored: '≥ 140 (1/3 > 200)'."""
    n, c = len(g), int(g["censored"].sum())
    iv = mean_ci(g["steps_c"])
    if c == 0:
        return fmt_interval(iv, ".0f")
    at = int(g.loc[g["censored"], "steps_c"].min())
    if c == n:
        return f"> {at} ({c}/{n} censored)"
    return f"≥ {iv.mean:.0f} ({c}/{n} > {at})"


NOT_REACHED = "no run reached the target"


def ratio_display(r) -> str:
    """'7.50× [5.20, 11.33]'; censored: '≥ 7.50× (≥ 5.20)' / '≤ 0.80× (≤ 1.10)', '? 1.20×'; or
    '—' (with why, when no run of either side reached the target)."""
    if r.bound == "none reached":
        return f"— ({NOT_REACHED})"
    if r.n == 0 or not math.isfinite(r.ratio):
        return "—"
    if not math.isfinite(r.log_sd):  # one pair: no interval
        ci = ""
    elif r.bound == "lower":
        ci = f" (≥ {r.low:.2f})"
    elif r.bound == "upper":
        ci = f" (≤ {r.high:.2f})"
    elif r.bound == "exact":
        ci = f" [{r.low:.2f}, {r.high:.2f}]"
    else:
        ci = ""
    sign = {"exact": "", "lower": "≥ ", "upper": "≤ ", "unknown": "? "}[r.bound]
    return f"{sign}{r.ratio:.2f}×{ci}"


def paired_ratio(base: pd.DataFrame, other: pd.DataFrame, col: str):
    """exp(mean log(base[col] / other[col])) over seeds present in both (paired_log_ratio)."""
    m = base[["seed", col, "censored"]].merge(
        other[["seed", col, "censored"]], on="seed", suffixes=("_a", "_b")
    )
    return paired_log_ratio(m[f"{col}_a"], m[f"{col}_b"], m["censored_a"], m["censored_b"])


def ratio_cols(prefix: str, r) -> dict:
    """The columns of one paired ratio: value, CI, bound, pairs, display, log sd, p."""
    return {
        prefix: r.ratio,
        f"{prefix}_ci_low": r.low,
        f"{prefix}_ci_high": r.high,
        f"{prefix}_bound": r.bound,
        f"{prefix}_pairs": r.n,
        f"{prefix}_vs_none": ratio_display(r),
        f"{prefix}_log_sd": r.log_sd,
        f"{prefix}_p": r.p,
    }


def speedup_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell x norm: time to target with CIs and the paired speed-up vs none."""
    if df.empty:
        return pd.DataFrame()
    keys = cell_keys(df)
    df = censored_steps(df, keys)
    rows = []
    for cell, g in groups(df, keys):
        base = g[g["norm"] == "none"]
        for norm, h in groups(g, ["norm"]):
            row = {
                **cell,
                **norm,
                "runs": len(h),
                "reached": int((~h["censored"]).sum()),
                "censored": int(h["censored"].sum()),
                "diverged": int(h["diverged"].sum()),
                "steps_to_target": steps_display(h),
                **iv_cols("steps", mean_ci(h["steps_c"])),
                **iv_cols("epochs", mean_ci(h["epochs_c"])),
                **iv_cols("time_s", mean_ci(h["time_c"])),
            }
            if norm["norm"] != "none" and not base.empty:
                r, t = paired_ratio(base, h, "steps_c"), paired_ratio(base, h, "time_c")
                row.update(ratio_cols("speedup", r))
                row.update(
                    {
                        "time_speedup": t.ratio,
                        "time_speedup_ci_low": t.low,
                        "time_speedup_ci_high": t.high,
                    }
                )
            rows.append(row)
    return norm_sorted(pd.DataFrame(rows), [*keys, "norm"])


def best_lr_table(df: pd.DataFrame) -> pd.DataFrame:
    """(train.lr swept) per other-cell x norm: the lr with the fewest steps to target.

    Best = fewest censored runs, then the smallest mean steps (censored at run length). The
    speed-up at best lr pairs none at its best lr with the variant at its own best lr, by seed.
    Also where each variant diverged.
    """
    if "train.lr" not in df.columns:
        return pd.DataFrame()
    keys = [k for k in cell_keys(df) if k != "train.lr"]
    df = censored_steps(df, cell_keys(df))
    rows = []
    for cell, g in groups(df, keys):
        best: dict[str, pd.DataFrame] = {}
        for norm, h in groups(g, ["norm"]):
            per_lr = h.groupby("train.lr").agg(
                censored=("censored", "sum"),
                steps=("steps_c", "mean"),
                diverged=("diverged", "sum"),
                runs=("seed", "size"),
            )
            lr = per_lr.sort_values(["censored", "steps"]).index[0]
            best[norm["norm"]] = h[h["train.lr"] == lr]
            div = per_lr[per_lr["diverged"] > 0]
            diverged_at = ", ".join(
                f"{v:g} ({int(d.diverged)}/{int(d.runs)})" for v, d in div.iterrows()
            )
            rows.append(
                {
                    **cell,
                    **norm,
                    "best_lr": lr,
                    "steps_at_best_lr": steps_display(best[norm["norm"]]),
                    "steps_at_best_lr_mean": per_lr.loc[lr, "steps"],
                    "lrs_tried": ", ".join(f"{v:g}" for v in sorted(per_lr.index)),
                    "diverged_at": diverged_at or "none",
                    "smallest_diverged_lr": float(div.index.min()) if len(div) else math.nan,
                }
            )
        if "none" not in best:
            continue
        for row in rows:
            same_cell = all(
                row.get(k) == v or (pd.isna(row.get(k)) and pd.isna(v)) for k, v in cell.items()
            )
            if same_cell and row["norm"] in best and row["norm"] != "none":
                r = paired_ratio(best["none"], best[row["norm"]], "steps_c")
                row.update(ratio_cols("speedup_at_best_lr", r))
    return norm_sorted(pd.DataFrame(rows), [*keys, "norm"])


# --------------------------------------------------------------------------- regularization


def paired_diff(a: pd.DataFrame, b: pd.DataFrame, col: str) -> Interval:
    """mean(a[col] - b[col]) over seeds present in both, with its t-interval."""
    m = a[["seed", col]].merge(b[["seed", col]], on="seed", suffixes=("_a", "_b"))
    return paired_difference_ci(m[f"{col}_a"], m[f"{col}_b"])


def matched_fit_cols(base: pd.DataFrame, h: pd.DataFrame, versus_none: bool) -> dict:
    """The fit_* columns: gaps where each run first met the target (bnexp.report.effects), and
    the paired effect over the seeds where both runs met it; runs that never met it excluded."""
    fit = h[h["fit_gen_gap"].notna()]
    out = {
        "fit_runs": len(fit),
        "fit_excluded": len(h) - len(fit),
        **iv_cols("fit_gen_gap", mean_ci(fit["fit_gen_gap"])),
        **iv_cols("fit_loss_gap", mean_ci(fit["fit_loss_gap"])),
        **iv_cols("fit_step", mean_ci(fit["fit_step"])),
    }
    if versus_none and not base.empty:
        effect = paired_diff(base[base["fit_gen_gap"].notna()], fit, "fit_gen_gap")
        out.update(iv_cols("fit_effect", effect))
        out.update(iv_cols("fit_loss_effect", paired_diff(base, fit, "fit_loss_gap")))
        out["fit_effect_n"] = effect.n
    return out


def test_effect_cols(base: pd.DataFrame, h: pd.DataFrame) -> dict:
    """The regularization verdict's columns, paired by seed (base: none, h: the BN variant):
    acc_effect = test acc(BN) - test acc(none) (= test error(none) - error(BN)), nll_effect =
    test loss(none) - test loss(BN): > 0 favours BN in both; with its p and pair count. With the
    trajectory columns (effects.COMMON_COLUMNS), the same at the lowest train loss both reach."""
    acc = paired_diff(h, base, "final_test_acc")
    out = {
        **iv_cols("acc_effect", acc),
        **iv_cols("nll_effect", paired_diff(base, h, "final_test_loss")),
        "acc_effect_p": p_value(acc),
        "acc_effect_se": acc.se,
        "acc_effect_n": acc.n,
    }
    if "common_test_acc" in h.columns:
        out.update(iv_cols("curve_acc_effect", paired_diff(h, base, "common_test_acc")))
        out.update(iv_cols("curve_nll_effect", paired_diff(base, h, "common_test_loss")))
    return out


def regularization_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell x norm: gen_gap and loss_gap over seeds; effect = gap(none) - gap(this), paired.

    Diverged runs are left out (their final metrics are not a model's) and counted. With the
    matched-fit columns in df (bnexp.report.effects.FIT_COLUMNS) also the fit_* columns: the same
    at each run's first evaluation meeting the target (matched_fit_cols). When the sweep
    varies a ghost batch size, `effect_vs_full_stats` = gap(largest ghost size, i.e. full-batch
    statistics) - gap(this ghost size) for the same norm, batch size and seed.
    """
    if df.empty:
        return pd.DataFrame()
    keys = cell_keys(df)
    ghost = ghost_key(df)
    ok = df[~df["diverged"]]

    def matching(norm: str, cell: dict) -> pd.DataFrame:
        """Non-diverged runs of `norm` whose keys equal `cell` (which may omit the ghost key)."""
        return ok[(ok["norm"] == norm).to_numpy() & in_cell(ok, cell)]

    rows = []
    for cell, g_all in groups(df, keys):
        g = g_all[~g_all["diverged"]]
        base = g[g["norm"] == "none"]
        if base.empty and ghost is not None:
            # `none` ignores the ghost size: a none run with the same other keys
            base = matching("none", {k: v for k, v in cell.items() if k != ghost})
        for norm, h_all in groups(g_all, ["norm"]):
            h = h_all[~h_all["diverged"]]
            row = {
                **cell,
                **norm,
                "runs": len(h),
                "diverged": int(h_all["diverged"].sum()),
                **iv_cols("gen_gap", mean_ci(h["gen_gap"])),
                **iv_cols("loss_gap", mean_ci(h["loss_gap"])),
                **iv_cols("test_acc", mean_ci(h["final_test_acc"])),
                **iv_cols("train_acc", mean_ci(h["final_train_acc"])),
                **iv_cols("test_loss", mean_ci(h["final_test_loss"])),
                "train_acc_min": h["final_train_acc"].min(),
            }
            if norm["norm"] != "none" and not base.empty:
                effect = paired_diff(base, h, "gen_gap")
                row.update(iv_cols("effect", effect))
                row.update(iv_cols("loss_effect", paired_diff(base, h, "loss_gap")))
                row["effect_n"] = effect.n
                row.update(test_effect_cols(base, h))
            if "fit_gen_gap" in h.columns:
                row.update(matched_fit_cols(base, h, norm["norm"] != "none"))
            if ghost is not None and norm["norm"] != "none":
                peers = matching(norm["norm"], {k: v for k, v in cell.items() if k != ghost})
                sizes = peers[ghost].dropna()
                if peers[ghost].isna().any():  # no ghost size = statistics over the whole batch
                    ref = peers[peers[ghost].isna()]
                else:
                    ref = peers[peers[ghost] == sizes.max()] if not sizes.empty else peers.iloc[:0]
                if not ref.empty and set(ref["run_id"]) != set(h["run_id"]):  # not itself
                    full = paired_diff(ref, h, "gen_gap")
                    row.update(iv_cols("effect_vs_full_stats", full))
                    row["effect_vs_full_stats_n"] = full.n
                    acc = paired_diff(h, ref, "final_test_acc")
                    row.update(iv_cols("acc_effect_vs_full_stats", acc))
                    row["acc_effect_vs_full_stats_p"] = p_value(acc)
                    row["acc_effect_vs_full_stats_n"] = acc.n
            rows.append(row)
    out = pd.DataFrame(rows)
    for col in ("gen_gap", "loss_gap", "effect", "fit_gen_gap", "fit_effect", "acc_effect",
                "nll_effect", "curve_acc_effect"):  # fmt: skip
        if f"{col}_mean" in out.columns:
            out[col] = [
                fmt_interval(Interval(m, lo, hi, 2 if math.isfinite(lo) else 1))
                for m, lo, hi in zip(
                    out[f"{col}_mean"], out[f"{col}_ci_low"], out[f"{col}_ci_high"], strict=True
                )
            ]
    return norm_sorted(out, [*keys, "norm"])


# --------------------------------------------------------------------------- BN noise, shift, ICS


def bn_noise_table(noise: pd.DataFrame) -> pd.DataFrame:
    """Per norm x layer x batch size: mean and CI over runs; log-log slopes per norm x layer."""
    if noise.empty:
        return pd.DataFrame()
    rows = []
    for key, g in groups(noise, ["norm", "layer", "batch_size"]):
        rows.append(
            {
                **key,
                "runs": len(g),
                **iv_cols("mean_noise", mean_ci(g["mean_noise"])),
                **iv_cols("var_noise", mean_ci(g["var_noise"])),
                "expected_mean_noise": g["expected_mean_noise"].mean(),
            }
        )
    out = pd.DataFrame(rows)
    for key, g in groups(out, ["norm", "layer"]):
        sel = (out["norm"] == key["norm"]) & (out["layer"] == key["layer"])
        out.loc[sel, "mean_noise_slope"] = loglog_slope(g["batch_size"], g["mean_noise_mean"])
        out.loc[sel, "var_noise_slope"] = loglog_slope(g["batch_size"], g["var_noise_mean"])
        out.loc[sel, "expected_slope"] = loglog_slope(g["batch_size"], g["expected_mean_noise"])
    return norm_sorted(out, ["norm", "layer", "batch_size"])


def shift_table(probes: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per cell x norm x site: drift of p50 and std (mean over probes per run, then over seeds).

    drift_p50_rel = drift_p50 / the site's mean std: how far the median moves per probe interval
    in units of the spread, comparable between z (unnormalized) and z~.
    """
    if probes.empty or "drift_p50" not in probes.columns:
        return pd.DataFrame()
    p = probes[(probes["site"].isin(["z", "z_tilde"])) & (probes["unit"].astype(str) == "all")]
    if p.empty:
        return pd.DataFrame()
    per_run = (
        p.groupby(["run_id", "site"], sort=False)
        .agg(
            drift_p50=("drift_p50", "mean"),
            drift_std=("drift_std", "mean"),
            std=("std", "mean"),
            layer=("layer", "first"),
            **{k: (k, "first") for k in ["norm", "seed", *keys]},
        )
        .reset_index()
    )
    per_run["drift_p50_rel"] = per_run["drift_p50"] / per_run["std"]
    rows = []
    for key, g in groups(per_run, [*keys, "norm", "site"]):
        rows.append(
            {
                **key,
                "layer": g["layer"].iloc[0],
                "runs": len(g),
                **iv_cols("drift_p50", mean_ci(g["drift_p50"])),
                **iv_cols("drift_std", mean_ci(g["drift_std"])),
                **iv_cols("drift_p50_rel", mean_ci(g["drift_p50_rel"])),
            }
        )
    return norm_sorted(pd.DataFrame(rows), [*keys, "norm", "site"])


def ics_table(probes: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per cell x norm: ||G - G'||_2, cos(G, G') and ||G - G'|| / ||G||.

    Each is the mean over a run's probes, then mean and CI over seeds.
    """
    if probes.empty or "ics_l2" not in probes.columns:
        return pd.DataFrame()
    p = probes[probes["site"] == "ics"].copy()
    if p.empty:
        return pd.DataFrame()
    p["ics_rel"] = p["ics_l2"] / p["grad_norm"]
    per_run = (
        p.groupby("run_id", sort=False)
        .agg(
            ics_l2=("ics_l2", "mean"),
            ics_cos=("ics_cos", "mean"),
            ics_rel=("ics_rel", "mean"),
            layer=("layer", "first"),
            **{k: (k, "first") for k in ["norm", "seed", *keys]},
        )
        .reset_index()
    )
    rows = []
    for key, g in groups(per_run, [*keys, "norm"]):
        rows.append(
            {
                **key,
                "layer": g["layer"].iloc[0],
                "runs": len(g),
                **iv_cols("ics_l2", mean_ci(g["ics_l2"])),
                **iv_cols("ics_cos", mean_ci(g["ics_cos"])),
                **iv_cols("ics_rel", mean_ci(g["ics_rel"])),
            }
        )
    return norm_sorted(pd.DataFrame(rows), [*keys, "norm"])

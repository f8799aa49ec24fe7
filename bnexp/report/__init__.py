"""results/<name> -> tables with confidence intervals, plots and report.md.

A *cell* is one setting of every swept key except the seed and the norm; inside a cell the norm
variants are compared over seeds, paired: the same seed gives the same data order and initial
weights. Written by `build_report(results_dir)`:

  tables/speedup.csv         per cell x norm: steps / epochs / seconds to target (mean, 95% t-CI),
                             censored counts, speed-up vs none (ratio of means, paired bootstrap CI)
  tables/best_lr.csv         (train.lr swept) per variant: best lr, where it diverged, speed-up at best lr
  tables/regularization.csv  per cell x norm: gen_gap, loss_gap (mean, CI), effect = gap(none) - gap(BN)
                             paired by seed; with a ghost-batch sweep also the effect vs full-batch stats
  tables/bn_noise.csv        per norm x layer x batch size: noise of batch means / variances, log-log slopes
  tables/shift.csv           per cell x norm x site: drift of p50 and std of the probed layer's inputs
  tables/ics.csv             per cell x norm: ||G - G'||, cos(G, G') (Santurkar et al. Def. 2.1)
  plots/*.png, report.md     one sentence per claim, with its numbers

Censoring: a run that never reaches the target enters the step counts as its run length (a
diverged run: the cell's full length), i.e. as a lower bound, flagged, never as fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bnexp.errors import BnexpError  # noqa: E402
from bnexp.io import atomic_write_bytes, atomic_write_csv, atomic_write_text  # noqa: E402
from bnexp.stats import (  # noqa: E402
    Interval,
    fmt_interval,
    loglog_slope,
    mean_ci,
    paired_bootstrap_ratio,
    paired_difference_ci,
)

NORM_ORDER = {"none": 0, "torch": 1, "custom": 2}
SEED_KEYS = ("train.seed", "model.norm", "train.batch_size")


def cell_keys(df: pd.DataFrame) -> list[str]:
    """The columns that define a cell: batch_size plus swept keys other than seed and norm."""
    swept = [c for c in df.columns if "." in c and c not in SEED_KEYS]
    return ["batch_size", *swept]


def ghost_key(df: pd.DataFrame) -> str | None:
    """The swept ghost-batch column (e.g. model.ghost_batch_size), if the sweep varies one."""
    return next((c for c in df.columns if c.endswith("ghost_batch_size") and "." in c), None)


def _norm_sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if frame.empty:
        return frame
    by = [k for k in keys if k in frame.columns]
    return frame.sort_values(
        by,
        key=lambda c: c.map(lambda v: NORM_ORDER.get(v, 9)) if c.name == "norm" else c,
        kind="stable",
    ).reset_index(drop=True)


def _groups(df: pd.DataFrame, keys: list[str]):
    """(dict of key values, sub-frame) per group; NaN keys kept."""
    if not keys:
        yield {}, df
        return
    for values, g in df.groupby(keys, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        yield dict(zip(keys, values, strict=True)), g


def _iv_cols(prefix: str, iv: Interval) -> dict:
    return {f"{prefix}_mean": iv.mean, f"{prefix}_ci_low": iv.low, f"{prefix}_ci_high": iv.high}


# --------------------------------------------------------------------------- loading


def load_summary(results_dir: Path) -> pd.DataFrame:
    """summary.csv's complete runs; BnexpError when the folder is not a results folder."""
    path = Path(results_dir) / "summary.csv"
    if not path.exists():
        raise BnexpError(
            f"{results_dir}: no summary.csv (expected a results folder written by `bnexp run`)"
        )
    df = pd.read_csv(path)
    missing = [c for c in ("run_id", "norm", "seed", "batch_size") if c not in df.columns]
    if missing:
        raise BnexpError(
            f"{path}: missing column(s) {', '.join(missing)} (expected the summary.csv written by `bnexp run`)"
        )
    if "status" in df.columns:
        df = df[df["status"].fillna("complete") == "complete"]
    if "diverged" in df.columns:
        df["diverged"] = df["diverged"].astype(str).str.lower().isin(["true", "1"])
    else:
        df["diverged"] = False
    return df.reset_index(drop=True)


def _run_csvs(results_dir: Path, df: pd.DataFrame, name: str) -> pd.DataFrame:
    """runs/<id>/<name> of every run in df, stacked, with run_id, norm, seed and the cell keys.

    A column the file already has keeps the file's meaning (bn_noise.csv's batch_size is the
    measured mini-batch size, not the run's training batch size).
    """
    keep = ["run_id", "norm", "seed", *cell_keys(df)]
    frames = []
    for _, row in df.iterrows():
        path = Path(results_dir) / "runs" / str(row["run_id"]) / name
        if path.exists() and path.stat().st_size:
            f = pd.read_csv(path)
            for k in keep:
                if k not in f.columns:
                    f[k] = row[k]
            frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _run_config(results_dir: Path, df: pd.DataFrame) -> dict:
    for rid in df["run_id"]:
        path = Path(results_dir) / "runs" / str(rid) / "config.yaml"
        if path.exists():
            return yaml.safe_load(path.read_text()) or {}
    return {}


# --------------------------------------------------------------------------- speed-up


def _censored_steps(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
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


def _steps_display(g: pd.DataFrame) -> str:
    n, c = len(g), int(g["censored"].sum())
    iv = mean_ci(g["steps_c"])
    if c == 0:
        return fmt_interval(iv, ".0f")
    at = int(g.loc[g["censored"], "steps_c"].min())
    if c == n:
        return f"> {at} ({c}/{n} censored)"
    return f"≥ {iv.mean:.0f} ({c}/{n} > {at})"


def _ratio_display(r) -> str:
    if r.n == 0 or not math.isfinite(r.ratio):
        return "—"
    sign = {"exact": "", "lower": "≥ ", "upper": "≤ ", "unknown": "? "}[r.bound]
    ci = f" [{r.low:.2f}, {r.high:.2f}]" if math.isfinite(r.low) else ""
    return f"{sign}{r.ratio:.2f}×{ci}"


def _paired_ratio(base: pd.DataFrame, other: pd.DataFrame, col: str):
    """ratio mean(base[col]) / mean(other[col]) over seeds present in both."""
    m = base[["seed", col, "censored"]].merge(
        other[["seed", col, "censored"]], on="seed", suffixes=("_a", "_b")
    )
    return paired_bootstrap_ratio(m[f"{col}_a"], m[f"{col}_b"], m["censored_a"], m["censored_b"])


def speedup_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell x norm: time to target with CIs and the paired speed-up vs none."""
    if df.empty:
        return pd.DataFrame()
    keys = cell_keys(df)
    df = _censored_steps(df, keys)
    rows = []
    for cell, g in _groups(df, keys):
        base = g[g["norm"] == "none"]
        for norm, h in _groups(g, ["norm"]):
            steps = mean_ci(h["steps_c"])
            row = {
                **cell,
                **norm,
                "runs": len(h),
                "reached": int((~h["censored"]).sum()),
                "censored": int(h["censored"].sum()),
                "diverged": int(h["diverged"].sum()),
                "steps_to_target": _steps_display(h),
                **_iv_cols("steps", steps),
                **_iv_cols("epochs", mean_ci(h["epochs_c"])),
                **_iv_cols("time_s", mean_ci(h["time_c"])),
            }
            if norm["norm"] != "none" and not base.empty:
                r, t = _paired_ratio(base, h, "steps_c"), _paired_ratio(base, h, "time_c")
                row.update(
                    {
                        "speedup": r.ratio,
                        "speedup_ci_low": r.low,
                        "speedup_ci_high": r.high,
                        "speedup_bound": r.bound,
                        "speedup_pairs": r.n,
                        "speedup_vs_none": _ratio_display(r),
                        "time_speedup": t.ratio,
                        "time_speedup_ci_low": t.low,
                        "time_speedup_ci_high": t.high,
                    }
                )
            rows.append(row)
    return _norm_sorted(pd.DataFrame(rows), [*keys, "norm"])


def best_lr_table(df: pd.DataFrame) -> pd.DataFrame:
    """(train.lr swept) per other-cell x norm: the lr with the fewest steps to target, and divergence.

    Best = fewest censored runs, then the smallest mean steps (censored at run length). The
    speed-up at best lr pairs none at its best lr with the variant at its own best lr, by seed.
    """
    if "train.lr" not in df.columns:
        return pd.DataFrame()
    keys = [k for k in cell_keys(df) if k != "train.lr"]
    df = _censored_steps(df, cell_keys(df))
    rows = []
    for cell, g in _groups(df, keys):
        best: dict[str, pd.DataFrame] = {}
        for norm, h in _groups(g, ["norm"]):
            per_lr = h.groupby("train.lr").agg(
                censored=("censored", "sum"),
                steps=("steps_c", "mean"),
                diverged=("diverged", "sum"),
                runs=("seed", "size"),
            )
            lr = per_lr.sort_values(["censored", "steps"]).index[0]
            best[norm["norm"]] = h[h["train.lr"] == lr]
            div = per_lr[per_lr["diverged"] > 0]
            rows.append(
                {
                    **cell,
                    **norm,
                    "best_lr": lr,
                    "steps_at_best_lr": _steps_display(best[norm["norm"]]),
                    "steps_at_best_lr_mean": per_lr.loc[lr, "steps"],
                    "lrs_tried": ", ".join(f"{v:g}" for v in sorted(per_lr.index)),
                    "diverged_at": ", ".join(
                        f"{v:g} ({int(d.diverged)}/{int(d.runs)})" for v, d in div.iterrows()
                    )
                    or "none",
                    "smallest_diverged_lr": float(div.index.min()) if len(div) else math.nan,
                }
            )
        if "none" in best:
            for row in rows:
                if (
                    all(
                        row.get(k) == v or (pd.isna(row.get(k)) and pd.isna(v))
                        for k, v in cell.items()
                    )
                    and row["norm"] in best
                    and row["norm"] != "none"
                ):
                    r = _paired_ratio(best["none"], best[row["norm"]], "steps_c")
                    row.update(
                        {
                            "speedup_at_best_lr": r.ratio,
                            "speedup_at_best_lr_ci_low": r.low,
                            "speedup_at_best_lr_ci_high": r.high,
                            "speedup_at_best_lr_vs_none": _ratio_display(r),
                        }
                    )
    return _norm_sorted(pd.DataFrame(rows), [*keys, "norm"])


# --------------------------------------------------------------------------- regularization


def _paired_diff(a: pd.DataFrame, b: pd.DataFrame, col: str) -> Interval:
    m = a[["seed", col]].merge(b[["seed", col]], on="seed", suffixes=("_a", "_b"))
    return paired_difference_ci(m[f"{col}_a"], m[f"{col}_b"])


def regularization_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell x norm: gen_gap and loss_gap over seeds; effect = gap(none) - gap(this), paired.

    Diverged runs are left out (their final metrics are not a model's) and counted. When the sweep
    varies a ghost batch size, `effect_vs_full_stats` = gap(largest ghost size, i.e. full-batch
    statistics) - gap(this ghost size) for the same norm, batch size and seed.
    """
    if df.empty:
        return pd.DataFrame()
    keys = cell_keys(df)
    ghost = ghost_key(df)
    ok = df[~df["diverged"]]

    def matching(frame: pd.DataFrame, norm: str, values: dict) -> pd.DataFrame:
        sel = frame["norm"] == norm
        for k, v in values.items():
            sel &= (frame[k] == v) | (frame[k].isna() & pd.isna(v))
        return frame[sel]

    rows = []
    for cell, g_all in _groups(df, keys):
        g = g_all[~g_all["diverged"]]
        base = g[g["norm"] == "none"]
        if (
            base.empty and ghost is not None
        ):  # `none` ignores the ghost size: a none run with the same other keys
            base = matching(ok, "none", {k: v for k, v in cell.items() if k != ghost})
        for norm, h_all in _groups(g_all, ["norm"]):
            h = h_all[~h_all["diverged"]]
            row = {
                **cell,
                **norm,
                "runs": len(h),
                "diverged": int(h_all["diverged"].sum()),
                **_iv_cols("gen_gap", mean_ci(h["gen_gap"])),
                **_iv_cols("loss_gap", mean_ci(h["loss_gap"])),
                **_iv_cols("test_acc", mean_ci(h["final_test_acc"])),
                **_iv_cols("train_acc", mean_ci(h["final_train_acc"])),
            }
            if norm["norm"] != "none" and not base.empty:
                row.update(_iv_cols("effect", _paired_diff(base, h, "gen_gap")))
                row.update(_iv_cols("loss_effect", _paired_diff(base, h, "loss_gap")))
            if ghost is not None and norm["norm"] != "none":
                peers = matching(ok, norm["norm"], {k: v for k, v in cell.items() if k != ghost})
                sizes = peers[ghost].dropna()
                if peers[ghost].isna().any():
                    ref = peers[
                        peers[ghost].isna()
                    ]  # no ghost size = statistics over the whole batch
                else:
                    ref = peers[peers[ghost] == sizes.max()] if not sizes.empty else peers.iloc[:0]
                if not ref.empty:
                    row.update(_iv_cols("effect_vs_full_stats", _paired_diff(ref, h, "gen_gap")))
            rows.append(row)
    out = pd.DataFrame(rows)
    for col in ("gen_gap", "loss_gap", "effect"):
        if f"{col}_mean" in out.columns:
            out[col] = [
                fmt_interval(Interval(m, lo, hi, 2 if math.isfinite(lo) else 1))
                for m, lo, hi in zip(
                    out[f"{col}_mean"], out[f"{col}_ci_low"], out[f"{col}_ci_high"], strict=True
                )
            ]
    return _norm_sorted(out, [*keys, "norm"])


# --------------------------------------------------------------------------- BN noise, shift, ICS


def bn_noise_table(noise: pd.DataFrame) -> pd.DataFrame:
    """Per norm x layer x batch size: mean and CI over runs; log-log slopes per norm x layer."""
    if noise.empty:
        return pd.DataFrame()
    rows = []
    for key, g in _groups(noise, ["norm", "layer", "batch_size"]):
        rows.append(
            {
                **key,
                "runs": len(g),
                **_iv_cols("mean_noise", mean_ci(g["mean_noise"])),
                **_iv_cols("var_noise", mean_ci(g["var_noise"])),
                "expected_mean_noise": g["expected_mean_noise"].mean(),
            }
        )
    out = pd.DataFrame(rows)
    for key, g in _groups(out, ["norm", "layer"]):
        sel = (out["norm"] == key["norm"]) & (out["layer"] == key["layer"])
        out.loc[sel, "mean_noise_slope"] = loglog_slope(g["batch_size"], g["mean_noise_mean"])
        out.loc[sel, "var_noise_slope"] = loglog_slope(g["batch_size"], g["var_noise_mean"])
        out.loc[sel, "expected_slope"] = loglog_slope(g["batch_size"], g["expected_mean_noise"])
    return _norm_sorted(out, ["norm", "layer", "batch_size"])


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
    for key, g in _groups(per_run, [*keys, "norm", "site"]):
        rows.append(
            {
                **key,
                "layer": g["layer"].iloc[0],
                "runs": len(g),
                **_iv_cols("drift_p50", mean_ci(g["drift_p50"])),
                **_iv_cols("drift_std", mean_ci(g["drift_std"])),
                **_iv_cols("drift_p50_rel", mean_ci(g["drift_p50_rel"])),
            }
        )
    return _norm_sorted(pd.DataFrame(rows), [*keys, "norm", "site"])


def ics_table(probes: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per cell x norm: ||G - G'||_2, cos(G, G') and ||G - G'|| / ||G|| (mean per run, then over seeds)."""
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
    for key, g in _groups(per_run, [*keys, "norm"]):
        rows.append(
            {
                **key,
                "layer": g["layer"].iloc[0],
                "runs": len(g),
                **_iv_cols("ics_l2", mean_ci(g["ics_l2"])),
                **_iv_cols("ics_cos", mean_ci(g["ics_cos"])),
                **_iv_cols("ics_rel", mean_ci(g["ics_rel"])),
            }
        )
    return _norm_sorted(pd.DataFrame(rows), [*keys, "norm"])


# --------------------------------------------------------------------------- plots


def _subplots(*args, **kwargs):
    return plt.subplots(
        *args, layout="constrained", **kwargs
    )  # constrained: no second render for a tight box


def _save(fig, path: Path) -> Path:
    import io

    if getattr(fig, "_suptitle", None) is not None:  # long titles wrap instead of being clipped
        fig._suptitle.set_wrap(True)
        fig._suptitle.set_fontsize("medium")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _cell_label(cell: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in cell.items()) or "all runs"


def _norm_color(norm: str) -> str:
    return {"none": "tab:gray", "torch": "tab:blue", "custom": "tab:orange"}.get(norm, "tab:green")


def plot_accuracy(metrics: pd.DataFrame, keys: list[str], path: Path) -> Path | None:
    """Test accuracy vs optimizer steps: mean over seeds with a min-max band, one panel per cell."""
    if metrics.empty:
        return None
    cells = list(_groups(metrics, keys))[:12]
    cols = min(3, len(cells))
    rows = math.ceil(len(cells) / cols)
    fig, axes = _subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (cell, g) in zip(axes.flat, cells, strict=False):
        for norm, h in sorted(_groups(g, ["norm"]), key=lambda t: NORM_ORDER.get(t[0]["norm"], 9)):
            s = h.groupby("step")["test_acc"].agg(["mean", "min", "max", "count"])
            c = _norm_color(norm["norm"])
            ax.plot(
                s.index, s["mean"], color=c, label=f"{norm['norm']} ({h['run_id'].nunique()} seeds)"
            )
            ax.fill_between(s.index, s["min"], s["max"], color=c, alpha=0.2, linewidth=0)
        ax.set(title=_cell_label(cell), xlabel="optimizer steps", ylabel="test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(cells) :]:
        ax.axis("off")
    fig.suptitle("Test accuracy vs steps (mean over seeds; band = min–max)")
    return _save(fig, path)


def plot_shift_percentiles(probes: pd.DataFrame, keys: list[str], path: Path) -> Path | None:
    """Ioffe & Szegedy Fig. 1(b, c): p15/p50/p85 of one unit's input to the nonlinearity vs steps.

    First cell, lowest seed; panels: none (z), then z and z~ for each BN variant.
    """
    if probes.empty or "p50" not in probes.columns:
        return None
    p = probes[probes["site"].isin(["z", "z_tilde"])].copy()
    if p.empty:
        return None
    p["unit"] = p["unit"].astype(str)
    cell, g = next(iter(_groups(p, keys)))
    g = g[g["seed"] == g["seed"].min()]
    unit = next((u for u in g["unit"].unique() if u != "all"), "all")
    panels = [
        (n, s)
        for n in sorted(g["norm"].unique(), key=lambda v: NORM_ORDER.get(v, 9))
        for s in ("z", "z_tilde")
        if ((g["norm"] == n) & (g["site"] == s)).any()
    ]
    fig, axes = _subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (norm, site) in zip(axes.flat, panels, strict=True):
        h = g[(g["norm"] == norm) & (g["site"] == site) & (g["unit"] == unit)].sort_values("step")
        for q, style in (("p15", "--"), ("p50", "-"), ("p85", "--")):
            ax.plot(h["step"], h[q], style, color=_norm_color(norm), label=q)
        name = (
            "z (before BN)"
            if site == "z" and norm != "none"
            else ("z" if site == "z" else "z~ (after BN)")
        )
        ax.set(title=f"{norm}: {name}", xlabel="optimizer steps")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("input to the nonlinearity")
    axes.flat[0].legend(fontsize=8)
    layer = int(g["layer"].iloc[0])
    fig.suptitle(
        f"Layer {layer}, unit {unit}: 15/50/85th percentiles on the probe batch ({_cell_label(cell)}, seed {g['seed'].min()})"
    )
    return _save(fig, path)


def plot_shift_drift(probes: pd.DataFrame, keys: list[str], path: Path) -> Path | None:
    """Mean |change| of p50 and std between probes, averaged over units, vs steps; mean over seeds; first cell."""
    if probes.empty or "drift_p50" not in probes.columns:
        return None
    p = probes[
        probes["site"].isin(["z", "z_tilde"]) & (probes["unit"].astype(str) == "all")
    ].dropna(subset=["drift_p50"])
    if p.empty:
        return None
    cell, p = next(iter(_groups(p, keys)))
    fig, axes = _subplots(1, 2, figsize=(10, 3.6))
    for (norm, site), h in p.groupby(["norm", "site"]):
        s = h.groupby("step")[["drift_p50", "drift_std"]].mean()
        style = "-" if site == "z_tilde" or norm == "none" else ":"
        label = f"{norm} {'z~' if site == 'z_tilde' else 'z'}"
        axes[0].plot(s.index, s["drift_p50"], style, color=_norm_color(norm), label=label)
        axes[1].plot(s.index, s["drift_std"], style, color=_norm_color(norm), label=label)
    for ax, what in zip(axes, ("p50", "std"), strict=True):
        ax.set(xlabel="optimizer steps", ylabel=f"mean |Δ {what}| between probes", yscale="log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Covariate shift at layer {int(p['layer'].iloc[0])}: drift between probes (mean over units and seeds; {_cell_label(cell)})"
    )
    return _save(fig, path)


def plot_gen_gap(reg: pd.DataFrame, x: str, path: Path, xlabel: str) -> Path | None:
    """gen_gap vs `x` (log2 axis) with 95% CI error bars, one line per norm x the other cell keys."""
    if reg.empty or x not in reg.columns or "gen_gap_mean" not in reg.columns:
        return None
    others = [k for k in cell_keys_of(reg) if k != x and reg[k].nunique(dropna=False) > 1]
    fig, ax = _subplots(figsize=(7, 4.5))
    lines = sorted(
        _groups(reg.dropna(subset=[x, "gen_gap_mean"]), ["norm", *others]),
        key=lambda t: (NORM_ORDER.get(t[0]["norm"], 9), str(t[0])),
    )
    markers = "osD^v<>"
    for i, (key, h) in enumerate(lines):
        h = h.sort_values(x)
        err = np.vstack(
            [h["gen_gap_mean"] - h["gen_gap_ci_low"], h["gen_gap_ci_high"] - h["gen_gap_mean"]]
        )
        xs = h[x].astype(float) * 2 ** (
            0.025 * (i - (len(lines) - 1) / 2)
        )  # small offset: bars side by side
        other = {k: key[k] for k in others}
        ax.errorbar(
            xs,
            h["gen_gap_mean"],
            yerr=np.nan_to_num(err),
            marker=markers[i % len(markers)],
            capsize=3,
            color=_norm_color(key["norm"]),
            label=f"{key['norm']} {_cell_label(other) if other else ''}".strip(),
        )
    ax.set_xscale("log", base=2)
    xs_all = reg[x].dropna().astype(float)
    ax.set_xlim(
        xs_all.min() / 1.7, xs_all.max() * 1.7
    )  # room for the offsets, also with one batch size
    ax.set(
        xlabel=xlabel,
        ylabel="gen gap = train acc − test acc",
        title="Generalization gap (mean, 95% CI over seeds)",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_bn_noise(table: pd.DataFrame, path: Path) -> Path | None:
    """Log-log: noise of batch means and variances vs batch size per norm x layer, with 1/sqrt(m)."""
    if table.empty:
        return None
    fig, axes = _subplots(1, 2, figsize=(11, 4))
    styles = ["-", "--", ":", "-."]
    for (norm, layer), h in table.groupby(["norm", "layer"], sort=False):
        h = h.sort_values("batch_size")
        for ax, col in zip(axes, ("mean_noise", "var_noise"), strict=True):
            ax.plot(
                h["batch_size"],
                h[f"{col}_mean"],
                styles[(int(layer) - 1) % 4],
                marker="o",
                ms=3,
                color=_norm_color(norm),
                label=f"{norm} layer {layer} (slope {h[f'{col}_slope'].iloc[0]:.2f})",
            )
    m = np.array(sorted(table["batch_size"].unique()), dtype=float)
    axes[0].plot(m, 1 / np.sqrt(m), "k-", lw=1, alpha=0.6, label="1/√m")
    exp = table.groupby("batch_size")["expected_mean_noise"].mean()
    axes[0].plot(exp.index, exp.values, "k:", lw=1, label="expected (without replacement)")
    axes[1].plot(m, np.sqrt(2 / m), "k-", lw=1, alpha=0.6, label="√(2/m) (Gaussian)")
    for ax, what in zip(
        axes, ("batch mean: rms (μ_B − μ)/σ", "batch variance: rms (σ²_B/σ² − 1)"), strict=True
    ):
        ax.set(xscale="log", yscale="log", xlabel="batch size m", ylabel=what)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("BN noise: batch statistics around the full-training-set statistics")
    return _save(fig, path)


def plot_speedup(speed: pd.DataFrame, keys: list[str], path: Path) -> Path | None:
    if speed.empty or "speedup" not in speed.columns:
        return None
    s = speed.dropna(subset=["speedup"]).reset_index(drop=True)
    if s.empty:
        return None
    fig, ax = _subplots(figsize=(max(5, 0.9 * len(s) + 2), 4))
    labels = [f"{r['norm']}\n{_cell_label({k: r[k] for k in keys})}" for _, r in s.iterrows()]
    err = np.vstack([s["speedup"] - s["speedup_ci_low"], s["speedup_ci_high"] - s["speedup"]])
    ax.errorbar(
        range(len(s)), s["speedup"], yerr=np.nan_to_num(err), fmt="o", capsize=4, color="tab:blue"
    )
    for i, r in s.iterrows():
        if r["speedup_bound"] != "exact":
            ax.annotate(
                {"lower": "≥", "upper": "≤", "unknown": "?"}[r["speedup_bound"]],
                (i, r["speedup"]),
                textcoords="offset points",
                xytext=(6, 4),
            )
    ax.axhline(1, color="gray", lw=1)
    ax.set_xticks(range(len(s)), labels, fontsize=7)
    ax.set(
        ylabel="speed-up = steps(none) / steps(BN)",
        title="Speed-up to target (paired by seed, 95% bootstrap CI)",
    )
    ax.set_yscale("log")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_ics(probes: pd.DataFrame, keys: list[str], path: Path) -> Path | None:
    """||G - G'|| and cos(G, G') vs steps per norm, mean over seeds; first cell."""
    if probes.empty or "ics_l2" not in probes.columns:
        return None
    p = probes[probes["site"] == "ics"]
    if p.empty:
        return None
    cell, p = next(iter(_groups(p, keys)))
    fig, axes = _subplots(1, 2, figsize=(10, 3.6))
    for norm, h in p.groupby("norm"):
        s = h.groupby("step")[["ics_l2", "ics_cos"]].mean()
        axes[0].plot(s.index, s["ics_l2"], color=_norm_color(norm), label=norm)
        axes[1].plot(s.index, s["ics_cos"], color=_norm_color(norm), label=norm)
    axes[0].set(xlabel="optimizer steps", ylabel="‖G − G′‖₂", yscale="log")
    axes[1].set(xlabel="optimizer steps", ylabel="cos(G, G′)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Internal covariate shift at layer {int(p['layer'].iloc[0])} (Santurkar et al. Def. 2.1; mean over seeds; {_cell_label(cell)})"
    )
    return _save(fig, path)


# --------------------------------------------------------------------------- claims and report.md


def _claims(tables: dict[str, pd.DataFrame], target: dict | None) -> list[str]:
    """One sentence per claim, with the numbers that back it."""
    out = []
    sp = tables.get("speedup", pd.DataFrame())
    if target and not sp.empty and "speedup" in sp.columns:
        goal = f"{target['metric']} {'≥' if target['metric'].endswith('acc') else '≤'} {target['value']}"
        for _, r in sp.dropna(subset=["speedup"]).iterrows():
            base = sp[
                (sp["norm"] == "none")
                & np.logical_and.reduce([sp[k] == r[k] for k in cell_keys_of(sp)] or [True])
            ]
            none_steps = base["steps_to_target"].iloc[0] if len(base) else "—"
            if r["speedup_bound"] == "unknown":
                verdict = "not measured (both variants censored in some seeds)"
            elif (
                math.isfinite(r["speedup_ci_low"])
                and r["speedup_ci_low"] > 1
                and r["speedup_bound"] in ("exact", "lower")
            ):
                verdict = "supported"
            elif (
                math.isfinite(r["speedup_ci_high"])
                and r["speedup_ci_high"] < 1
                and r["speedup_bound"] in ("exact", "upper")
            ):
                verdict = "contradicted (BN slower)"
            else:
                verdict = "not supported at 95% (the CI includes 1, or too few seeds)"
            out.append(
                f"**Speed-up** ({r['norm']}, {_cell_label({k: r[k] for k in cell_keys_of(sp)})}): steps to {goal} "
                f"{none_steps} without BN vs {r['steps_to_target']} with {r['norm']}: speed-up {r['speedup_vs_none']} "
                f"over {int(r['speedup_pairs'])} paired seeds — {verdict}."
            )
    bl = tables.get("best_lr", pd.DataFrame())
    if not bl.empty and "speedup_at_best_lr_vs_none" in bl.columns:
        for _, r in bl.dropna(subset=["speedup_at_best_lr"]).iterrows():
            none = bl[bl["norm"] == "none"].iloc[0]
            out.append(
                f"**Learning rates** ({r['norm']}): best lr {r['best_lr']:g} vs {none['best_lr']:g} without BN "
                f"(diverged at: {r['diverged_at']} vs {none['diverged_at']}); speed-up at each variant's best lr "
                f"{r['speedup_at_best_lr_vs_none']}."
            )
    reg = tables.get("regularization", pd.DataFrame())
    if not reg.empty and "effect_mean" in reg.columns:
        rkeys = cell_keys_of(reg)
        for _, r in reg.dropna(subset=["effect_mean"]).iterrows():
            lo, hi = r["effect_ci_low"], r["effect_ci_high"]
            base = reg[
                (reg["norm"] == "none")
                & np.logical_and.reduce(
                    [(reg[k] == r[k]) | (reg[k].isna() & pd.isna(r[k])) for k in rkeys] or [True]
                )
            ]
            fit_none = base["train_acc_mean"].iloc[0] if len(base) else math.nan
            verdict = (
                "supported (BN's gap is smaller)"
                if math.isfinite(lo) and lo > 0
                else "contradicted (BN's gap is larger)"
                if math.isfinite(hi) and hi < 0
                else "not supported at 95% (the CI includes 0)"
            )
            if (
                math.isfinite(fit_none) and abs(fit_none - r["train_acc_mean"]) > 0.05
            ):  # gaps of unequally fitted models
                verdict = f"not comparable: the variants fit the training set unequally (train acc {fit_none:.3f} without BN vs {r['train_acc_mean']:.3f})"
            none_gap = base["gen_gap"].iloc[0] if len(base) else "—"
            out.append(
                f"**Regularization** ({r['norm']}, {_cell_label({k: r[k] for k in rkeys})}): gen gap "
                f"{none_gap} without BN vs {r['gen_gap']} with {r['norm']}; effect gap(none) − gap(BN) = {r['effect']} — {verdict}."
            )
    if not reg.empty and "effect_vs_full_stats_mean" in reg.columns:
        for _, r in reg.dropna(subset=["effect_vs_full_stats_mean"]).iterrows():
            out.append(
                f"**Ghost batches** ({r['norm']}, {_cell_label({k: r[k] for k in cell_keys_of(reg)})}): gap(full-batch stats) − gap(this) = "
                f"{r['effect_vs_full_stats_mean']:.3f} [{r['effect_vs_full_stats_ci_low']:.3f}, {r['effect_vs_full_stats_ci_high']:.3f}]."
            )
    sh = tables.get("shift", pd.DataFrame())
    for cell, g in _groups(sh, cell_keys_of(sh)) if not sh.empty else []:
        parts = [
            f"{r['norm']} {'z~' if r['site'] == 'z_tilde' else 'z'} {r['drift_p50_rel_mean']:.3f}"
            for _, r in g.iterrows()
        ]
        verdict = _compare(
            g[g["site"] == "z"], g[g["site"] == "z_tilde"], "drift_p50_rel", "BN's z~ drifts"
        )
        out.append(
            f"**Covariate shift** (layer {int(g['layer'].iloc[0])}, {_cell_label(cell)}): mean |Δ median| between probes / std — "
            f"{'; '.join(parts)} (mean over seeds){verdict}."
        )
    ics = tables.get("ics", pd.DataFrame())
    for cell, g in _groups(ics, cell_keys_of(ics)) if not ics.empty else []:
        parts = [
            f"{r['norm']} ‖G−G′‖/‖G‖ {r['ics_rel_mean']:.3f}, cos {r['ics_cos_mean']:.3f}"
            for _, r in g.iterrows()
        ]
        verdict = _compare(g, g, "ics_rel", "ICS is", ("lower", "higher"))
        out.append(
            f"**Internal covariate shift** (layer {int(g['layer'].iloc[0])}, {_cell_label(cell)}): {'; '.join(parts)}{verdict}."
        )
    bn = tables.get("bn_noise", pd.DataFrame())
    if not bn.empty:
        slopes = bn.drop_duplicates(["norm", "layer"])
        out.append(
            f"**BN noise**: log-log slope of the batch-mean noise vs batch size {slopes['mean_noise_slope'].mean():.3f} "
            f"(range {slopes['mean_noise_slope'].min():.3f} to {slopes['mean_noise_slope'].max():.3f} over {len(slopes)} norm × layer; "
            f"−0.5 expected, {slopes['expected_slope'].mean():.3f} with the without-replacement correction); "
            f"batch-variance noise slope {slopes['var_noise_slope'].mean():.3f}."
        )
    return out


def _compare(
    none_rows: pd.DataFrame,
    bn_rows: pd.DataFrame,
    col: str,
    subject: str,
    words: tuple[str, str] = ("less", "more"),
) -> str:
    """' — <subject> less / more than without BN ...' per BN variant, by whether the 95% CIs overlap."""
    base = none_rows[none_rows["norm"] == "none"]
    if base.empty:
        return ""
    b = base.iloc[0]
    parts = []
    for _, r in bn_rows[bn_rows["norm"] != "none"].iterrows():
        if r[f"{col}_ci_high"] < b[f"{col}_ci_low"]:
            parts.append(f"{r['norm']}: {subject} {words[0]} than without BN (95% CIs apart)")
        elif r[f"{col}_ci_low"] > b[f"{col}_ci_high"]:
            parts.append(f"{r['norm']}: {subject} {words[1]} than without BN (95% CIs apart)")
        else:
            parts.append(f"{r['norm']}: no clear difference (95% CIs overlap)")
    return " — " + "; ".join(parts) if parts else ""


def cell_keys_of(table: pd.DataFrame) -> list[str]:
    """Cell keys present in a result table (batch_size and dotted swept keys)."""
    return [c for c in table.columns if c == "batch_size" or ("." in c and c not in SEED_KEYS)]


def _markdown(frame: pd.DataFrame, columns: list[str]) -> str:
    cols = [c for c in columns if c in frame.columns]
    if frame.empty or not cols:
        return "_no data_\n"

    def cell(v) -> str:
        if isinstance(v, float):
            return "—" if not math.isfinite(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for _, r in frame.iterrows()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    results_dir: Path
    tables: dict[str, pd.DataFrame]
    plots: list[Path]
    claims: list[str]
    keys: list[str] = field(default_factory=list)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # summary.csv as read


def display_columns(name: str, keys: list[str]) -> list[str]:
    """The columns of each table that the terminal and report.md show."""
    return {
        "speedup": [
            *keys,
            "norm",
            "runs",
            "reached",
            "diverged",
            "steps_to_target",
            "speedup_vs_none",
        ],
        "best_lr": [
            *[k for k in keys if k != "train.lr"],
            "norm",
            "best_lr",
            "steps_at_best_lr",
            "diverged_at",
            "speedup_at_best_lr_vs_none",
        ],
        "regularization": [
            *keys,
            "norm",
            "runs",
            "gen_gap",
            "loss_gap",
            "effect",
            "effect_vs_full_stats_mean",
        ],
        "bn_noise": [
            "norm",
            "layer",
            "batch_size",
            "mean_noise_mean",
            "expected_mean_noise",
            "var_noise_mean",
            "mean_noise_slope",
            "var_noise_slope",
        ],
        "shift": [
            *keys,
            "norm",
            "site",
            "layer",
            "drift_p50_mean",
            "drift_std_mean",
            "drift_p50_rel_mean",
        ],
        "ics": [*keys, "norm", "layer", "ics_l2_mean", "ics_rel_mean", "ics_cos_mean"],
    }[name]


TITLES = {
    "speedup": "Speed-up: steps to target (mean [95% t-CI]; censored = never reached, shown as a bound) and steps(none)/steps(BN) paired by seed [bootstrap CI]",
    "best_lr": "Learning rates: best lr per variant, where it diverged, speed-up at each variant's best lr",
    "regularization": "Regularization: gen gap = train acc − test acc, loss gap = test − train loss (mean [95% CI]); effect = gap(none) − gap(BN), paired",
    "bn_noise": "BN noise: rms of (batch mean − full mean)/σ and of (batch var/full var − 1), per batch size; log-log slopes",
    "shift": "Covariate shift: mean |Δ| of p50 and std between probes (averaged over units), and Δp50 / std",
    "ics": "Internal covariate shift (Santurkar et al. Def. 2.1): ‖G − G′‖₂, ‖G − G′‖/‖G‖, cos(G, G′)",
}


def build_report(results_dir: str | Path) -> Report:
    """Read results_dir, write tables/*.csv, plots/*.png and report.md; return what was written."""
    results_dir = Path(results_dir)
    df = load_summary(results_dir)
    keys = cell_keys(df)
    cfg = _run_config(results_dir, df)
    target = (cfg.get("measure") or {}).get("target")
    probes = _run_csvs(results_dir, df, "probes.csv")
    noise = _run_csvs(results_dir, df, "bn_noise.csv")
    metrics = _run_csvs(results_dir, df, "metrics.csv")

    tables = {
        "speedup": speedup_table(df) if target else pd.DataFrame(),
        "best_lr": best_lr_table(df) if target else pd.DataFrame(),
        "regularization": regularization_table(df),
        "bn_noise": bn_noise_table(noise),
        "shift": shift_table(probes, keys),
        "ics": ics_table(probes, keys),
    }
    if not tables[
        "best_lr"
    ].empty:  # the speed-up table also says, per variant, its best lr and where it diverged
        on = [k for k in keys if k != "train.lr"] + ["norm"]
        lr_cols = tables["best_lr"][[*on, "best_lr", "diverged_at"]]
        tables["speedup"] = tables["speedup"].merge(lr_cols, on=on, how="left")
    for name, frame in tables.items():
        if not frame.empty:
            atomic_write_csv(results_dir / "tables" / f"{name}.csv", frame)

    pd_dir = results_dir / "plots"
    ghost = ghost_key(df)
    plots = [
        plot_accuracy(metrics, keys, pd_dir / "accuracy.png"),
        plot_speedup(tables["speedup"], keys, pd_dir / "speedup.png"),
        plot_gen_gap(
            tables["regularization"], "batch_size", pd_dir / "gen_gap.png", "batch size (log₂)"
        ),
        plot_gen_gap(
            tables["regularization"], ghost, pd_dir / "gen_gap_ghost.png", "ghost batch size (log₂)"
        )
        if ghost
        else None,
        plot_bn_noise(tables["bn_noise"], pd_dir / "bn_noise.png"),
        plot_shift_percentiles(probes, keys, pd_dir / "shift_percentiles.png"),
        plot_shift_drift(probes, keys, pd_dir / "shift_drift.png"),
        plot_ics(probes, keys, pd_dir / "ics.png"),
    ]
    plots = [p for p in plots if p is not None]
    claims = _claims(tables, target)
    report = Report(results_dir, tables, plots, claims, keys, df)
    atomic_write_text(results_dir / "report.md", report_markdown(report))
    return report


def report_markdown(report: Report) -> str:
    r = report
    lines = [
        f"# bnexp report: {r.results_dir.name}",
        "",
        "Intervals are 95%: t-intervals over seeds; speed-ups are ratios of mean steps, paired by seed, with a percentile "
        "bootstrap over seeds (with few seeds these intervals are rough). Runs that never reached the target are censored "
        "(shown as bounds, never dropped).",
        "",
        "## Claims",
        "",
    ]
    lines += [f"- {c}" for c in r.claims] or ["- _no claim could be measured from these results_"]
    lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in r.plots]
    for name, frame in r.tables.items():
        if frame.empty:
            continue
        lines += [
            "",
            f"## {name} ([tables/{name}.csv](tables/{name}.csv))",
            "",
            TITLES[name],
            "",
            _markdown(frame, display_columns(name, r.keys)),
        ]
    return "\n".join(lines) + "\n"


def rich_table(frame: pd.DataFrame, title: str, columns: list[str] | None = None) -> Table:
    cols = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    table = Table(title=title, title_justify="left")
    for col in cols:
        table.add_column(
            str(col).split(".")[-1] if "." in str(col) else str(col),
            justify="left" if col == "norm" else "right",
        )
    for _, row in frame.iterrows():
        table.add_row(
            *(
                "—"
                if isinstance(row[c], float) and not math.isfinite(row[c])
                else f"{row[c]:.4g}"
                if isinstance(row[c], float)
                else str(row[c])
                for c in cols
            )
        )
    return table


def print_report(report: Report, console: Console) -> None:
    """The key tables and the claims, for the terminal."""
    if not report.summary.empty:
        console.print(
            rich_table(
                comparison(report.summary),
                "Summary: final test accuracy, gen gap (train − test acc) and steps to target, mean ± std over seeds",
            )
        )
    for name in ("speedup", "best_lr", "regularization", "bn_noise", "shift", "ics"):
        frame = report.tables.get(name, pd.DataFrame())
        if name == "bn_noise" and not frame.empty:  # one line per norm x layer: the slopes
            frame = frame.drop_duplicates(["norm", "layer"])[
                ["norm", "layer", "runs", "mean_noise_slope", "expected_slope", "var_noise_slope"]
            ]
            console.print(
                rich_table(
                    frame,
                    "BN noise: log-log slope vs batch size (−0.5 expected; see tables/bn_noise.csv)",
                )
            )
        elif not frame.empty:
            console.print(rich_table(frame, TITLES[name], display_columns(name, report.keys)))
    for claim in report.claims:
        console.print(f"• {claim}", soft_wrap=True, highlight=False, markup=False)
    console.print(
        f"report: {report.results_dir / 'report.md'} ({len(report.plots)} plots in {report.results_dir / 'plots'})"
    )


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
    for values, g in _groups(df, keys):
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
    return _norm_sorted(out, keys)

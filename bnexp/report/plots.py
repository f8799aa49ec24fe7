"""Plots: one PNG per measurement, written atomically; each function returns its path, or None
when its data are absent. Colours: none gray, torch blue, custom orange.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bnexp.io import atomic_write_bytes  # noqa: E402

from .cells import NORM_ORDER, cell_keys, cell_label, groups  # noqa: E402


def _subplots(*args, **kwargs):
    # constrained layout: no second render for a tight box
    return plt.subplots(*args, layout="constrained", **kwargs)


def _save(fig, path: Path) -> Path:
    if getattr(fig, "_suptitle", None) is not None:  # long titles wrap instead of being clipped
        fig._suptitle.set_wrap(True)
        fig._suptitle.set_fontsize("medium")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _norm_color(norm: str) -> str:
    return {"none": "tab:gray", "torch": "tab:blue", "custom": "tab:orange"}.get(norm, "tab:green")


def plot_accuracy(metrics: pd.DataFrame, keys: list[str], path: Path) -> Path | None:
    """Test accuracy vs optimizer steps: mean over seeds with a min-max band, one panel per cell."""
    if metrics.empty:
        return None
    cells = list(groups(metrics, keys))[:12]
    cols = min(3, len(cells))
    rows = math.ceil(len(cells) / cols)
    fig, axes = _subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (cell, g) in zip(axes.flat, cells, strict=False):
        for norm, h in sorted(groups(g, ["norm"]), key=lambda t: NORM_ORDER.get(t[0]["norm"], 9)):
            s = h.groupby("step")["test_acc"].agg(["mean", "min", "max", "count"])
            c = _norm_color(norm["norm"])
            ax.plot(
                s.index, s["mean"], color=c, label=f"{norm['norm']} ({h['run_id'].nunique()} seeds)"
            )
            ax.fill_between(s.index, s["min"], s["max"], color=c, alpha=0.2, linewidth=0)
        ax.set(title=cell_label(cell), xlabel="optimizer steps", ylabel="test accuracy")
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
    cell, g = next(iter(groups(p, keys)))
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
        f"Layer {layer}, unit {unit}: 15/50/85th percentiles on the probe batch "
        f"({cell_label(cell)}, seed {g['seed'].min()})"
    )
    return _save(fig, path)


def plot_shift_drift(probes: pd.DataFrame, keys: list[str], path: Path) -> Path | None:
    """Mean |change| of p50 and std between probes (averaged over units) vs steps.

    Mean over seeds; first cell.
    """
    if probes.empty or "drift_p50" not in probes.columns:
        return None
    p = probes[
        probes["site"].isin(["z", "z_tilde"]) & (probes["unit"].astype(str) == "all")
    ].dropna(subset=["drift_p50"])
    if p.empty:
        return None
    cell, p = next(iter(groups(p, keys)))
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
        f"Covariate shift at layer {int(p['layer'].iloc[0])}: drift between probes "
        f"(mean over units and seeds; {cell_label(cell)})"
    )
    return _save(fig, path)


def plot_gen_gap(reg: pd.DataFrame, x: str, path: Path, xlabel: str) -> Path | None:
    """gen_gap vs `x` (log2 axis) with 95% CI error bars; one line per norm x other cell keys."""
    if reg.empty or x not in reg.columns or "gen_gap_mean" not in reg.columns:
        return None
    # sizes on a log axis: none finite (a sweep of ghost_batch_size: [null]) leaves no x to plot
    xs_all = pd.to_numeric(reg[x], errors="coerce")
    xs_all = xs_all[np.isfinite(xs_all) & (xs_all > 0)]
    if xs_all.empty or reg.loc[xs_all.index, "gen_gap_mean"].isna().all():
        return None
    others = [k for k in cell_keys(reg) if k != x and reg[k].nunique(dropna=False) > 1]
    fig, ax = _subplots(figsize=(7, 4.5))
    lines = sorted(
        groups(reg.dropna(subset=[x, "gen_gap_mean"]), ["norm", *others]),
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
            label=f"{key['norm']} {cell_label(other) if other else ''}".strip(),
        )
    ax.set_xscale("log", base=2)
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
    """Log-log: noise of batch means and variances vs batch size per norm x layer; 1/sqrt(m)."""
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
    s = speed.dropna(subset=["speedup"])
    s = s[s["speedup_bound"] != "none reached"].reset_index(drop=True)  # nothing measured
    if s.empty:
        return None
    fig, ax = _subplots(figsize=(max(5, 0.9 * len(s) + 2), 4))
    labels = [f"{r['norm']}\n{cell_label({k: r[k] for k in keys})}" for _, r in s.iterrows()]
    err = np.vstack([s["speedup"] - s["speedup_ci_low"], s["speedup_ci_high"] - s["speedup"]])
    err[~np.isfinite(err)] = 0.0  # a censored ratio's dropped end (inf, or the bound's 0)
    ax.errorbar(range(len(s)), s["speedup"], yerr=err, fmt="o", capsize=4, color="tab:blue")
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
        title="Speed-up to target (geometric mean over paired seeds, 95% t-CI)",
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
    cell, p = next(iter(groups(p, keys)))
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
        f"Internal covariate shift at layer {int(p['layer'].iloc[0])} "
        f"(Santurkar et al. Def. 2.1; mean over seeds; {cell_label(cell)})"
    )
    return _save(fig, path)


def plot_effect_trend(trend: pd.DataFrame, path: Path) -> Path | None:
    """BN's regularization effect (test acc(BN) - test acc(none)) vs log2 (ghost) batch size:
    per-size means with 95% t-CI bars, the mean of the per-seed fitted lines and its 95% t band;
    one panel per kind (batch, ghost), one line per group."""
    if trend.empty or "slope" not in trend.columns:
        return None
    kinds = [k for k in ("batch", "ghost") if (trend["kind"] == k).any()]
    fig, axes = _subplots(1, len(kinds), figsize=(7 * len(kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes.flat, kinds, strict=True):
        t = trend[trend["kind"] == kind]
        keys = [c for c in t.columns if (c == "batch_size" or "." in str(c)) and t[c].notna().any()]
        varying = [k for k in keys if t[k].nunique(dropna=False) > 1]
        lines = list(groups(t, [*keys, "norm", "basis"]))
        for i, (key, h) in enumerate(lines):
            h = h.sort_values("x")
            color = plt.get_cmap("tab10")(i % 10)
            style = "-"
            label = f"{key['norm']}, slope {h['slope'].iloc[0]:+.4f}"
            if varying:
                label += f" ({cell_label({k: key[k] for k in varying})})"
            x = h["x"].astype(float)
            err = np.vstack(
                [h["effect_mean"] - h["effect_ci_low"], h["effect_ci_high"] - h["effect_mean"]]
            )
            ax.errorbar(x, h["effect_mean"], yerr=np.nan_to_num(err), fmt="o", color=color,
                        capsize=3)  # fmt: skip
            ax.plot(x, h["fitted"], style, color=color, label=label)
            ax.fill_between(x, h["band_low"], h["band_high"], color=color, alpha=0.15, lw=0)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log", base=2)
        ghost = kind == "ghost"
        ax.set(
            xlabel="ghost batch size m (log₂)" if ghost else "batch size (log₂)",
            ylabel="test acc(ghost m) − test acc(full stats)"
            if ghost
            else "test acc(BN) − test acc(none)",
            title="Ghost-batch effect" if ghost else "BN's regularization effect",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Effect vs batch size: mean, 95% CI over seeds; line = per-seed least squares "
                 "on log₂ size, averaged; band = its 95% t-CI")  # fmt: skip
    return _save(fig, path)

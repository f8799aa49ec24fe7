"""The verdicts on BN's effects, one per claim and cell, each with its power; and all_claims.

speedup         per cell (with several lrs: per cell without the lr, each variant at its best
                lr): steps(none) / steps(BN), paired bootstrap CI; power on the per-seed log ratio
regularization  gap(none) - gap(BN) at matched fit when at least MATCHED_MIN_PAIRS seeds (and
                MATCHED_MIN_FRACTION of the pairs) reach the target in both variants, else at
                the end of training, with the caveat; the other one is stated alongside
trend           slope of that effect against log2 (ghost) batch size: "fades" when its CI is
                below 0 (verdict supported), "grows" above 0 (contradicted), else "not
                determined with N seeds" (not supported)
equivalence     ours ≡ torch's: custom - torch over every paired seed of every cell, steps to
                target relative to torch's and final test accuracy, against stated tolerances

BN = effects.bn_variant of each cell (torch's where the cell has it). See bnexp.report.claims
for the vocabulary and the Claim fields (mde, seeds_needed, basis, details).
"""

from __future__ import annotations

import math

import pandas as pd

from bnexp.stats import Interval, power_analysis, t_interval_se

from . import claims as C
from .cells import cell_keys, cell_label, groups, in_cell
from .claims import Claim, _count, _num
from .effects import MATCHED_MIN_FRACTION, MATCHED_MIN_PAIRS, bn_variant


def _variant_rows(table: pd.DataFrame, keys: list[str]):
    """(cell, the BN variant's row, none's row or None) per cell of `table`."""
    for cell, g in groups(table, keys):
        variant = bn_variant(g["norm"])
        if variant is None:
            continue
        base = g[g["norm"] == "none"]
        yield cell, g[g["norm"] == variant].iloc[0], (base.iloc[0] if len(base) else None)


def _power_text(mde: float, needed: int | None, inconclusive: bool, what: str) -> str:
    """' These seeds detect <what with {mde}> (80% power...); about N seeds would settle it.'"""
    if not math.isfinite(mde):
        return " Power: too few seeds to state one."
    text = f" These seeds detect {what.format(mde=mde)} (80% power, two-sided α 0.05)"
    if inconclusive:
        text += (
            f"; about {needed} seeds would settle the observed one"
            if needed
            else "; no practical number of seeds would settle an effect this small"
        )
    return text + "."


def _goal(target: dict) -> str:
    op = "≥" if target["metric"].endswith("acc") else "≤"
    return f"{target['metric']} {op} {target['value']}"


# --------------------------------------------------------------------------- speed-up


def speedup(sp: pd.DataFrame, best: pd.DataFrame, target: dict | None) -> list[Claim]:
    """Per cell: is steps(none) / steps(BN) > 1 at 95%? With several lrs, at each one's best."""
    at_best = not best.empty and "speedup_at_best_lr" in best.columns
    table, p = (best, "speedup_at_best_lr") if at_best else (sp, "speedup")
    if not target or table.empty or p not in table.columns:
        return []
    steps_col = "steps_at_best_lr" if at_best else "steps_to_target"
    out = []
    for cell, r, base in _variant_rows(table, cell_keys(table)):
        if base is None or pd.isna(r[p]):
            continue
        low, high, bound, n = r[f"{p}_ci_low"], r[f"{p}_ci_high"], r[f"{p}_bound"], r[f"{p}_pairs"]
        if bound == "unknown":
            verdict, why = "not determined", "not measured (both variants censored in some seeds)"
        elif math.isfinite(low) and low > 1 and bound in ("exact", "lower"):
            verdict, why = "supported", "supported"
        elif math.isfinite(high) and high < 1 and bound in ("exact", "upper"):
            verdict, why = "contradicted", "contradicted (BN slower)"
        else:
            verdict = "not supported"
            why = "not supported at 95% (the CI includes 1, or too few seeds)"
        pw = power_analysis(r[f"{p}_log_sd"] / math.sqrt(max(n, 1)), int(n), math.log(r[p]))
        mde = math.exp(pw.mde) if math.isfinite(pw.mde) else math.nan
        needed = pw.seeds_needed if verdict == "not supported" else None
        lrs = (
            f" at each variant's best lr ({base['best_lr']:g} vs {r['best_lr']:g})"
            if at_best
            else ""
        )
        text = (
            f"**Speed-up** (BN = {r['norm']}, {cell_label(cell)}){lrs}: steps to {_goal(target)}: "
            f"{base[steps_col]} without BN vs {r[steps_col]} with BN: speed-up "
            f"{r[f'{p}_vs_none']} over {int(n)} paired seeds — {why}."
            + _power_text(
                mde,
                needed,
                verdict == "not supported",
                "a speed-up of ×{mde:.2f} or more (or a slow-down as large)",
            )
        )
        out.append(
            Claim(
                claim="speedup",
                verdict=verdict,
                text=text,
                norm=r["norm"],
                cell=cell,
                estimate=_num(r[p]),
                ci_low=_num(low),
                ci_high=_num(high),
                n=_count(n),
                measure="steps(none) / steps(BN) to the target, ratio of means paired by seed",
                mde=_num(mde),
                seeds_needed=needed,
                basis="best lr" if at_best else "one lr",
                details={"lr_none": base["best_lr"], "lr_bn": r["best_lr"]} if at_best else {},
            )
        )
    return out


# --------------------------------------------------------------------------- regularization


def _judge(low: float, high: float) -> str:
    if math.isfinite(low) and low > 0:
        return "supported"
    if math.isfinite(high) and high < 0:
        return "contradicted"
    return "not supported"


WHY = {
    "supported": "supported (BN's gap is smaller)",
    "contradicted": "contradicted (BN's gap is larger)",
    "not supported": "not supported at 95% (the CI includes 0)",
}


def regularization(
    reg: pd.DataFrame, target: dict | None = None, best: pd.DataFrame | None = None
) -> list[Claim]:
    """Per cell: is gap(none) - gap(BN) > 0 at 95%, between equally fitted models?

    reg: the regularization table (at each variant's best lr when best_lr's table `best` is
    given). Matched fit when enough seeds reach the target in both variants (see the module
    docstring), else the final gaps, judged "not determined" when the variants' final train
    accuracies differ by more than 0.05.
    """
    if reg.empty or "effect_mean" not in reg.columns:
        return []
    keys = cell_keys(reg)
    out = []
    for cell, r, base in _variant_rows(reg, keys):
        if base is None or pd.isna(r["effect_mean"]):
            continue
        end_n = int(r.get("effect_n", 0) or 0)
        fit_n = int(r.get("fit_effect_n", 0) or 0) if "fit_effect_n" in r else 0
        matched = fit_n >= MATCHED_MIN_PAIRS and fit_n >= MATCHED_MIN_FRACTION * end_n
        p, gap = ("fit_effect", "fit_gen_gap") if matched else ("effect", "gen_gap")
        est, lo, hi = (r[f"{p}_{s}"] for s in ("mean", "ci_low", "ci_high"))
        n = fit_n if matched else end_n
        verdict = _judge(lo, hi)
        why = WHY[verdict]
        fit_none, fit_bn = base["train_acc_mean"], r["train_acc_mean"]
        if not matched and math.isfinite(fit_none) and abs(fit_none - fit_bn) > 0.05:
            # the gaps of unequally fitted models differ for reasons that are not BN's
            verdict = "not determined"
            why = (
                "not comparable: the variants fit the training set unequally (train acc "
                f"{fit_none:.3f} without BN vs {fit_bn:.3f})"
            )
        where = cell_label(cell)
        if best is not None and not best.empty:
            lrs = {b["norm"]: b["best_lr"] for _, b in best[in_cell(best, cell)].iterrows()}
            where += f", each at its best lr: none {lrs.get('none', math.nan):g}, "
            where += f"{r['norm']} {lrs.get(r['norm'], math.nan):g}"
        excluded = int(base.get("fit_excluded", 0) or 0) + int(r.get("fit_excluded", 0) or 0)
        if matched:
            basis = (
                f"at matched fit (each run's first evaluation with {_goal(target)}; "
                + (
                    f"{excluded} run(s) that never reached it left out)"
                    if excluded
                    else "every run reached it)"
                )
                if target
                else "at matched fit"
            )
            other = f" At the end of training: effect {r['effect']}."
        else:
            basis = "at the end of training"
            other = (
                f" (Final gaps: matched fit needs {MATCHED_MIN_PAIRS} or more seeds reaching "
                f"the target in both variants; {fit_n} of {end_n} did.)"
            )
        inconclusive = verdict == "not supported"
        pw = power_analysis(t_interval_se(Interval(est, lo, hi, n)), n, est)
        needed = pw.seeds_needed if inconclusive else None
        text = (
            f"**Regularization** (BN = {r['norm']}, {where}) {basis}: gen gap {base[gap]} "
            f"without BN vs {r[gap]} with BN; effect gap(none) − gap(BN) = {r[p]} over {n} "
            f"paired seeds — {why}.{other}"
            + _power_text(pw.mde, needed, inconclusive, "an effect of ±{mde:.3f} or more")
        )
        out.append(
            Claim(
                claim="regularization",
                verdict=verdict,
                text=text,
                norm=r["norm"],
                cell=cell,
                estimate=_num(est),
                ci_low=_num(lo),
                ci_high=_num(hi),
                n=n,
                measure="gen gap(none) - gen gap(BN), train acc - test acc, paired by seed",
                mde=_num(pw.mde),
                seeds_needed=needed,
                basis="matched fit" if matched else "final",
                details={
                    "final_effect": _num(r["effect_mean"]),
                    "final_ci": [_num(r["effect_ci_low"]), _num(r["effect_ci_high"])],
                    "final_n": end_n,
                    "matched_fit_effect": _num(r.get("fit_effect_mean")),
                    "matched_fit_ci": [
                        _num(r.get("fit_effect_ci_low")),
                        _num(r.get("fit_effect_ci_high")),
                    ],  # fmt: skip
                    "matched_fit_n": fit_n,
                    "never_reached_target": excluded,
                },
            )
        )
    return out


# --------------------------------------------------------------------------- trend


# a trend verdict needs this many seeds: a bootstrap over 2 seeds has 3 distinct resamples,
# so its "95% CI" is no interval at all (it once called a 2-seed trend "fades")
TREND_MIN_SEEDS = 3


def trend(tr: pd.DataFrame, unequal_fit: bool = False) -> list[Claim]:
    """Per group x kind: the slope of BN's effect against log2 (ghost) batch size, one sentence.

    Basis: matched fit when every batch size has MATCHED_MIN_PAIRS or more paired seeds there,
    else the final gaps. Sign convention: see bnexp.report.effects (slope < 0 = fades).
    `unequal_fit`: some batch size's final gaps compare unequally fitted networks (the
    regularization verdict said so); a slope of final gaps is then not determined either.
    """
    if tr.empty:
        return []
    keys = [c for c in tr.columns if c == "batch_size" or "." in str(c)]
    out = []
    for group, g in groups(tr, [*keys, "norm", "kind"]):
        fit = g[g["basis"] == "matched fit"]
        matched = len(fit) and fit["seeds"].min() >= MATCHED_MIN_PAIRS
        h = (fit if matched else g[g["basis"] == "final"]).sort_values("x")
        if h.empty or not math.isfinite(h["slope"].iloc[0]):
            continue
        r = h.iloc[0]
        slope, lo, hi, n = r["slope"], r["slope_ci_low"], r["slope_ci_high"], int(r["slope_seeds"])
        # "fades" is the claim: a regularization effect (> 0 at the smallest size) that
        # shrinks. A falling effect already <= 0 there is BN's gap growing past no BN's instead
        if n < TREND_MIN_SEEDS:
            verdict, word = (
                "not determined",
                (f"not determined with {n} seeds (a bootstrap CI needs {TREND_MIN_SEEDS} or more)"),
            )
        elif math.isfinite(hi) and hi < 0 and h["effect_mean"].iloc[0] > 0:
            verdict, word = "supported", "fades"
        elif math.isfinite(hi) and hi < 0:
            verdict, word = (
                "not supported",
                (
                    "falls below zero and further (no regularization effect to fade: BN's gap is "
                    "the larger one, more so as the batch grows)"
                ),
            )
        elif math.isfinite(lo) and lo > 0:
            verdict, word = "contradicted", "grows"
        else:
            verdict, word = "not supported", f"not determined with {n} seeds"
        direction = "falls" if word.startswith("falls") else word.split(" with")[0]
        if not matched and unequal_fit and group["kind"] == "batch":
            verdict = "not determined"
            word += (
                " as measured, but not comparable: at some batch sizes the variants fit the "
                "training set unequally, so their final gaps differ for reasons that are not BN's"
            )
        pw = power_analysis(r["slope_se"], n, slope)
        needed = pw.seeds_needed if verdict == "not supported" else None
        ghost = group["kind"] == "ghost"
        what = "gap(full-batch statistics) − gap(ghost batch m)" if ghost else "gap(none) − gap(BN)"
        axis = "ghost batch size m" if ghost else "batch size"
        cell = {k: v for k, v in group.items() if k in keys and not pd.isna(v)}
        points = ", ".join(f"{x:g}: {e:.3f}" for x, e in zip(h["x"], h["effect_mean"], strict=True))
        left = r.get("left_out", "") if matched else ""
        if isinstance(left, str) and left:  # sizes where a variant never reached the target
            points += f" ({left} left out: no matched fit there)"
        ci = f" [95% bootstrap CI {lo:.4f}, {hi:.4f}]" if math.isfinite(lo) else ""
        basis = "matched fit" if matched else "final"
        text = (
            f"**Trend** (BN = {group['norm']}, {cell_label(cell) if cell else 'all runs'}): "
            f"effect {what} ({basis} gaps) by {axis} — {points}; slope per doubling of the "
            f"{axis} {slope:+.4f}{ci} over {n} seeds — {word} (slope < 0: the effect fades as "
            f"the batch grows)."
            + _power_text(
                pw.mde,
                needed,
                verdict == "not supported",
                "a slope of ±{mde:.4f} per doubling or steeper",
            )
        )
        out.append(
            Claim(
                claim="trend",
                verdict=verdict,
                text=text,
                norm=group["norm"],
                cell=cell,
                estimate=_num(slope),
                ci_low=_num(lo),
                ci_high=_num(hi),
                n=n,
                measure=f"slope of {what} against log2 {axis}, least squares over the per-size "
                "means; paired bootstrap CI over seeds",
                mde=_num(pw.mde),
                seeds_needed=needed,
                basis=basis,
                details={"kind": group["kind"], "direction": direction},
            )
        )
    return out


# --------------------------------------------------------------------------- ours ≡ torch's


def _equivalence_verdict(low: float, high: float, tol: float, n: int) -> str:
    if n < 2 or not math.isfinite(low):
        return "not determined"
    if -tol <= low and high <= tol:
        return "equivalent"
    return "differs" if low > 0 or high < 0 else "not determined"


def equivalence(eq: pd.DataFrame) -> list[Claim]:
    """ours ≡ torch's over every paired seed of every cell (the table's "all cells" row)."""
    if eq.empty:
        return []
    r = eq[eq["scope"] == "all cells"].iloc[0]
    cells = int((eq["scope"] == "cell").sum())
    parts, out = [], []
    specs = [
        ("steps_rel_diff", "steps_rel_tolerance", "steps to target, relative to torch's",
         lambda v: f"{v:+.1%}"),
        ("test_acc_diff", "test_acc_tolerance", "final test accuracy", lambda v: f"{v:+.4f}"),
    ]  # fmt: skip
    for col, tol_col, label, fmt in specs:
        n = int(r[f"{col}_n"])
        if n == 0:
            continue
        est, lo, hi, tol = r[f"{col}_mean"], r[f"{col}_ci_low"], r[f"{col}_ci_high"], r[tol_col]
        verdict = _equivalence_verdict(lo, hi, tol, n)
        ci = f" [{fmt(lo)}, {fmt(hi)}]" if math.isfinite(lo) else ""
        word = f"not determined with {n} pairs" if verdict == "not determined" else verdict
        parts.append(f"{label} {fmt(est)}{ci} (tolerance ±{fmt(tol)[1:]}) — {word}")
        out.append((col, verdict, est, lo, hi, n, tol))
    if not out:
        return []
    text = (
        f"**Ours ≡ torch's** (custom − torch, paired by seed, {int(r['pairs'])} pairs in "
        f"{cells} cell(s)): {'; '.join(parts)}. The BN verdicts use torch's where a cell has it."
    )
    return [
        Claim(
            claim="equivalence",
            verdict=verdict,
            text=text,
            norm="custom",
            cell={},
            estimate=_num(est),
            ci_low=_num(lo),
            ci_high=_num(hi),
            n=n,
            measure=f"{col.removesuffix('_diff')}: custom - torch paired by seed"
            + (" / torch" if col.startswith("steps") else ""),
            basis="all cells",
            details={"tolerance": _num(tol)},
        )
        for col, verdict, est, lo, hi, n, tol in out
    ]


def all_claims(tables: dict[str, pd.DataFrame], target: dict | None) -> list[Claim]:
    """Every claim the tables can judge, in report.md's order.

    With several lrs (a best_lr table with speed-ups) the speed-up and regularization verdicts
    use each variant's best lr (`_regularization_best_lr`, built by compute_tables).
    """
    empty = pd.DataFrame()
    best = tables.get("best_lr", empty)
    reg = tables.get("regularization", empty)
    reg_best = tables.get("_regularization_best_lr", empty)
    regs = (
        regularization(reg_best, target, best)
        if not reg_best.empty
        else regularization(reg, target)
    )
    unequal = any(c.verdict == "not determined" and "not comparable" in c.text for c in regs)
    return [
        *speedup(tables.get("speedup", empty), best, target),
        *C.best_lr(best),
        *regs,
        *trend(tables.get("trend", empty), unequal),
        *equivalence(tables.get("equivalence", empty)),
        *C.ghost_batch(reg),
        *C.shift(tables.get("shift", empty)),
        *C.ics(tables.get("ics", empty)),
        *C.bn_noise(tables.get("bn_noise", empty)),
    ]

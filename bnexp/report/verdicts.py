"""The verdicts on BN's effects: one sentence per claim across its cells; and all_claims.

speedup         per cell (with several lrs: each variant at its best lr, chosen by fewest steps
                to the training target): steps(none) / steps(BN) as the geometric mean over
                paired seeds, with exp of the t-interval of the per-seed log ratios
regularization  per cell: test acc(BN) - test acc(none) after the fixed budget (test NLL and the
                reading at the lowest train loss both arms reach beside it), judged only when
                every run of both arms fitted its training set (final train acc >= measure.fit):
                else "not determined: not fitted". With several lrs: each arm at its best lr on
                validation accuracy; without a validation split every lr is a cell of its own
trend           the slope of that effect against log2 (ghost) batch size, fitted per seed, with
                the t-interval of the per-seed slopes: "fades" (supported) when it is below 0
                and the effect is positive at the smallest size; judged only where fitted
equivalence     ours ≡ torch's: custom - torch over every paired seed of every cell, steps to
                target relative to torch's and final test accuracy, against stated tolerances

Many cells, one answer: the cells of one claim are one family, judged with Holm's correction
and stated in one sentence (bnexp.report.family).
BN = effects.bn_variant of each cell (torch's where the cell has it). See bnexp.report.claims
for the vocabulary and the Claim fields (mde, seeds_needed, basis, details).
"""

from __future__ import annotations

import math

import pandas as pd

from bnexp.stats import Power, power_analysis

from . import claims as C
from .cells import cell_id, cell_keys, cell_label, groups
from .claims import Claim, as_float, as_int
from .effects import bn_variant, val_choice
from .family import (
    BOTH,
    family_alpha,
    family_sentence,
    judge_cells,
    not_supported_why,
    power_text,
    shared,
)
from .tables import NOT_REACHED

DEFAULT_FIT = 0.97  # measure.fit's default: the train acc every compared run must reach


def _variant_rows(table: pd.DataFrame, keys: list[str]):
    """(cell, the BN variant's row, none's row) per cell of `table` that has both."""
    for cell, g in groups(table, keys):
        variant = bn_variant(g["norm"])
        base = g[g["norm"] == "none"]
        if variant is not None and len(base):
            yield cell, g[g["norm"] == variant].iloc[0], base.iloc[0]


def _goal(target: dict) -> str:
    op = "≥" if target["metric"].endswith("acc") else "≤"
    return f"{target['metric']} {op} {target['value']}"


def budget_text(cfg: dict, keys: list[str]) -> str:
    """'2400 steps, lr rule none': the budget every run of a regularization study had ('' when
    the config does not say)."""
    train = cfg.get("train") or {}
    if not (train.get("steps") or train.get("epochs")):
        return ""
    budget = f"{train['steps']} steps" if train.get("steps") else f"{train['epochs']} epochs"
    if any(k.endswith("lr_scaling.rule") for k in keys):
        return f"{budget}, lr rule per cell"
    rule = (train.get("lr_scaling") or {}).get("rule", "none")
    return f"{budget}, lr rule {rule}"


# --------------------------------------------------------------------------- speed-up

# the directions a censored ratio can show: a lower bound can only show BN faster
RATIO_ALLOWED = {"exact": BOTH, "lower": {"supported"}, "upper": {"contradicted"}}
SPEEDUP_WHY = {"supported": "supported", "contradicted": "contradicted (BN slower)"}


def _speedup_part(label: str, r: pd.Series, base: pd.Series, p: str, steps: str, why: str) -> str:
    bound = r[f"{p}_bound"]
    if bound not in RATIO_ALLOWED:
        censored = (
            NOT_REACHED if bound == "none reached" else "both variants censored in some seeds"
        )
        return f"{label}: not determined: {censored}"
    return (
        f"{label}: {base[steps]} steps without BN vs {r[steps]} with BN, speed-up "
        f"{r[f'{p}_vs_none']} over {int(r[f'{p}_pairs'])} paired seeds — {why}"
    )


def speedup(sp: pd.DataFrame, best: pd.DataFrame, target: dict | None) -> list[Claim]:
    """Is steps(none) / steps(BN) > 1? Per cell, Holm over the cells; with several lrs, at
    each variant's best lr (fewest steps to the target). Power on the per-seed log ratios."""
    at_best = not best.empty and "speedup_at_best_lr" in best.columns
    table, p = (best, "speedup_at_best_lr") if at_best else (sp, "speedup")
    if not target or table.empty or p not in table.columns:
        return []
    rows = [x for x in _variant_rows(table, cell_keys(table)) if x[1][f"{p}_pairs"] > 0]
    allowed = [RATIO_ALLOWED.get(r[f"{p}_bound"], set()) for _, r, _ in rows]
    verdicts, qs = judge_cells(
        [r[f"{p}_p"] for _, r, _ in rows], [math.log(r[p]) for _, r, _ in rows], allowed
    )
    alpha = family_alpha(sum(map(bool, allowed)))
    parts, out = [], []
    for (cell, r, base), verdict, q, ok in zip(rows, verdicts, qs, allowed, strict=True):
        n = int(r[f"{p}_pairs"])
        pw = power_analysis(r[f"{p}_log_sd"] / math.sqrt(n), n, math.log(r[p]), alpha)
        pw = Power(math.exp(pw.mde), pw.seeds_needed) if ok else Power(math.nan, None)
        no = verdict == "not supported"
        why = not_supported_why(r[f"{p}_p"], q) if no else SPEEDUP_WHY.get(verdict, "")
        why += power_text(pw, no, "×{mde:.2f} or more", alpha)
        lrs = f" (lr {base['best_lr']:g} vs {r['best_lr']:g})" if at_best else ""
        parts.append(_speedup_part(cell_label(cell) + lrs, r, base, p, _steps_col(at_best), why))
        out.append(
            Claim(
                claim="speedup",
                verdict=verdict,
                text="",
                norm=r["norm"],
                cell=cell,
                estimate=as_float(r[p]) if ok else None,
                ci_low=as_float(r[f"{p}_ci_low"]) if ok else None,
                ci_high=as_float(r[f"{p}_ci_high"]) if ok else None,
                n=n,
                measure="steps(none) / steps(BN) to the target: geometric mean over paired "
                "seeds, exp of the t-interval of the per-seed log ratios",
                mde=as_float(pw.mde),
                seeds_needed=pw.seeds_needed if no else None,
                basis="best lr" if at_best else "one lr",
                details={"bound": r[f"{p}_bound"], "p": as_float(r[f"{p}_p"]), "p_holm": q}
                | ({"lr_none": base["best_lr"], "lr_bn": r["best_lr"]} if at_best else {}),
            )
        )
    head = f"BN = {out[0].norm}, steps to {_goal(target)}" if out else ""
    head += ", each variant at its best lr" if at_best else ""
    return shared(out, family_sentence("Speed-up", head, parts, verdicts))


def _steps_col(at_best: bool) -> str:
    return "steps_at_best_lr" if at_best else "steps_to_target"


# --------------------------------------------------------------------------- regularization

REG_WHY = {
    "supported": "supported (higher test accuracy with BN)",
    "contradicted": "contradicted (lower test accuracy with BN)",
}
NO_VAL = (
    "no validation split, so no lr is chosen and each lr is judged as a cell (set "
    "data.val_fraction to choose it on validation accuracy)"
)


def _fit_note(low: float, fit: float) -> str | None:
    """'not fitted (train acc 0.65 < 0.97)' when the least fitted run compared is below fit."""
    if math.isfinite(low) and low >= fit:
        return None
    for digits in (2, 3, 4, 6):  # as few as show it below the bar: 0.966 never "0.97 < 0.97"
        shown = f"{low:.{digits}f}"
        if float(shown) < fit:
            break
    return f"not fitted (train acc {shown} < {fit:g})"


def _reg_part(label: str, r: pd.Series, base: pd.Series, why: str) -> str:
    """One cell's clause of the regularization sentence."""
    curve = r.get("curve_acc_effect", "—")
    at_loss = f"; at the lowest train loss both reach {curve}" if curve not in ("—", None) else ""
    return (
        f"{label}: test acc {r['test_acc_mean']:.3f} with BN vs {base['test_acc_mean']:.3f} "
        f"without, effect {r['acc_effect']} over {int(r['acc_effect_n'])} seeds (test NLL "
        f"none − BN {r['nll_effect']}{at_loss}) — {why}"
    )


def _chosen_lrs(best: dict | None, cell: dict, norm: str) -> str:
    if not best:
        return ""
    chosen = best.get(cell_id(cell), {})
    return f" (lr {chosen.get('none', math.nan):g} vs {chosen.get(norm, math.nan):g})"


def regularization(
    reg: pd.DataFrame, fit: float = DEFAULT_FIT, budget: str = "", best: dict | None = None
) -> list[Claim]:
    """Is test acc(BN) - test acc(none) > 0 after the fixed budget, between fitted networks?

    Per cell of `reg` (the regularization table), Holm over the cells judged; a cell where a
    run of either arm ends below `fit` train accuracy is "not determined: not fitted". best:
    cell (without lr) -> {norm: lr chosen on validation}, named in the sentence.
    """
    if reg.empty or "acc_effect_mean" not in reg.columns:
        return []
    rows = [x for x in _variant_rows(reg, cell_keys(reg)) if x[1]["acc_effect_n"] > 0]
    lows = [min(r["train_acc_min"], b["train_acc_min"]) for _, r, b in rows]  # either arm
    notes = [_fit_note(low, fit) for low in lows]
    verdicts, qs = judge_cells(
        [r["acc_effect_p"] for _, r, _ in rows],
        [r["acc_effect_mean"] for _, r, _ in rows],
        [set() if note else BOTH for note in notes],
    )
    alpha = family_alpha(notes.count(None))
    parts, out = [], []
    for (cell, r, base), verdict, q, note, low in zip(rows, verdicts, qs, notes, lows, strict=True):
        label = cell_label(cell) + _chosen_lrs(best, cell, r["norm"])
        pw = power_analysis(r["acc_effect_se"], int(r["acc_effect_n"]), r["acc_effect_mean"], alpha)
        no = verdict == "not supported"
        why = not_supported_why(r["acc_effect_p"], q) if no else REG_WHY.get(verdict, "")
        why += power_text(pw, no, "±{mde:.3f} or more", alpha)
        parts.append(f"{label}: not determined: {note}" if note else _reg_part(label, r, base, why))
        pw = pw if not note else Power(math.nan, None)
        out.append(_reg_claim(cell, r, verdict, pw, q, fit, low))
    head = f"BN = {out[0].norm}; " if out else ""
    head += f"test acc(BN) − test acc(none) after {budget or 'the budget'}"
    head += ", each arm at its best lr on validation accuracy" if best else ", paired by seed"
    if not best and any(k == "train.lr" for k in cell_keys(reg)) and reg["train.lr"].nunique() > 1:
        head += f"; {NO_VAL}"
    return shared(out, family_sentence("Regularization", head, parts, verdicts))


def _reg_claim(
    cell: dict, r: pd.Series, verdict: str, pw, p_holm: float, fit: float, low: float
) -> Claim:
    """One cell's regularization Claim (details: p, Holm's p, the fit, the other readings).
    low: the lowest final train acc of either arm's runs (what the fit gate read)."""
    g = r.get  # columns a table without trajectories or matched fit lacks
    return Claim(
        claim="regularization",
        verdict=verdict,
        text="",
        norm=r["norm"],
        cell=cell,
        estimate=as_float(r["acc_effect_mean"]),
        ci_low=as_float(r["acc_effect_ci_low"]),
        ci_high=as_float(r["acc_effect_ci_high"]),
        n=as_int(r["acc_effect_n"]),
        measure="final test acc(BN) - final test acc(none), paired by seed",
        mde=as_float(pw.mde),
        seeds_needed=pw.seeds_needed if verdict == "not supported" else None,
        basis="final test acc",  # the test set's numbers after the whole budget
        details={
            "p": as_float(r["acc_effect_p"]),
            "p_holm": as_float(p_holm),
            "train_acc_min": as_float(low),  # the least fitted run of either arm
            "fit": fit,
            "nll_effect": as_float(r["nll_effect_mean"]),
            "nll_ci": [as_float(r["nll_effect_ci_low"]), as_float(r["nll_effect_ci_high"])],
            "curve_acc_effect": as_float(g("curve_acc_effect_mean")),
            "curve_ci": [
                as_float(g("curve_acc_effect_ci_low")),
                as_float(g("curve_acc_effect_ci_high")),
            ],
            "gap_effect": as_float(g("effect_mean")),
            "matched_fit_gap_effect": as_float(g("fit_effect_mean")),
        },  # fmt: skip
    )


# --------------------------------------------------------------------------- trend


def _trend_word(verdict: str, slope: float, first_effect: float) -> tuple[str, str]:
    """(verdict, word) after Holm: a significant fall of an effect already <= 0 is no fade."""
    if verdict == "supported" and first_effect <= 0:
        return "not supported", (
            "falls below zero and further (no regularization effect to fade: BN's test "
            "accuracy is the lower one, more so as the batch grows)"
        )
    word = {"supported": "fades", "contradicted": "grows"}.get(verdict, "not supported at 95%")
    return verdict, word


def _trend_part(cell: dict, kind: str, h: pd.DataFrame, word: str, power: str) -> str:
    """'batch_size=64, by batch size — 16: +0.040, 32: +0.023; slope per doubling -0.0167
    [-0.0310, -0.0023] over 3 seeds — fades; these seeds detect ...'."""
    r = h.iloc[0]
    lo, hi = r["slope_ci_low"], r["slope_ci_high"]
    axis = "ghost batch size m" if kind == "ghost" else "batch size"
    points = ", ".join(f"{x:g}: {e:+.3f}" for x, e in zip(h["x"], h["effect_mean"], strict=True))
    ci = f" [{lo:+.4f}, {hi:+.4f}]" if math.isfinite(lo) else " (one seed: no interval)"
    return (
        f"{cell_label(cell) if cell else 'all runs'}, by {axis} — {points}; slope per doubling "
        f"{r['slope']:+.4f}{ci} over {int(r['slope_seeds'])} seeds — {word}{power}"
    )


def _trend_groups(tr: pd.DataFrame, fit: float):
    """(cell, group, per-x rows sorted by x, fit note or None) per group x kind of the trend
    table; cell: the group's keys that are set."""
    keys = [c for c in tr.columns if c == "batch_size" or "." in str(c)]
    for group, g in groups(tr, [*keys, "norm", "kind"]):
        h = g.sort_values("x")
        if not math.isfinite(h["slope"].iloc[0]):
            continue
        worst = h["train_acc_min"].min()
        note = _fit_note(worst, fit)
        if note and math.isfinite(worst):
            note = note[:-1] + f" at {h.loc[h['train_acc_min'].idxmin(), 'x']:g})"
        cell = {k: v for k, v in group.items() if k in keys and not pd.isna(v)}
        yield cell, group, h, note


def trend(tr: pd.DataFrame, fit: float = DEFAULT_FIT) -> list[Claim]:
    """Does the effect fade as the (ghost) batch grows? The slope of test acc(BN) - test
    acc(none) per doubling, per seed with a t-interval; Holm over the groups; fitted only."""
    found = list(_trend_groups(tr, fit)) if not tr.empty else []
    verdicts, qs = judge_cells(
        [h["slope_p"].iloc[0] for _, _, h, _ in found],
        [-h["slope"].iloc[0] for _, _, h, _ in found],  # slope < 0 (fades) is BN's side
        [set() if note else BOTH for *_, note in found],
    )
    alpha = family_alpha(sum(note is None for *_, note in found))
    parts, out = [], []
    for (cell, group, h, note), verdict, q in zip(found, verdicts, qs, strict=True):
        r = h.iloc[0]
        verdict, word = _trend_word(verdict, r["slope"], r["effect_mean"])
        pw = power_analysis(r["slope_se"], int(r["slope_seeds"]), r["slope"], alpha)
        no = verdict == "not supported"
        if no and word.startswith("not supported"):
            word = not_supported_why(r["slope_p"], q)
        power = power_text(pw, no, "±{mde:.4f} per doubling", alpha)
        if note:
            word, power, pw = f"not determined: {note}", "", Power(math.nan, None)
        parts.append(_trend_part(cell, group["kind"], h, word, power))
        direction = word.split(" ")[0] if verdict != "not determined" else "not determined"
        out.append(_trend_claim(cell, group, r, verdict, direction, pw, q))
    if not out:
        return []
    head = "test acc(BN) − test acc(none) (ghost: ghost m − full-batch statistics) against log2 "
    head += "batch size; slope < 0: the effect fades as the batch grows"
    return shared(out, family_sentence("Trend", head, parts, [c.verdict for c in out]))


def _trend_claim(cell, group, r, verdict, direction, pw, q) -> Claim:
    ghost = group["kind"] == "ghost"
    what = "test acc(ghost m) - test acc(full-batch statistics)" if ghost else (
        "test acc(BN) - test acc(none)")  # fmt: skip
    axis = "ghost batch size m" if ghost else "batch size"
    return Claim(
        claim="trend",
        verdict=verdict,
        text="",
        norm=group["norm"],
        cell=cell,
        estimate=as_float(r["slope"]),
        ci_low=as_float(r["slope_ci_low"]),
        ci_high=as_float(r["slope_ci_high"]),
        n=int(r["slope_seeds"]),
        measure=f"slope of {what} against log2 {axis}: mean of per-seed least-squares slopes, "
        "t-interval over seeds",
        mde=as_float(pw.mde),
        seeds_needed=pw.seeds_needed if verdict == "not supported" else None,
        basis=r["basis"],
        details={
            "kind": group["kind"],
            "direction": direction,
            "p": as_float(r["slope_p"]),
            "p_holm": as_float(q),
        },
    )


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
            estimate=as_float(est),
            ci_low=as_float(lo),
            ci_high=as_float(hi),
            n=n,
            measure=f"{col.removesuffix('_diff')}: custom - torch paired by seed"
            + (" / torch" if col.startswith("steps") else ""),
            basis="all cells",
            details={"tolerance": as_float(tol)},
        )
        for col, verdict, est, lo, hi, n, tol in out
    ]


def all_claims(
    tables: dict[str, pd.DataFrame],
    target: dict | None,
    fit: float = DEFAULT_FIT,
    budget: str = "",
) -> list[Claim]:
    """Every claim the tables can judge, in report.md's order.

    Speed-up with several lrs: each variant at its best lr (fewest steps). Regularization and
    trend with several lrs: at each arm's best lr on validation accuracy when the runs have a
    validation split (`_regularization_best_val`, `_best_val_lr`, built by compute_tables);
    without one every lr is a cell of its own (no choice is made on test metrics).
    """
    empty = pd.DataFrame()
    reg = tables.get("regularization", empty)
    reg_val = tables.get("_regularization_best_val", empty)
    choice = val_choice(tables.get("_best_val_lr", empty))
    regs = regularization(reg_val if choice else reg, fit, budget, choice or None)
    return [
        *speedup(tables.get("speedup", empty), tables.get("best_lr", empty), target),
        *C.best_lr(tables.get("best_lr", empty)),
        *regs,
        *trend(tables.get("trend", empty), fit),
        *equivalence(tables.get("equivalence", empty)),
        *C.ghost_batch(reg),
        *C.shift(tables.get("shift", empty)),
        *C.ics(tables.get("ics", empty)),
        *C.bn_noise(tables.get("bn_noise", empty)),
    ]

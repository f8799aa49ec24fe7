"""Claims: one function per claim, each turning a result table into verdicts (`Claim` objects).

Every claim is stated in BN's favour, against the same cell without BN (`none`). BN is judged
once per claim: torch's BatchNorm where the cell has it, else ours (effects.bn_variant); the
`equivalence` claim checks that ours is torch's. The verdicts on BN's effects (speedup,
regularization, trend, equivalence) and all_claims live in bnexp.report.verdicts; this module
holds Claim and the measurement claims.

  speedup         BN reaches measure.target in fewer steps (steps(none)/steps(BN), geometric
                  mean over paired seeds); with several lrs: each variant at its own best lr
  best_lr         each variant at its own best lr (a measurement: verdict "measured")
  regularization  BN's final test accuracy is higher (effect = acc(BN) - acc(none), paired by
                  seed) after the fixed budget, between networks that fitted their training set
                  (final train acc >= measure.fit); test NLL and the reading at the lowest train
                  loss both arms reach stated beside it
  trend           the slope of that effect against log2 batch size (kind "batch") or log2 ghost
                  batch size (kind "ghost"): "fades" (slope CI < 0) supports the claim
  equivalence     ours ≡ torch's: paired custom - torch differences within tolerances
  ghost_batch     test acc(this ghost batch size) - test acc(full-batch statistics) ("measured")
  shift           BN's z~ (after BN) drifts less between probes than z without BN
  ics             BN's internal covariate shift ||G - G'|| / ||G|| is lower than without BN
  bn_noise        log-log slope of the batch-mean noise vs batch size ("measured"; -0.5 expected)

Verdicts (VERDICTS, a fixed vocabulary):

  supported       the test excludes "no effect", on BN's side: the 95% interval does, and with
                  several cells of one claim so does Holm's correction (family-wise 5%)
  contradicted    the same, on the other side
  not supported   the interval includes "no effect", or Holm's correction does not reject it
  not determined  these results cannot judge: no run reached the target, both variants
                  censored in some seeds, or a network that did not fit its training set
  measured        a measurement reported with its numbers, with no verdict attached
  equivalent      (equivalence) the 95% interval lies inside the stated tolerance
  differs         (equivalence) the interval excludes 0 and leaves the tolerance

Power (speedup, regularization, trend): `mde` = the smallest effect the seeds detect at 80%
power, two-sided alpha 0.05 / (cells judged) (bnexp.stats.power_analysis, from the spread and t
quantiles of the interval); `seeds_needed` (inconclusive verdicts only) = seeds that would
detect the observed effect with that power.

A sentence of report.md may state several verdicts (equivalence: steps and test accuracy; a
claim judged in several cells: one sentence across the cells); each verdict is one Claim, and
they share the sentence as `text`, the one source of the words report.md, report.html, the
terminal and claims.json show.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .cells import cell_keys, cell_label, groups, in_cell, key_value
from .effects import bn_variant

VERDICTS = (
    "supported",
    "contradicted",
    "not supported",
    "not determined",
    "measured",
    "equivalent",
    "differs",
)


# "-0" or "-0.000" standing alone (not "-0.5", "-0.001" or "10-0"): a zero its rounding signed
UNSIGNED_ZERO = re.compile(r"(?<![\w.])[-−](0(?:\.0+)?)(?![\d.])")


def unsigned_zeros(text: str) -> str:
    """'-0.000' -> '0.000' wherever rounding signed a zero; other numbers unchanged."""
    return UNSIGNED_ZERO.sub(r"\1", text)


@dataclass(frozen=True)
class Claim:
    """One verdict, as claims.json holds it (see the module docstring for the vocabularies)."""

    claim: str  # see the module docstring
    verdict: str  # one of VERDICTS
    text: str  # the sentence in report.md (markdown), shared by the verdicts it states
    norm: str | None  # the BN variant judged; None for a claim over all variants (bn_noise)
    cell: dict = field(default_factory=dict)  # cell key -> value ({}: all runs)
    estimate: float | None = None  # in the unit `measure` names
    ci_low: float | None = None  # 95% interval of the estimate; None where there is none
    ci_high: float | None = None
    n: int | None = None  # seeds (pairs for paired estimates; runs otherwise) behind it
    measure: str = ""  # what `estimate` is
    mde: float | None = None  # smallest effect these seeds detect (80% power), unit of estimate
    seeds_needed: int | None = None  # inconclusive only: seeds to detect the observed estimate
    basis: str = ""  # which comparison the verdict used ("final test acc", "best lr", ...)
    # further numbers named in the sentence; speedup, regularization, trend: p (the cell's
    # t-test) and p_holm (Holm-adjusted over the claim's cells)
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:  # the terminal, report.md and claims.json: one text
        object.__setattr__(self, "text", unsigned_zeros(self.text))

    def to_dict(self) -> dict:
        """JSON-ready: numpy scalars as Python numbers, NaN as None; a cell's whole-number keys
        as ints (a column with a null reads back as floats: ghost_batch_size 16.0 -> 16)."""
        out = {k: _plain(v) for k, v in asdict(self).items()}
        out["cell"] = {k: key_value(v) for k, v in out["cell"].items()}  # NaN is None by now
        return out


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return None if v is pd.NA or v is pd.NaT else v


def as_float(v) -> float | None:
    """v as a JSON number: None for None or NaN."""
    return None if v is None or pd.isna(v) else float(v)


def as_int(v) -> int | None:
    """v as a JSON integer: None for None or NaN."""
    return None if v is None or pd.isna(v) else int(v)


def _cell(row: pd.Series, keys: list[str]) -> dict:
    return {k: row[k] for k in keys}


# --------------------------------------------------------------------------- one per claim


def best_lr(bl: pd.DataFrame) -> list[Claim]:
    """Per cell x BN variant: its best lr, where it diverged, the speed-up at each's best lr."""
    if bl.empty or "speedup_at_best_lr_vs_none" not in bl.columns:
        return []
    keys = cell_keys(bl)
    several_cells = len(bl[keys].drop_duplicates()) > 1 if keys else False
    out = []
    for _, r in bl.dropna(subset=["speedup_at_best_lr"]).iterrows():
        cell = _cell(r, keys)
        if r["norm"] != bn_variant(bl.loc[in_cell(bl, cell), "norm"]):
            continue  # one BN variant (the speed-up claim judges it; the table has both)
        none = bl[(bl["norm"] == "none").to_numpy() & in_cell(bl, cell)].iloc[0]
        where = f"{r['norm']}, {cell_label(cell)}" if several_cells else r["norm"]
        text = (
            f"**Learning rates** ({where}): best lr {r['best_lr']:g} vs {none['best_lr']:g} "
            f"without BN (diverged at: {r['diverged_at']} vs {none['diverged_at']}); "
            f"speed-up at each variant's best lr {r['speedup_at_best_lr_vs_none']}."
        )
        out.append(
            Claim(
                claim="best_lr",
                verdict="measured",
                text=text,
                norm=r["norm"],
                cell=cell,
                estimate=as_float(r["speedup_at_best_lr"]),
                ci_low=as_float(r["speedup_at_best_lr_ci_low"]),
                ci_high=as_float(r["speedup_at_best_lr_ci_high"]),
                n=as_int(r.get("speedup_at_best_lr_pairs")),
                measure="steps(none at its best lr) / steps(BN at its best lr), paired by seed",
            )
        )
    return out


def ghost_batch(reg: pd.DataFrame) -> list[Claim]:
    """Per cell x BN variant of a ghost-batch sweep: test acc(this ghost size) - test acc(full-
    batch statistics), paired by seed ("measured"; the ghost trend judges it across sizes)."""
    if reg.empty or "acc_effect_vs_full_stats_mean" not in reg.columns:
        return []
    keys = cell_keys(reg)
    out = []
    for _, r in reg.dropna(subset=["acc_effect_vs_full_stats_mean"]).iterrows():
        cell = _cell(r, keys)
        m, lo, hi = (r[f"acc_effect_vs_full_stats_{s}"] for s in ("mean", "ci_low", "ci_high"))
        text = (
            f"**Ghost batches** ({r['norm']}, {cell_label(cell)}): test acc(this) − test "
            f"acc(full-batch stats) = {m:.3f} [{lo:.3f}, {hi:.3f}]."
        )
        out.append(
            Claim(
                claim="ghost_batch",
                verdict="measured",
                text=text,
                norm=r["norm"],
                cell=cell,
                estimate=as_float(m),
                ci_low=as_float(lo),
                ci_high=as_float(hi),
                n=as_int(r.get("acc_effect_vs_full_stats_n")),
                measure="final test acc(this ghost batch size) - final test acc(full-batch "
                "statistics), paired by seed",
                details={"gap_effect": as_float(r.get("effect_vs_full_stats_mean"))},
            )
        )
    return out


def _versus_none(base_rows, bn_rows, col, subject, words=("less", "more")):
    """(' — torch: <subject> less than without BN ...', [(BN row, verdict)]) for the one BN
    variant (effects.bn_variant) of bn_rows.

    Judged by whether the 95% CIs of the BN variant and of `none` are apart; no `none` row:
    no text, and every BN row "not determined".
    """
    base = base_rows[base_rows["norm"] == "none"]
    variant = bn_variant(bn_rows["norm"])  # one verdict for BN
    rows = [r for _, r in bn_rows[bn_rows["norm"] == variant].iterrows()]
    if base.empty:
        return "", [(r, "not determined") for r in rows]
    b = base.iloc[0]
    parts, judged = [], []
    for r in rows:
        if r[f"{col}_ci_high"] < b[f"{col}_ci_low"]:
            parts.append(f"{r['norm']}: {subject} {words[0]} than without BN (95% CIs apart)")
            judged.append((r, "supported"))
        elif r[f"{col}_ci_low"] > b[f"{col}_ci_high"]:
            parts.append(f"{r['norm']}: {subject} {words[1]} than without BN (95% CIs apart)")
            judged.append((r, "contradicted"))
        else:
            parts.append(f"{r['norm']}: no clear difference (95% CIs overlap)")
            judged.append((r, "not supported"))
    return (" — " + "; ".join(parts) if parts else ""), judged


def _per_variant(kind, text, judged, g, cell, col, measure) -> list[Claim]:
    """One Claim per judged BN row (estimate: its `col` mean and CI), or one "measured"."""
    judged = judged or [(g.iloc[0], "measured")]  # `none` alone: its numbers, no verdict
    return [
        Claim(
            claim=kind,
            verdict=verdict,
            text=text,
            norm=r["norm"],
            cell=cell,
            estimate=as_float(r[f"{col}_mean"]),
            ci_low=as_float(r[f"{col}_ci_low"]),
            ci_high=as_float(r[f"{col}_ci_high"]),
            n=as_int(r["runs"]),
            measure=measure,
        )
        for r, verdict in judged
    ]


def shift(sh: pd.DataFrame) -> list[Claim]:
    """Per cell: does BN's z~ drift less between probes than z without BN (95% CIs apart)?"""
    if sh.empty:
        return []
    out = []
    for cell, g in groups(sh, cell_keys(sh)):
        parts = [
            f"{r['norm']} {'z~' if r['site'] == 'z_tilde' else 'z'} {r['drift_p50_rel_mean']:.3f}"
            for _, r in g.iterrows()
        ]
        suffix, judged = _versus_none(
            g[g["site"] == "z"], g[g["site"] == "z_tilde"], "drift_p50_rel", "BN's z~ drifts"
        )
        text = (
            f"**Covariate shift** (layer {int(g['layer'].iloc[0])}, {cell_label(cell)}): "
            f"mean |Δ median| between probes / std — {'; '.join(parts)} "
            f"(mean over seeds){suffix}."
        )
        measure = "mean |Δ p50| between probes / std of the BN variant's z~ (none: z)"
        out += _per_variant("shift", text, judged, g, cell, "drift_p50_rel", measure)
    return out


def ics(table: pd.DataFrame) -> list[Claim]:
    """Per cell: is BN's ||G - G'|| / ||G|| lower than without BN (95% CIs apart)?"""
    if table.empty:
        return []
    out = []
    for cell, g in groups(table, cell_keys(table)):
        parts = [
            f"{r['norm']} ‖G−G′‖/‖G‖ {r['ics_rel_mean']:.3f}, cos {r['ics_cos_mean']:.3f}"
            for _, r in g.iterrows()
        ]
        suffix, judged = _versus_none(g, g, "ics_rel", "ICS is", ("lower", "higher"))
        text = (
            f"**Internal covariate shift** (layer {int(g['layer'].iloc[0])}, "
            f"{cell_label(cell)}): {'; '.join(parts)}{suffix}."
        )
        measure = "||G - G'|| / ||G|| (Santurkar et al. Def. 2.1), mean over probes and seeds"
        out += _per_variant("ics", text, judged, g, cell, "ics_rel", measure)
    return out


def bn_noise(bn: pd.DataFrame) -> list[Claim]:
    """The log-log slope of the batch-mean noise vs batch size, over every norm x layer."""
    if bn.empty:
        return []
    slopes = bn.drop_duplicates(["norm", "layer"])
    mean_slope = slopes["mean_noise_slope"]
    text = (
        f"**BN noise**: log-log slope of the batch-mean noise vs batch size "
        f"{mean_slope.mean():.3f} (range {mean_slope.min():.3f} to {mean_slope.max():.3f} over "
        f"{len(slopes)} norm × layer; −0.5 expected, {slopes['expected_slope'].mean():.3f} with "
        f"the without-replacement correction); batch-variance noise slope "
        f"{slopes['var_noise_slope'].mean():.3f}."
    )
    return [
        Claim(
            claim="bn_noise",
            verdict="measured",
            text=text,
            norm=None,
            cell={},
            estimate=as_float(mean_slope.mean()),
            n=len(slopes),
            measure="log-log slope of rms (batch mean - full mean) / σ vs batch size, "
            "mean over norm x layer (n = norm x layer pairs)",
        )
    ]


def sentences(claims: list[Claim]) -> list[str]:
    """The distinct sentences, in order (a sentence stating several verdicts appears once)."""
    return list(dict.fromkeys(c.text for c in claims))

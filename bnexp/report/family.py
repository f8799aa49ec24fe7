"""Many cells, one answer: a claim judged in several cells is one family of tests.

A cell is "supported" or "contradicted" only when its Holm-adjusted p (bnexp.stats.holm) is
below ALPHA. That keeps the chance of any false verdict in the family <= ALPHA, whatever the
cells' dependence (measured in tests/base/test_coverage.py). The cells then share one
sentence: the tally first, then each cell's clause. Power is stated at ALPHA / m, the level of
Holm's strictest step.
"""

from __future__ import annotations

import math
from dataclasses import replace

from bnexp.stats import holm

from .claims import Claim

ALPHA = 0.05  # family-wise error rate of each claim's verdicts
BOTH = {"supported", "contradicted"}


def judge_cells(
    ps: list[float], signs: list[float], allowed: list[set]
) -> tuple[list[str], list[float]]:
    """(verdict, Holm-adjusted p) per cell of one claim. A cell with an empty `allowed` is not
    judged ("not determined", NaN, outside the family). The others: "supported" (sign > 0) /
    "contradicted" (sign < 0) where the adjusted p is below ALPHA and that direction is
    allowed, else "not supported". sign: the estimate on BN's side (> 0 favours BN)."""
    judged = [i for i, ok in enumerate(allowed) if ok]
    adjusted = holm([ps[i] for i in judged])
    verdicts, qs = ["not determined"] * len(ps), [math.nan] * len(ps)
    for i, q in zip(judged, adjusted, strict=True):
        verdict = "supported" if signs[i] > 0 else "contradicted"
        verdicts[i] = verdict if q < ALPHA and verdict in allowed[i] else "not supported"
        qs[i] = float(q)
    return verdicts, qs


def family_alpha(m: int) -> float:
    """The α a family's power is stated at: ALPHA / m, Holm's strictest step (m cells judged)."""
    return ALPHA / max(m, 1)


def not_supported_why(p: float, q: float) -> str:
    """Why an interval that excludes 0 can still be 'not supported': Holm's correction."""
    if math.isfinite(p) and p < ALPHA <= q:
        return f"not supported after Holm's correction (p {p:.3f}, adjusted {q:.3f})"
    return "not supported at 95%"


def family_sentence(title: str, head: str, parts: list[str], verdicts: list[str]) -> str:
    """'**Title** (head): part — verdict.' for one cell; with several, the tally first and
    the correction named: '**Title** (head; 3 cells, Holm-corrected ...): supported in 1, ...'."""
    if len(parts) == 1:
        return f"**{title}** ({head}): {parts[0]}."
    order = ("supported", "contradicted", "not supported", "not determined")
    tally = ", ".join(f"{v} in {verdicts.count(v)}" for v in order if v in verdicts)
    return (
        f"**{title}** ({head}; {len(parts)} cells, Holm-corrected for family-wise α {ALPHA}): "
        f"{tally} of {len(parts)} — " + "; ".join(parts) + "."
    )


def power_text(pw, inconclusive: bool, what: str, alpha: float = ALPHA) -> str:
    """'; these seeds detect <what> (80% power, α ...), about N seeds would settle the observed
    one' (N for inconclusive verdicts only), or '' without a power."""
    if not math.isfinite(pw.mde):
        return ""
    text = f"; these seeds detect {what.format(mde=pw.mde)} (80% power, α {alpha:.3g})"
    if inconclusive and pw.seeds_needed:
        text += f", about {pw.seeds_needed} seeds would settle the observed one"
    return text


def shared(claims: list[Claim], text: str) -> list[Claim]:
    """The claims of one family, each with the family's one sentence."""
    return [replace(c, text=text) for c in claims]

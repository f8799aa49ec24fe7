"""Rendering a Report: report.md, report.html (self-contained) and the terminal tables.

report.md and report.html say the same: the claims (one sentence each, with its numbers), the
plots and each table's display columns under the table's title. The terminal shows the same
tables with short headers and a legend, split into several tables where the columns would not
fit the console's width (80 columns in a CI log), and never wraps a row.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bnexp.results import ResultsFolder

from .claims import Claim, sentences, unsigned_zeros
from .summary import comparison

INTRO = (
    "Intervals are 95% t-intervals over seeds: speed-ups are geometric means of the per-seed "
    "step ratios (exp of the t-interval of their logs), trends the mean of per-seed slopes. A "
    "claim judged in several cells is Holm-corrected (family-wise error 5%). Runs that never "
    "reached the target are censored (shown as one-sided bounds, never dropped)."
)
TITLES = {
    "speedup": "Speed-up: steps to target (mean [95% t-CI]; censored = never reached, shown as "
    "a bound) and steps(none)/steps(BN), geometric mean over paired seeds [95% t-CI]",
    "best_lr": "Learning rates: best lr per variant, where it diverged, speed-up at each "
    "variant's best lr",
    "regularization": "Regularization: acc effect = test acc(BN) − test acc(none) and NLL effect "
    "= test loss(none) − test loss(BN) after the budget, paired by seed (> 0 favours BN; judged "
    "only where every run reached measure.fit train acc, lowest in `min train`); curve = the acc "
    "effect at the lowest train loss both reach; effect = gen gap(none) − gap(BN); fit_* = "
    "gaps at matched fit (first evaluation meeting the target)",
    "trend": "Trend: BN's effect vs log₂ batch size (kind batch: test acc(BN) − test acc(none); "
    "kind ghost: test acc(ghost m) − test acc(full-batch stats)), mean [95% CI] per size, slope "
    "per doubling = mean of per-seed least-squares slopes with its t-CI (< 0: the effect fades)",
    "equivalence": "Ours ≡ torch's: custom − torch paired by seed (steps to target, also relative "
    "to torch's; final test accuracy), mean [95% CI], with the tolerances of the check",
    "bn_noise": "BN noise: rms of (batch mean − full mean)/σ and of (batch var/full var − 1), "
    "per batch size; log-log slopes",
    "shift": "Covariate shift: mean |Δ| of p50 and std between probes (averaged over units), "
    "and Δp50 / std",
    "ics": "Internal covariate shift (Santurkar et al. Def. 2.1): ‖G − G′‖₂, ‖G − G′‖/‖G‖, "
    "cos(G, G′)",
}


@dataclass
class Report:
    """What build_report wrote: the tables (as in tables/*.csv), plots, claims (as in
    claims.json; `sentences` are report.md's claim lines) and the summary it read."""

    results_dir: Path
    tables: dict[str, pd.DataFrame]
    plots: list[Path]
    claims: list[Claim]
    keys: list[str] = field(default_factory=list)  # the cell keys of the summary
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # summary.csv, shared cells merged

    @property
    def sentences(self) -> list[str]:
        return sentences(self.claims)


def display_columns(name: str, keys: list[str]) -> list[str]:
    """The columns of each table that the terminal, report.md and report.html show."""
    other_keys = [k for k in keys if k != "train.lr"]
    return {
        "speedup": [
            *keys, "norm", "runs", "reached", "diverged", "steps_to_target", "speedup_vs_none",
        ],
        "best_lr": [
            *other_keys, "norm", "best_lr", "steps_at_best_lr", "diverged_at",
            "speedup_at_best_lr_vs_none",
        ],
        "regularization": [
            *keys, "norm", "runs", "train_acc_min", "acc_effect", "nll_effect",
            "curve_acc_effect", "effect", "fit_effect",
        ],
        "trend": [
            *[k for k in keys if k not in ("batch_size", "train.lr")], "kind", "norm", "basis",
            "x", "seeds", "effect_mean", "slope", "slope_ci_low", "slope_ci_high",
        ],
        "equivalence": [
            "scope", *keys, "pairs", "steps_rel_diff_mean", "steps_rel_diff_ci_low",
            "steps_rel_diff_ci_high", "test_acc_diff_mean", "test_acc_diff_ci_low",
            "test_acc_diff_ci_high",
        ],
        "bn_noise": [
            "norm", "layer", "batch_size", "mean_noise_mean", "expected_mean_noise",
            "var_noise_mean", "mean_noise_slope", "var_noise_slope",
        ],
        "shift": [
            *keys, "norm", "site", "layer", "drift_p50_mean", "drift_std_mean",
            "drift_p50_rel_mean",
        ],
        "ics": [*keys, "norm", "layer", "ics_l2_mean", "ics_rel_mean", "ics_cos_mean"],
    }[name]  # fmt: skip


def cell_text(v) -> str:
    """A value as the terminal, report.md and report.html show it: numbers to at most 4
    significant digits, NaN as '—', and a zero never signed ('-0.000' in text reads '0.000')."""
    if isinstance(v, float | np.floating):
        if not math.isfinite(v):
            return "—"
        text = f"{float(v):.4g}"
        text = f"{float(text):.0f}" if "e+" in text else text  # 12350, not 1.235e+04
        return unsigned_zeros(text)
    return unsigned_zeros(str(v))


# --------------------------------------------------------------------------- report.md


def markdown_table(frame: pd.DataFrame, columns: list[str]) -> str:
    cols = [c for c in columns if c in frame.columns]
    if frame.empty or not cols:
        return "_no data_\n"
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += [
        "| " + " | ".join(cell_text(r[c]).replace("|", "\\|") for c in cols) + " |"
        for _, r in frame.iterrows()
    ]
    return "\n".join(lines) + "\n"


def report_markdown(report: Report) -> str:
    r = report
    lines = [f"# bnexp report: {r.results_dir.name}", "", INTRO, "", "## Claims", ""]
    lines += [f"- {s}" for s in r.sentences] or [
        "- _no claim could be measured from these results_"
    ]
    lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in r.plots]
    for name, frame in r.tables.items():
        if frame.empty or name not in TITLES:  # "_..." tables feed the claims only
            continue
        lines += [
            "",
            f"## {name} ([tables/{name}.csv](tables/{name}.csv))",
            "",
            TITLES[name],
            "",
            markdown_table(frame, display_columns(name, r.keys)),
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- report.html

CSS = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
th { background: #f3f3f3; }
td.text { text-align: left; }
figure { margin: 1rem 0; }
img { max-width: 100%; }
.file { color: #666; font-family: monospace; }
"""


def _inline_markdown(text: str) -> str:
    """A claim sentence as HTML: escaped, **bold** as <strong>."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def html_table(frame: pd.DataFrame, columns: list[str]) -> str:
    cols = [c for c in columns if c in frame.columns]
    if frame.empty or not cols:
        return "<p><em>no data</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for _, r in frame.iterrows():
        cells = "".join(
            f'<td class="text">{html.escape(cell_text(r[c]))}</td>'
            if c == "norm"
            else f"<td>{html.escape(cell_text(r[c]))}</td>"
            for c in cols
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def report_html(report: Report) -> str:
    """One self-contained page: the plots inlined as base64 PNG data URIs, no outside links."""
    r = report
    title = html.escape(f"bnexp report: {r.results_dir.name}")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{CSS}</style></head><body>",
        f"<h1>{title}</h1>",
        f"<p>{html.escape(INTRO)}</p>",
        "<h2>Claims</h2>",
        "<ul>",
        *[f"<li>{_inline_markdown(s)}</li>" for s in r.sentences],
        "</ul>" if r.sentences else "</ul><p><em>no claim could be measured</em></p>",
        "<h2>Plots</h2>",
    ]
    for p in r.plots:
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        name = html.escape(p.stem)
        parts.append(
            f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
            f"<figcaption>{name}</figcaption></figure>"
        )
    for name, frame in r.tables.items():
        if frame.empty or name not in TITLES:  # "_..." tables feed the claims only
            continue
        parts += [
            f"<h2>{html.escape(name)}</h2>",
            f"<p>{html.escape(TITLES[name])}</p>",
            f'<p class="file">tables/{html.escape(name)}.csv</p>',
            html_table(frame, display_columns(name, r.keys)),
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- the terminal

# short header -> what it means (the legend printed under a table names the ones it uses)
SHORT = {
    "batch_size": ("batch", "SGD batch size"),
    "final_test_acc": ("test acc", "final test accuracy"),
    "gen_gap": ("gen gap", "train acc − test acc"),
    "loss_gap": ("loss gap", "test loss − train loss"),
    "steps_to_target": ("steps", "optimizer steps to the target"),
    "reached": ("reached", "runs that reached the target"),
    "diverged": ("div", "runs that diverged"),
    "speedup_vs_none": ("speed-up", "steps(none)/steps(BN), geometric mean by seed [t-CI]"),
    "acc_effect": ("acc effect", "test acc(BN) − test acc(none), paired by seed"),
    "nll_effect": ("NLL effect", "test loss(none) − test loss(BN), paired by seed"),
    "curve_acc_effect": ("curve", "acc effect at the lowest train loss both reach"),
    "train_acc_min": ("min train", "lowest final train acc of the runs (the fit check)"),
    "effect": ("effect", "gap(none) − gap(BN), paired by seed"),
    "effect_vs_full_stats_mean": ("vs full", "gap(full-batch stats) − gap(this ghost size)"),
    "fit_gen_gap": ("fit gap", "gen gap at matched fit (first evaluation at the target)"),
    "fit_effect": ("fit effect", "gap(none) − gap(BN) at matched fit, paired by seed"),
    "fit_excluded": ("no fit", "runs that never reached the target (left out of fit)"),
    "basis": ("basis", "what the effect reads (final test acc)"),
    "x": ("size", "batch size (kind batch) or ghost batch size (kind ghost)"),
    "effect_mean": ("effect", "mean paired effect at that size"),
    "slope": ("slope", "effect change per doubling of the size (least squares)"),
    "slope_ci_low": ("low", "slope's 95% t-CI over per-seed slopes"),
    "slope_ci_high": ("high", "slope's 95% t-CI over per-seed slopes"),
    "steps_rel_diff_mean": ("Δsteps", "(custom − torch)/torch steps to target"),
    "steps_rel_diff_ci_low": ("low", "95% CI"),
    "steps_rel_diff_ci_high": ("high", "95% CI"),
    "test_acc_diff_mean": ("Δtest acc", "custom − torch final test accuracy"),
    "test_acc_diff_ci_low": ("low", "95% CI"),
    "test_acc_diff_ci_high": ("high", "95% CI"),
    "best_lr": ("best lr", "lr with the fewest steps to target"),
    "steps_at_best_lr": ("steps", "steps to target at the best lr"),
    "diverged_at": ("diverged at", "lr (runs diverged/runs)"),
    "speedup_at_best_lr_vs_none": ("speed-up", "steps(none at its best lr)/steps(BN at its)"),
    "mean_noise_slope": ("mean slope", "log-log slope of the batch-mean noise (−0.5 expected)"),
    "expected_slope": ("expected", "that slope without replacement"),
    "var_noise_slope": ("var slope", "log-log slope of the batch-variance noise"),
    "mean_noise_mean": ("mean noise", "rms (batch mean − full mean)/σ"),
    "expected_mean_noise": ("expected", "that noise for sampling without replacement"),
    "var_noise_mean": ("var noise", "rms (batch var/full var − 1)"),
    "drift_p50_mean": ("Δp50", "mean |Δ median| between probes"),
    "drift_std_mean": ("Δstd", "mean |Δ std| between probes"),
    "drift_p50_rel_mean": ("Δp50/std", "Δp50 in units of the spread"),
    "ics_l2_mean": ("‖G−G′‖", "gradient change from the earlier layers' update"),
    "ics_rel_mean": ("rel", "‖G−G′‖/‖G‖"),
    "ics_cos_mean": ("cos", "cos(G, G′)"),
    "model.ghost_batch_size": ("ghost", "model.ghost_batch_size"),
}
TERMINAL_TITLES = {
    "speedup": "Speed-up to target (mean [95% CI]; censored runs shown as bounds)",
    "best_lr": "Learning rates: best lr per variant",
    "regularization": "Regularization: generalization gaps (mean [95% CI])",
    "trend": "Trend: BN's effect vs batch size (slope per doubling, t-CI over seeds)",
    "equivalence": "Ours ≡ torch's: custom − torch, paired by seed",
    "bn_noise": "BN noise: log-log slope vs batch size",
    "shift": "Covariate shift: drift between probes",
    "ics": "Internal covariate shift (Santurkar et al. Def. 2.1)",
}
# the key columns of each table: repeated in every part when a table is split
ROW_KEYS = ("batch_size", "norm", "site", "layer", "kind", "basis", "x", "scope")


def short_header(col: str) -> str:
    if col in SHORT:
        return SHORT[col][0]
    return col.split(".")[-1]


def legend(columns: list[str]) -> str:
    """'steps = optimizer steps to the target; lr = train.lr' for the columns shown."""
    parts = []
    for c in columns:
        if c in SHORT:
            parts.append(f"{SHORT[c][0]} = {SHORT[c][1]}")
        elif "." in c:
            parts.append(f"{short_header(c)} = {c}")
    return "; ".join(dict.fromkeys(parts))


def _table(frame: pd.DataFrame, cols: list[str], title: str | None = None) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for col in cols:
        table.add_column(
            short_header(col), justify="left" if col in ("norm", "site") else "right", no_wrap=True
        )
    for _, row in frame.iterrows():
        table.add_row(*(cell_text(row[c]) for c in cols))
    return table


def _width(table: Table) -> int:
    out = Console(width=10_000, file=io.StringIO(), record=True)
    out.print(table)
    return max(cell_len(line) for line in out.export_text().splitlines())


def fitted_tables(frame: pd.DataFrame, columns: list[str] | None, width: int) -> list[Table]:
    """`frame`'s columns as one or more tables of at most `width` columns of text.

    The row keys (cell keys, norm, site, layer, ...) start every part; the other columns are
    added left to right while the part still fits. A part that cannot fit even its keys and one
    column is kept as is (rich then truncates it).
    """
    cols = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    keys = [c for c in cols if c in ROW_KEYS or "." in str(c)]
    values = [c for c in cols if c not in keys]
    if not values:
        return [_table(frame, keys)]
    parts, current = [], []
    for col in values:
        if current and _width(_table(frame, [*keys, *current, col])) > width:
            parts.append(current)
            current = []
        current.append(col)
    parts.append(current)
    return [_table(frame, [*keys, *part]) for part in parts]


def rich_table(frame: pd.DataFrame, title: str, columns: list[str] | None = None) -> Table:
    """`frame` as one rich Table with short headers (see SHORT); NaN as '—'."""
    cols = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    return _table(frame, cols, title)


def print_table(
    console: Console, frame: pd.DataFrame, title: str, columns: list[str] | None = None
) -> None:
    """Title, the table (split to fit the console's width) and the legend of its headers."""
    cols = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    console.print(f"[bold]{title}[/]", highlight=False)
    for table in fitted_tables(frame, cols, console.width):
        console.print(table)
    text = legend(cols)
    if text:
        console.print(text, style="dim", highlight=False, markup=False)
    console.print()


def slopes_frame(bn_noise: pd.DataFrame) -> pd.DataFrame:
    """One row per norm x layer: the log-log slopes of a bn_noise table."""
    cols = ["norm", "layer", "runs", "mean_noise_slope", "expected_slope", "var_noise_slope"]
    return bn_noise.drop_duplicates(["norm", "layer"])[cols]


def claim_text(sentence: str) -> Text:
    """A claim sentence for the terminal: its **bold** markdown as bold, the rest as written."""
    text = Text()
    for i, part in enumerate(re.split(r"\*\*(.+?)\*\*", sentence)):
        text.append(cell_text(part) if part else "", style="bold" if i % 2 else "")
    return text


def print_claims(report: Report, console: Console) -> None:
    """One bullet per claim sentence, wrapped to the console with a hanging indent."""
    if not report.sentences:
        console.print("no claim could be measured from these results", highlight=False)
        return
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for sentence in report.sentences:
        grid.add_row("•", claim_text(sentence))
    console.print(grid)


def print_report(report: Report, console: Console, detail: str = "tables") -> None:
    """The report for the terminal, at the console's width (80 columns in a CI log).

    detail: "claims" (the claim sentences only), "summary" (the summary table, the claims and
    where the report is: what `bnexp run` prints) or "tables" (every key table too).
    """
    if detail != "claims" and not report.summary.empty:
        print_table(
            console,
            comparison(report.summary),
            "Summary: mean ± std over seeds (steps: of the seeds that reached the target)",
        )
    names = ("speedup", "best_lr", "regularization", "trend", "equivalence", "bn_noise", "shift")
    for name in (*names, "ics") if detail == "tables" else ():
        frame = report.tables.get(name, pd.DataFrame())
        if frame.empty:
            continue
        if name == "bn_noise":  # one line per norm x layer: the slopes
            print_table(console, slopes_frame(frame), TERMINAL_TITLES[name])
        else:
            print_table(console, frame, TERMINAL_TITLES[name], display_columns(name, report.keys))
    print_claims(report, console)
    if detail == "claims":
        return
    where = ResultsFolder(report.results_dir)
    console.print(
        f"report: {where.report_md} (also {where.report_html.name}, {where.claims_json.name}, "
        f"{where.tables.name}/ and {len(report.plots)} plots)",
        highlight=False,
    )

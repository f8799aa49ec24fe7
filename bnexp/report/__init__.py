"""results/<name> -> tables with confidence intervals, plots, claims, report.md and report.html.

A *cell* is one setting of every swept key except the seed and the norm: its key columns are
`batch_size` and every other dotted swept column (`train.lr`, `model.ghost_batch_size`, ...),
given by `cell_keys`. Inside a cell the norm variants are compared over seeds, paired: the same
seed gives the same data order and initial weights. Written by `build_report(results_dir)`:

  tables/speedup.csv         per cell x norm: steps / epochs / seconds to target (mean, 95%
                             t-CI), censored counts, speed-up vs none (geometric mean of the
                             per-seed ratios, exp of the t-CI of their logs; one-sided when
                             censored), speedup_p
  tables/best_lr.csv         (train.lr swept) per variant: best lr (fewest steps), where it
                             diverged, speed-up at best lr
  tables/regularization.csv  per cell x norm: acc_effect = test acc(BN) - test acc(none) and
                             nll_effect = test loss(none) - test loss(BN), paired (mean, CI, p),
                             train_acc_min (the fit check), curve_* (the same at the lowest
                             train loss both reach); gen_gap, loss_gap, effect = gap(none) -
                             gap(BN); fit_*: gaps at matched fit; ghost sweeps: *_vs_full_stats
  tables/trend.csv           the regularization effect vs log2 batch size (and ghost size): per-
                             size means, train_acc_min, the mean of per-seed slopes with its
                             t-CI and p (bnexp.report.effects)
  tables/equivalence.csv     ours (custom) - torch's, paired by seed: steps to target, final
                             test accuracy, with CIs and tolerances
  tables/bn_noise.csv        per norm x layer x batch size: noise of batch means / variances,
                             log-log slopes
  tables/shift.csv           per cell x norm x site: drift of p50 and std of the probed layer's
                             inputs
  tables/ics.csv             per cell x norm: ||G - G'||, cos(G, G') (Santurkar et al. Def. 2.1)
  plots/*.png
  claims.json                one object per verdict (bnexp.report.claims: the vocabulary):
                             {claim, verdict, text, norm, cell, estimate, ci_low, ci_high, n,
                             measure, mde, seeds_needed, basis, details}
  report.md, report.html     one sentence per claim, with its numbers; the plots; the tables
                             (report.html is self-contained: plots inlined, no outside links)

Modules, in the order of the flow: cells (what a cell is), load (read the folder), effects
(matched fit, the one BN variant, best lr, trend, trajectory, ours ≡ torch's), tables (pure
DataFrame -> DataFrame), summary (the terminal's summary), plots, claims (Claim, the
measurement claims), family (Holm over a claim's cells, one sentence), verdicts (BN's verdicts
with their power; all_claims), render (markdown, HTML, terminal), build (build_report wires
them). Imports the base modules only, never torch.
"""

from .build import build_report, compute_tables, draw_plots
from .cells import NORM_ORDER, NOT_CELL_KEYS, cell_keys, cell_label, ghost_key
from .claims import VERDICTS, Claim
from .effects import bn_variant, equivalence_table, matched_fit, trend_table
from .load import load_summary, run_config, run_csvs
from .plots import (
    plot_accuracy,
    plot_bn_noise,
    plot_effect_trend,
    plot_gen_gap,
    plot_ics,
    plot_shift_drift,
    plot_shift_percentiles,
    plot_speedup,
)
from .render import (
    TITLES,
    Report,
    display_columns,
    print_report,
    print_table,
    report_html,
    report_markdown,
    rich_table,
    slopes_frame,
)
from .summary import comparison
from .tables import (
    best_lr_table,
    bn_noise_table,
    ics_table,
    regularization_table,
    shift_table,
    speedup_table,
)
from .verdicts import all_claims

__all__ = [
    "NORM_ORDER",
    "NOT_CELL_KEYS",
    "TITLES",
    "VERDICTS",
    "Claim",
    "Report",
    "all_claims",
    "bn_variant",
    "equivalence_table",
    "matched_fit",
    "trend_table",
    "plot_effect_trend",
    "best_lr_table",
    "bn_noise_table",
    "build_report",
    "cell_keys",
    "cell_label",
    "comparison",
    "compute_tables",
    "display_columns",
    "draw_plots",
    "ghost_key",
    "ics_table",
    "load_summary",
    "plot_accuracy",
    "plot_bn_noise",
    "plot_gen_gap",
    "plot_ics",
    "plot_shift_drift",
    "plot_shift_percentiles",
    "plot_speedup",
    "print_report",
    "print_table",
    "regularization_table",
    "report_html",
    "report_markdown",
    "rich_table",
    "run_config",
    "run_csvs",
    "shift_table",
    "slopes_frame",
    "speedup_table",
]

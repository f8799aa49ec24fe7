"""results/<name> -> tables with confidence intervals, plots, claims, report.md and report.html.

A *cell* is one setting of every swept key except the seed and the norm: its key columns are
`batch_size` and every other dotted swept column (`train.lr`, `model.ghost_batch_size`, ...),
given by `cell_keys`. Inside a cell the norm variants are compared over seeds, paired: the same
seed gives the same data order and initial weights. Written by `build_report(results_dir)`:

  tables/speedup.csv         per cell x norm: steps / epochs / seconds to target (mean, 95%
                             t-CI), censored counts, speed-up vs none (ratio of means, paired
                             bootstrap CI)
  tables/best_lr.csv         (train.lr swept) per variant: best lr, where it diverged, speed-up
                             at best lr
  tables/regularization.csv  per cell x norm: gen_gap, loss_gap (mean, CI), effect = gap(none) -
                             gap(BN) paired by seed; with a ghost-batch sweep also the effect vs
                             full-batch statistics
  tables/bn_noise.csv        per norm x layer x batch size: noise of batch means / variances,
                             log-log slopes
  tables/shift.csv           per cell x norm x site: drift of p50 and std of the probed layer's
                             inputs
  tables/ics.csv             per cell x norm: ||G - G'||, cos(G, G') (Santurkar et al. Def. 2.1)
  plots/*.png
  claims.json                one object per verdict (bnexp.report.claims: the vocabulary):
                             {claim, verdict, text, norm, cell, estimate, ci_low, ci_high, n,
                             measure}
  report.md, report.html     one sentence per claim, with its numbers; the plots; the tables
                             (report.html is self-contained: plots inlined, no outside links)

Modules, in the order of the flow: cells (what a cell is), load (read the folder), tables (pure
DataFrame -> DataFrame), plots, claims (one function per claim), render (markdown, HTML,
terminal), build (build_report wires them). Imports the base modules only, never torch.
"""

from .build import build_report, compute_tables, draw_plots
from .cells import NORM_ORDER, SEED_KEYS, cell_keys, cell_label, ghost_key
from .claims import VERDICTS, Claim, all_claims
from .load import load_summary, run_config, run_csvs
from .plots import (
    plot_accuracy,
    plot_bn_noise,
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
from .tables import (
    best_lr_table,
    bn_noise_table,
    comparison,
    ics_table,
    regularization_table,
    shift_table,
    speedup_table,
)

__all__ = [
    "NORM_ORDER",
    "SEED_KEYS",
    "TITLES",
    "VERDICTS",
    "Claim",
    "Report",
    "all_claims",
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

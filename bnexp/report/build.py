"""build_report: results/<name> -> tables/*.csv, plots/*.png, claims.json, report.md and
report.html, in that order (each file written atomically), and the Report that says what."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bnexp.errors import BnexpError
from bnexp.results import BN_NOISE, METRICS, PROBES, ResultsFolder

from . import plots as P
from .cells import cell_keys, ghost_key, merge_shared_cells
from .effects import (
    at_best_lr,
    at_common_loss,
    best_val_lr,
    equivalence_table,
    matched_fit,
    trend_table,
    with_common_loss,
    with_matched_fit,
)
from .load import load_summary, run_config, run_csvs, run_targets
from .render import Report, report_html, report_markdown
from .tables import (
    best_lr_table,
    bn_noise_table,
    for_csv,
    ics_table,
    regularization_table,
    shift_table,
    speedup_table,
)
from .verdicts import DEFAULT_FIT, all_claims, budget_text

# the spreads, p-values and bounds behind a table's headline columns (and the fit_* columns,
# secondary measurements): kept after the columns a reader looks at first
SECONDARY_COLUMNS = (
    "speedup_log_sd",
    "speedup_p",
    "speedup_at_best_lr_bound",
    "speedup_at_best_lr_log_sd",
    "speedup_at_best_lr_p",
)


# the regularization verdict's columns, last: the CSV's other columns keep their places
LAST_PREFIXES = (
    "test_loss_",
    "train_acc_min",
    "acc_effect",
    "nll_effect",
    "curve_",
)


def compute_tables(
    df: pd.DataFrame, probes: pd.DataFrame, noise: pd.DataFrame, target: dict | None
) -> dict[str, pd.DataFrame]:
    """Every result table (with the pair counts claims.json needs; see tables.PAIR_COUNTS).

    df: summary rows, with the matched-fit columns when the runs have them (effects.FIT_COLUMNS).
    Tables named with a leading "_" feed the claims only (never a CSV file nor the report):
    with train.lr swept and a validation split, `_best_val_lr` (effects.best_val_lr) and
    `_regularization_best_val` = the regularization table at each arm's best lr on validation
    accuracy (the trend then uses those runs too).
    """
    keys = cell_keys(df)
    tables = {
        "speedup": speedup_table(df) if target else pd.DataFrame(),
        "best_lr": best_lr_table(df) if target else pd.DataFrame(),
        "regularization": regularization_table(df),
        "bn_noise": bn_noise_table(noise),
        "shift": shift_table(probes, keys),
        "ics": ics_table(probes, keys),
    }
    if not tables["best_lr"].empty:
        # the speed-up table also says, per variant, its best lr and where it diverged
        on = [k for k in keys if k != "train.lr"] + ["norm"]
        lr_cols = tables["best_lr"][[*on, "best_lr", "diverged_at"]]
        tables["speedup"] = tables["speedup"].merge(lr_cols, on=on, how="left")
    val = best_val_lr(df)
    if not val.empty:  # regularization at each arm's best lr on validation, never on test
        best_runs = at_best_lr(df, val)
        tables["_best_val_lr"] = val
        tables["_regularization_best_val"] = regularization_table(best_runs)
        tables["trend"] = trend_table(best_runs)
    else:
        tables["trend"] = trend_table(df)
    tables["equivalence"] = equivalence_table(df)
    for name in ("speedup", "best_lr", "regularization"):  # secondary columns last
        frame = tables[name]
        secondary = [c for c in frame.columns if c.startswith("fit_") or c in SECONDARY_COLUMNS]
        last = [c for c in frame.columns if c.startswith(LAST_PREFIXES) and c not in secondary]
        first = [c for c in frame.columns if c not in secondary and c not in last]
        tables[name] = frame[first + secondary + last]
    order = ["speedup", "best_lr", "regularization", "trend", "equivalence"]
    return {k: tables[k] for k in order} | {k: v for k, v in tables.items() if k not in order}


def draw_plots(
    results_dir: Path,
    df: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    metrics: pd.DataFrame,
    probes: pd.DataFrame,
) -> list[Path]:
    """plots/*.png for the measurements these results have."""
    out = ResultsFolder(results_dir).plots
    keys = cell_keys(df)
    ghost = ghost_key(df)
    reg = tables["regularization"]
    made = [
        P.plot_accuracy(metrics, keys, out / "accuracy.png"),
        P.plot_speedup(tables["speedup"], keys, out / "speedup.png"),
        P.plot_gen_gap(reg, "batch_size", out / "gen_gap.png", "batch size (log₂)"),
        P.plot_gen_gap(reg, ghost, out / "gen_gap_ghost.png", "ghost batch size (log₂)")
        if ghost
        else None,
        P.plot_effect_trend(tables.get("trend", pd.DataFrame()), out / "effect_vs_batch.png"),
        P.plot_bn_noise(tables["bn_noise"], out / "bn_noise.png"),
        P.plot_shift_percentiles(probes, keys, out / "shift_percentiles.png"),
        P.plot_shift_drift(probes, keys, out / "shift_drift.png"),
        P.plot_ics(probes, keys, out / "ics.png"),
    ]
    return [p for p in made if p is not None]


def build_report(results_dir: str | Path, out: str | Path | None = None) -> Report:
    """Read results_dir; write tables/*.csv, plots/*.png, claims.json, report.md, report.html
    there, or in `out` (a folder of the same layout) when given. A folder that cannot be written
    is one BnexpError line naming it."""
    results_dir = Path(results_dir)
    folder = ResultsFolder(results_dir if out is None else out)
    df = merge_shared_cells(load_summary(results_dir))  # a run counts once, in one cell
    target = (run_config(results_dir, df).get("measure") or {}).get("target")  # first run's
    probes = run_csvs(results_dir, df, PROBES)
    noise = run_csvs(results_dir, df, BN_NOISE)
    metrics = run_csvs(results_dir, df, METRICS)
    df = with_matched_fit(df, matched_fit(metrics, run_targets(results_dir, df)))
    df = with_common_loss(df, at_common_loss(metrics, df))
    cfg = run_config(results_dir, df)
    fit = float((cfg.get("measure") or {}).get("fit", DEFAULT_FIT))

    full = compute_tables(df, probes, noise, target)
    tables = {name: for_csv(f) for name, f in full.items() if not name.startswith("_")}
    claims = all_claims(full, target, fit, budget_text(cfg, cell_keys(df)))
    try:
        for name, frame in tables.items():
            if not frame.empty:
                folder.write_table(name, frame)
        plots = draw_plots(folder.root, df, tables, metrics, probes)
        report = Report(folder.root, tables, plots, claims, cell_keys(df), df)
        folder.write_claims([c.to_dict() for c in claims])
        folder.write_report(report_markdown(report), report_html(report))
    except OSError as e:
        where = e.filename or folder.root
        raise BnexpError(
            f"{where}: cannot write the report ({e.strerror or e}); expected a writable "
            "folder (bnexp report RESULTS --out DIR writes it elsewhere)"
        ) from None
    return report

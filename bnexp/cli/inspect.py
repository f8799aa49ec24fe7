"""`bnexp repro`, `bnexp data info`, `bnexp report`, `bnexp noise`: check, inspect and report
on what a sweep recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bnexp.cli.common import (
    ConfigArg,
    OutOpt,
    ResultsArg,
    SetOpt,
    _fail,
    _setup_logging,
    app,
    console,
    err_console,
)
from bnexp.config import expand, load_experiment
from bnexp.errors import BnexpError
from bnexp.results import ResultsFolder


@app.command()
def repro(
    results: ResultsArg,
    run_id: Annotated[
        str,
        typer.Argument(
            help="The run to redo: its id (or a unique prefix), as in plan.csv.", show_default=False
        ),
    ],
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep",
            help="Write the rerun here (a new or empty folder outside the results folder) "
            "instead of a temporary folder that is removed.",
            show_default=False,
        ),
    ] = None,
    trust_code: Annotated[
        bool,
        typer.Option(
            "--trust-code",
            help="Import and run the Python code the run's config.yaml names (model.factory). "
            "Without it such a run is refused: a results folder may come from anyone.",
        ),
    ] = False,
) -> None:
    """Rerun one finished run and report any difference from the recorded one.

    The run is redone from its config.yaml in a scratch folder; metrics.csv is compared byte
    for byte and summary.json without its timings. Exits 0 when identical, 1 when anything
    differs. The results folder is not modified (a --keep folder inside it is refused). Code
    named in config.yaml (model.factory) runs only with --trust-code.
    """
    from bnexp.training.repro import reproduce

    _setup_logging(False)

    def on_start(rid: str, cfg, note: str | None) -> None:
        if note:
            err_console.print(f"[yellow]note[/]: {note}", highlight=False)
        status.update(f"rerunning {rid} ({cfg.train.epochs} epochs)")

    try:
        with console.status("checking the recorded run") as status:
            done = reproduce(results, run_id, keep, on_start, trust_code)
    except BnexpError as e:
        raise _fail(e) from None
    if done.diffs:
        console.print(
            f"[red]differs[/]: run {done.run_id} rerun on {done.device} (recorded vs rerun):",
            highlight=False,
        )
        for line in done.diffs:
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(
        f"[green]reproduced[/]: run {done.run_id}: metrics.csv identical ({done.rows} rows), "
        "summary.json equal apart from timings",
        highlight=False,
    )


data_app = typer.Typer(
    help="Inspect an experiment's data: shapes, class counts, pixel statistics, memory.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("info")
def data_info(config: ConfigArg, set_: SetOpt = None) -> None:
    """Load the experiment's data as `bnexp run` would and print shapes, class counts, pixel
    statistics and memory. An experiment that sweeps data.* keys shows each data set in turn.

    Exits 2 with one line when a file is missing, truncated or not in the expected layout.
    """
    import pandas as pd
    from rich.table import Table

    from bnexp.data import load_dataset
    from bnexp.data.info import class_table, standardization, value_table

    try:
        exp, _ = load_experiment(config, set_)
        configs = list(
            {run.config.data.model_dump_json(): run.config.data for run in expand(exp)}.values()
        )
        for cfg in configs:
            data = load_dataset(cfg)
            console.print(f"[bold]{data.describe()}[/]")
            console.print(f"  inputs: {standardization(data)}")
            for title, frame in (
                ("images per class", class_table(data)),
                ("pixel values as stored", value_table(data)),
            ):
                table = Table(title=title, title_justify="left")
                for col in frame.columns:
                    table.add_column(
                        str(col),
                        justify="right" if pd.api.types.is_numeric_dtype(frame[col]) else "left",
                    )
                for _, row in frame.iterrows():
                    table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
                console.print(table)
            console.print(
                f"  memory: {data.nbytes() / 2**20:.1f} MiB as stored ({data.x_train.dtype} images)"
            )
    except BnexpError as e:
        raise _fail(e) from None


@app.command()
def report(
    results: ResultsArg,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the tables, plots, claims and report here instead of in RESULTS (e.g. "
            "when RESULTS is read-only).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write tables, plots, claims and the report for a results folder; print the key tables.

    Writes RESULTS/tables/{speedup,best_lr,regularization,bn_noise,shift,ics}.csv (each where
    its data exist), RESULTS/plots/*.png, RESULTS/claims.json (each claim's verdict as data) and
    RESULTS/report.md and report.html (self-contained, plots inlined), which state each claim's
    outcome with its numbers. Intervals are 95%: t over seeds; speed-ups are paired by seed with
    a bootstrap; runs that never reach measure.target are censored, shown as bounds, never dropped.
    With --out DIR they are written there instead; a folder that cannot be written is one line
    and exit 2.
    """
    try:
        from bnexp.report import build_report, print_report

        print_report(build_report(results, out), console)
    except BnexpError as e:
        raise _fail(e) from None


@app.command()
def noise(
    config: ConfigArg,
    out: OutOpt = Path("results"),
    set_: SetOpt = None,
) -> None:
    """BN noise vs batch size at initialization: trains nothing.

    For every planned run with BN, builds the network with its initial weights (train.seed) and
    measures, at each BN layer, the spread of mini-batch means and variances around the
    full-training-set statistics for each size in measure.bn_noise.batch_sizes (defaults if the
    experiment has no measure.bn_noise). Writes OUT/<name>/noise/bn_noise.csv (one row per run,
    layer and batch size), tables/bn_noise_init.csv with the log-log slopes, and
    plots/bn_noise_init.png. For the noise at the end of training, set measure.bn_noise and use
    `bnexp run`.
    """
    from bnexp.report import bn_noise_table, plot_bn_noise, print_table, slopes_frame
    from bnexp.training.probes import noise_at_init

    try:
        exp, _ = load_experiment(config, set_)
        results_dir = out / exp.name
        frame = noise_at_init(exp, results_dir)
    except BnexpError as e:
        raise _fail(e) from None
    if frame.empty:
        console.print(
            "no run of this experiment has BN (model.norm: none everywhere): nothing to measure"
        )
        return
    table = bn_noise_table(frame)
    folder = ResultsFolder(results_dir)
    folder.write_table("bn_noise_init", table)
    plot_bn_noise(table, folder.plot("bn_noise_init"))
    print_table(
        console, slopes_frame(table), "BN noise at initialization: log-log slope vs batch size"
    )
    console.print(f"results: {results_dir}")

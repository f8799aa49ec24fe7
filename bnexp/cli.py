"""The `bnexp` command line. It only picks files and applies overrides; the work lives in modules."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bnexp.config import PlannedRun, expand, load_experiment
from bnexp.errors import BnexpError
from bnexp.report import build_report, print_report
from bnexp.sweep import is_complete, run_experiment

app = typer.Typer(
    help="bnexp — measure what Batch Normalization does: speed-up and regularization, "
    "with seeds and error bars. Start with `bnexp run configs/quickstart.yaml`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="Experiment YAML file (see configs/ for examples).", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a config value, as dotted.key=value (value read as YAML). Repeatable. "
        "Examples: --set train.lr=0.1  --set sweep.train.seed=[0,1,2]",
        show_default=False,
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Results root; the run writes to OUT/<name>/.")]


def _fail(e: BnexpError) -> typer.Exit:
    for line in str(e).splitlines():
        err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)], force=True,
    )


def _plan_table(plan: list[PlannedRun], results_dir: Path | None = None):
    from rich.table import Table

    table = Table(title=f"{len(plan)} run(s)")
    table.add_column("run_id")
    for key in plan[0].params if plan else []:
        table.add_column(key, justify="right")
    if results_dir is not None:
        table.add_column("status")
    for run in plan:
        cells = [run.run_id, *(str(v) for v in run.params.values())]
        if results_dir is not None:
            cells.append("done" if is_complete(results_dir / "runs" / run.run_id) else "to run")
        table.add_row(*cells)
    return table


@app.command()
def validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check an experiment file and print the expanded plan (run id and swept values); runs nothing.

    Exits 2 with one line per problem (file:line, dotted key, what was found and expected).
    """
    try:
        exp, _ = load_experiment(config, set_)
    except BnexpError as e:
        raise _fail(e) from None
    console.print(_plan_table(expand(exp)))
    console.print(f"[green]ok[/]: {config} is valid")


@app.command()
def run(
    config: ConfigArg,
    out: OutOpt = Path("results"),
    set_: SetOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and show what would run (done runs are skipped); write nothing.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log data shapes and per-run notes.")] = False,
) -> None:
    """Run an experiment: every run of its sweep, then summary.csv and the report (see `bnexp report`).

    Results go to OUT/<name>/ (see the README for the layout). Runs already complete
    (their summary.json exists) are skipped, so rerunning the same command resumes.
    """
    _setup_logging(verbose)
    try:
        exp, raw = load_experiment(config, set_)
        plan = expand(exp)
        results_dir = out / exp.name
        if dry_run:
            console.print(_plan_table(plan, results_dir))
            return
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err_console, transient=False,
        ) as progress:
            runs_task = progress.add_task("runs", total=len(plan))
            epoch_task = progress.add_task("epochs", total=exp.train.epochs)

            def on_run_start(run: PlannedRun, i: int, n: int) -> None:
                progress.update(runs_task, completed=i)
                label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in run.params.items()) or run.run_id
                progress.reset(epoch_task, total=run.config.train.epochs, description=f"  {label}")

            result = run_experiment(
                exp, raw, out, source=str(config), overrides=set_,
                on_run_start=on_run_start,
                on_epoch=lambda e, n: progress.update(epoch_task, completed=e),
            )
            progress.update(runs_task, completed=len(plan))
    except BnexpError as e:
        raise _fail(e) from None
    if result.skipped:
        console.print(f"skipped {len(result.skipped)} run(s) already complete")
    if not result.summary.empty:
        try:
            print_report(build_report(result.results_dir), console)
        except BnexpError as e:
            raise _fail(e) from None
    console.print(f"results: {result.results_dir}")


data_app = typer.Typer(help="Inspect an experiment's data: shapes, class counts, pixel statistics, memory.", no_args_is_help=True)
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
        configs = list({run.config.data.model_dump_json(): run.config.data for run in expand(exp)}.values())
        for cfg in configs:
            data = load_dataset(cfg)
            console.print(f"[bold]{data.describe()}[/]")
            console.print(f"  inputs: {standardization(data)}")
            for title, frame in (("images per class", class_table(data)), ("pixel values as stored", value_table(data))):
                table = Table(title=title, title_justify="left")
                for col in frame.columns:
                    table.add_column(str(col), justify="right" if pd.api.types.is_numeric_dtype(frame[col]) else "left")
                for _, row in frame.iterrows():
                    table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
                console.print(table)
            console.print(f"  memory: {data.nbytes() / 2**20:.1f} MiB as stored ({data.x_train.dtype} images)")
    except BnexpError as e:
        raise _fail(e) from None


ResultsArg = Annotated[Path, typer.Argument(help="A results folder written by `bnexp run`, e.g. results/quickstart.", show_default=False)]


@app.command()
def report(results: ResultsArg) -> None:
    """Write tables, plots and report.md for a results folder, and print the key tables.

    Writes RESULTS/tables/{speedup,best_lr,regularization,bn_noise,shift,ics}.csv (each where
    its data exist), RESULTS/plots/*.png and RESULTS/report.md, which states each claim's outcome
    with its numbers. Intervals are 95%: t over seeds; speed-ups are paired by seed with a
    bootstrap; runs that never reach measure.target are censored, shown as bounds, never dropped.
    """
    try:
        print_report(build_report(results), console)
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
    from bnexp.probes import noise_at_init

    try:
        exp, _ = load_experiment(config, set_)
        table, path = noise_at_init(exp, out / exp.name)
    except BnexpError as e:
        raise _fail(e) from None
    if table.empty:
        console.print("no run of this experiment has BN (model.norm: none everywhere): nothing to measure")
        return
    from bnexp.report import rich_table

    slopes = table.drop_duplicates(["norm", "layer"])[["norm", "layer", "runs", "mean_noise_slope", "expected_slope", "var_noise_slope"]]
    console.print(rich_table(slopes, "BN noise at initialization: log-log slope vs batch size (−0.5 expected)"))
    console.print(f"results: {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

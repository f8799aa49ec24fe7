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
from bnexp.report import comparison, rich_table
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
    """Run an experiment: every run of its sweep, then summary.csv and the comparison table.

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
    table = comparison(result.summary)
    if not table.empty:
        title = "final test accuracy, generalization gap (train − test acc) and steps to target, mean ± std over seeds"
        if exp.measure.target:
            title += f" — target: {exp.measure.target.metric} {'≥' if exp.measure.target.metric.endswith('acc') else '≤'} {exp.measure.target.value}"
        console.print(rich_table(table, title))
    console.print(f"results: {result.results_dir}")


bench_app = typer.Typer(help="Benchmarks: ratios measured side by side in one process (see also `make bench`).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("train")
def bench_train_cmd(
    tiny: Annotated[bool, typer.Option("--tiny", help="Tiny sizes and 1 repeat: checks the code paths in seconds, not the speed.")] = False,
    repeats: Annotated[int | None, typer.Option("--repeats", min=1, help="Repeats per measurement, medians reported (default 5; 1 with --tiny).", show_default=False)] = None,
    section: Annotated[list[str] | None, typer.Option("--section", help="Only these sections (repeatable): loops, denormal, vectorize, workers, memory.", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch threads for the in-process sections (default: torch's).", show_default=False)] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the table to this CSV file.", show_default=False)] = None,
) -> None:
    """Time bnexp's training loop (a) against a hand-written loop (b) and a DataLoader loop (c),
    flushing denormals, seeds trained together, --workers 2 vs 1 and peak memory; print the table.
    """
    from bnexp.bench_train import SECTIONS, bench_train, rich_table
    from bnexp.io import atomic_write_csv

    bad = [s for s in section or [] if s not in SECTIONS]
    if bad:
        raise _fail(BnexpError(f"--section {bad[0]}: unknown section (expected one of: {', '.join(SECTIONS)})"))
    df = bench_train(tiny=tiny, repeats=repeats, sections=tuple(section or SECTIONS), threads=threads,
                     log=lambda m: err_console.print(f"[dim]{m}[/]"))
    if csv is not None:
        atomic_write_csv(csv, df)
    console.print(rich_table(df))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

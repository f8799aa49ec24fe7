"""The `bnexp` command line. It only picks files and applies overrides; the work lives in modules."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bnexp.config import PlannedRun, expand, load_experiment
from bnexp.errors import BnexpError
from bnexp.report import comparison, rich_table
from bnexp.store import Outcome
from bnexp.sweep import is_complete, resume_command, run_experiment

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
    workers: Annotated[int | None, typer.Option("--workers", "-j", min=1, help="Runs trained at once. Default: one per CPU core (one in all for a single run or for GPU runs). Each local worker gets max(1, cores // N) torch threads; results do not depend on N.", show_default=False)] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also rerun runs recorded as failed (by default a rerun skips them, like complete ones).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rerun every run, complete ones included (their old results are replaced).")] = False,
    executor: Annotated[str, typer.Option("--executor", help="Where runs execute: local (this machine, a process pool) or ray (Ray tasks; pip install 'bnexp[ray]').")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to join (e.g. auto, or ray://host:10001); default: start a local Ray.", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log data shapes and per-run notes.")] = False,
) -> None:
    """Run an experiment: every run of its sweep, then summary.csv and the comparison table.

    Results go to OUT/<name>/ (see the README for the layout). A rerun of the same command skips
    finished runs, resumes interrupted ones from their last checkpoint, and shares the work with
    any other `bnexp run` on the same folder (each run is claimed with a lock). Ctrl-C stops within
    seconds and prints the command that resumes. Exits 1 if any run failed, listing them.
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
            tasks: dict[str, int] = {}

            def on_start(n_todo: int, n_workers: int) -> None:
                where = f"{n_workers} worker(s)" if executor == "local" else "ray"
                tasks["runs"] = progress.add_task(f"runs ({where})", total=n_todo)

            def on_run_start(r: PlannedRun) -> None:
                label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in r.params.items()) or r.run_id
                if "epochs" not in tasks:
                    tasks["epochs"] = progress.add_task("epochs", total=r.config.train.epochs)
                progress.reset(tasks["epochs"], total=r.config.train.epochs, description=f"  {label}")

            def on_outcome(o: Outcome) -> None:
                progress.advance(tasks["runs"])
                if o.status == "failed":
                    progress.console.print(f"[red]failed[/] {o.run_id}: {o.error}", highlight=False)

            def on_wait(busy: list[str]) -> None:
                progress.update(tasks["runs"], description=f"runs (waiting for {len(busy)} claimed by another process)")

            result = run_experiment(
                exp, raw, out, source=str(config), overrides=set_,
                workers=workers, executor=executor, address=address, retry_failed=retry_failed, force=force,
                on_start=on_start, on_run_start=on_run_start,
                on_epoch=lambda e, n: progress.update(tasks["epochs"], completed=e),
                on_outcome=on_outcome, on_wait=on_wait,
            )
    except BnexpError as e:
        raise _fail(e) from None
    if result.skipped:
        console.print(f"skipped {len(result.skipped)} run(s) already finished")
    table = comparison(result.summary)
    if not table.empty:
        title = "final test accuracy, generalization gap (train − test acc) and steps to target, mean ± std over seeds"
        if exp.measure.target:
            title += f" — target: {exp.measure.target.metric} {'≥' if exp.measure.target.metric.endswith('acc') else '≤'} {exp.measure.target.value}"
        console.print(rich_table(table, title))
    if result.diverged:
        console.print(f"[yellow]diverged[/]: {len(result.diverged)} run(s) stopped early on a NaN/inf or too-large loss: {', '.join(result.diverged)}")
    console.print(f"results: {result.results_dir}")
    if result.interrupted:
        done = sum(o.status in ("complete", "diverged") for o in result.outcomes.values())
        err_console.print(f"[yellow]interrupted[/]: {done} run(s) finished in this call are kept. Resume with:\n  {resume_command(sys.argv[1:])}", highlight=False)
        raise typer.Exit(130)
    failed = result.failed
    if failed:
        err_console.print(f"[red]{len(failed)} run(s) failed[/] (see runs/<id>/summary.json; rerun with --retry-failed):", highlight=False)
        for rid, error in failed.items():
            err_console.print(f"  {rid}: {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

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


bench_app = typer.Typer(
    help="Speed benchmarks, measured side by side (interleaved) in one process.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


@bench_app.command("bn")
def bench_bn(
    repeats: Annotated[int, typer.Option(min=3, help="Timed samples per norm and shape; each side reports its median.")] = 30,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: torch's choice).")] = None,
    layer_only: Annotated[bool, typer.Option("--layer-only/--steps-only", help="Also time the BN layer alone (forward + backward).")] = True,
    clock: Annotated[str, typer.Option(help="wall: elapsed time; cpu: this process's CPU time (steadier on a shared machine; sums threads).")] = "wall",
    csv: Annotated[Path | None, typer.Option(help="Also write the table to this CSV file.")] = None,
) -> None:
    """Time a training step (forward + backward) with our BatchNorm and with torch's.

    Shapes: the cat/non-cat MLP (batch 64, 12288->20->7->5->1), an MLP layer on (256, 100) and a
    CIFAR-shaped conv block on (128, 64, 32, 32). Samples alternate custom/torch; ratio =
    median custom / median torch (goal: <= 1.15 for every "step" row).
    """
    import torch
    from rich.table import Table

    from bnexp.bench_bn import bench_bn as run_bench
    from bnexp.io import atomic_write_csv
    from bnexp.train import resolve_device

    try:
        dev = resolve_device(device) if device in ("auto", "cpu", "cuda") else None
        if dev is None:
            raise BnexpError(f"--device {device!r}: expected cpu, cuda or auto")
        if clock not in ("wall", "cpu"):
            raise BnexpError(f"--clock {clock!r}: expected wall or cpu")
    except BnexpError as e:
        raise _fail(e) from None
    if threads:
        torch.set_num_threads(threads)
    err_console.print(f"device {dev}, {torch.get_num_threads()} torch thread(s), {repeats} repeats, {clock} clock")
    frame = run_bench(repeats=repeats, device=dev, layer_only=layer_only, clock=clock,
                      on_case=lambda c: err_console.print(f"  timing {c.shape} [{c.scope}]", highlight=False))
    table = Table(title=f"training step, custom / torch BatchNorm ({dev}, {torch.get_num_threads()} thread(s), {clock} clock, median of {repeats}, interleaved)")
    for col in ("shape", "scope", "custom ms", "torch ms", "ratio"):
        table.add_column(col, justify="left" if col in ("shape", "scope") else "right")
    for row in frame.itertuples():
        ok = row.ratio <= 1.15
        ratio = f"[{'green' if ok else 'red'}]{row.ratio:.3f}[/]" if row.scope == "step" else f"{row.ratio:.3f}"
        table.add_row(row.shape, row.scope, f"{row.custom_ms:.3f}", f"{row.torch_ms:.3f}", ratio)
    console.print(table)
    if csv is not None:
        atomic_write_csv(csv, frame)
        console.print(f"wrote {csv}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

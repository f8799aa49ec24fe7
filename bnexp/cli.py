"""The `bnexp` command line. It only picks files and applies overrides; the work lives in modules."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bnexp.config import PlannedRun, expand, load_experiment
from bnexp.errors import BnexpError

# The modules that import torch, pandas and matplotlib are imported inside the commands that use
# them, so `bnexp --help` and `bnexp validate` answer in a fraction of a second.
if TYPE_CHECKING:
    from bnexp.sweep.store import Outcome

app = typer.Typer(
    help="bnexp — measure what Batch Normalization does: speed-up and regularization, "
    "with seeds and error bars. Start with `bnexp run configs/quickstart.yaml`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

ConfigArg = Annotated[
    Path,
    typer.Argument(help="Experiment YAML file (see configs/ for examples).", show_default=False),
]
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
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
        force=True,
    )


def _plan_table(plan: list[PlannedRun], results_dir: Path | None = None):
    from rich.table import Table

    table = Table(title=f"{len(plan)} run(s)")
    table.add_column("run_id")
    for key in plan[0].params if plan else []:
        table.add_column(key, justify="right")
    store = None
    if results_dir is not None:
        from bnexp.sweep.store import RunStore

        store = RunStore(results_dir)
        table.add_column("status")
    for run in plan:
        cells = [run.run_id, *(str(v) for v in run.params.values())]
        if store is not None:
            cells.append(store.state(run.run_id))
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
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Validate and show each run with its state (done, failed, damaged, partial, "
            "running, missing); write nothing.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-j",
            min=1,
            help="Runs trained at once (never more than runs to train). Default: one per CPU "
            "core (one in all for GPU runs). Each local worker gets max(1, cores // N) torch "
            "threads (a deterministic CPU run uses 1, see train.deterministic); results do not "
            "depend on N.",
            show_default=False,
        ),
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Also rerun runs recorded as failed (by default a rerun skips them, like "
            "complete ones).",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Rerun every run, complete ones included (their old results are replaced).",
        ),
    ] = False,
    extend: Annotated[
        bool,
        typer.Option(
            "--extend",
            help="The results folder holds another plan of this experiment's name: add this "
            "plan's runs to it (plan.csv lists both) instead of refusing.",
        ),
    ] = False,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="Where runs execute: local (this machine, a process pool) or ray (one Ray task "
            "per run; needs Ray: pip install 'ray>=2.9', the bnexp extra named ray).",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray cluster to join (e.g. auto, or ray://host:10001); default: start a "
            "local Ray.",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log data shapes and per-run notes.")
    ] = False,
    track: Annotated[
        list[str] | None,
        typer.Option(
            "--track",
            metavar="NAME",
            help="Also log each finished run to mlflow (default store: OUT/<name>/mlflow.db) or "
            "tensorboard (OUT/<name>/tensorboard/), as the config's track: section does. "
            "Repeatable.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run an experiment: every run of its sweep, then summary.csv and the report.

    Results go to OUT/<name>/ (see the README for the layout). A rerun of the same command skips
    finished runs, resumes interrupted ones from their last checkpoint, and shares the work with
    any other `bnexp run` on the same folder (each run is claimed with a lock). Ctrl-C or SIGTERM
    stops within seconds and prints the command that resumes (exit 130 or 143). Exits 1 if any
    run failed, listing them; 2 with one line for bad input, an unusable results folder or a full
    disk (finished runs kept). A folder holding another plan of the same experiment name is
    refused (rerunning the same file, or one whose sweep only adds values, resumes); --extend
    adds this plan's runs to it.
    """
    from bnexp.report import build_report, print_report
    from bnexp.sweep.runner import resume_command, run_experiment
    from bnexp.track import Trackers, with_trackers

    _setup_logging(verbose)
    try:
        exp, raw = load_experiment(config, set_)
        if dry_run:
            console.print(_plan_table(expand(exp), out / exp.name))
            return
        trackers = Trackers(out / exp.name, with_trackers(exp.track, track), exp.name)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        ) as progress:
            tasks: dict[str, int] = {}

            def on_start(n_todo: int, n_workers: int) -> None:
                if not n_todo:
                    return
                where = f"{n_workers} worker(s)" if executor == "local" else "ray"
                tasks["runs"] = progress.add_task(f"runs ({where})", total=n_todo)

            def on_run_start(r: PlannedRun) -> None:
                label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in r.params.items()) or r.run_id
                if "epochs" not in tasks:
                    tasks["epochs"] = progress.add_task("epochs", total=r.config.train.epochs)
                progress.reset(
                    tasks["epochs"], total=r.config.train.epochs, description=f"  {label}"
                )

            def on_outcome(o: Outcome) -> None:
                progress.advance(tasks["runs"])
                trackers.log_run(o.run_id)
                if o.status == "failed":
                    progress.console.print(f"[red]failed[/] {o.run_id}: {o.error}", highlight=False)

            def on_wait(busy: list[str]) -> None:
                progress.update(
                    tasks["runs"],
                    description=f"runs (waiting for {len(busy)} claimed by another process)",
                )

            result = run_experiment(
                exp,
                raw,
                out,
                source=str(config),
                overrides=set_,
                workers=workers,
                executor=executor,
                address=address,
                retry_failed=retry_failed,
                force=force,
                extend=extend,
                on_start=on_start,
                on_run_start=on_run_start,
                on_epoch=lambda e, n: progress.update(tasks["epochs"], completed=e),
                on_outcome=on_outcome,
                on_wait=on_wait,
            )
    except BnexpError as e:
        raise _fail(e) from None
    except KeyboardInterrupt as e:  # before any run started (while checking data and models)
        from bnexp.sweep.runner import Terminated

        err_console.print("[yellow]interrupted[/] before any run started", highlight=False)
        raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    if result.skipped:
        console.print(f"skipped {len(result.skipped)} run(s) already finished")
    if not result.summary.empty:
        try:
            print_report(build_report(result.results_dir), console)
        except BnexpError as e:
            raise _fail(e) from None
    trackers.close(interrupted=result.interrupted)
    for line in trackers.where():
        console.print(f"tracked: {line}", highlight=False, soft_wrap=True)
    if result.diverged:
        console.print(
            f"[yellow]diverged[/]: {len(result.diverged)} run(s) stopped early on a NaN/inf "
            f"or too-large loss: {', '.join(result.diverged)}"
        )
    console.print(f"results: {result.results_dir}")
    if result.interrupted:
        import signal

        done = sum(o.status in ("complete", "diverged") for o in result.outcomes.values())
        by = "SIGTERM" if result.stop_signal == signal.SIGTERM else "Ctrl-C"
        err_console.print(
            f"[yellow]interrupted[/] ({by}): {done} run(s) finished in this call are kept. "
            f"Resume with:\n  {resume_command(sys.argv[1:])}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(128 + int(result.stop_signal or signal.SIGINT))
    failed = result.failed
    if failed:
        err_console.print(
            f"[red]{len(failed)} run(s) failed[/] (see runs/<id>/summary.json; rerun with "
            "--retry-failed):",
            highlight=False,
        )
        for rid, error in failed.items():
            err_console.print(f"  {rid}: {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


ResultsArg = Annotated[
    Path,
    typer.Argument(
        help="A results folder written by `bnexp run`, e.g. results/quickstart.", show_default=False
    ),
]


_STATE_STYLES = {
    "done": "green",
    "diverged": "yellow",
    "failed": "red",
    "damaged": "bold red",
    "running": "cyan",
    "partial": "magenta",
    "missing": "dim",
}


def _status_table(results: Path):
    """The status of a sweep (bnexp.sweep.status) as a table: one row per cell, one column per
    state; returns (table, every run done or failed, notes on damaged files)."""
    from rich.table import Table

    from bnexp.sweep.status import COLUMNS, sweep_status

    st = sweep_status(results)
    counts = ", ".join(f"{v} {k}" for k, v in st.totals.items() if v)
    table = Table(title=f"{results}: {st.runs} run(s) — {counts}")
    for key in st.keys:
        table.add_column(key, justify="right")
    shown = [c for c in COLUMNS if c != "damaged" or st.totals["damaged"]]
    for state in shown:
        table.add_column(state, justify="right", style=_STATE_STYLES[state])
    for cell, c in st.cells.items():
        table.add_row(*(str(v) for v in cell), *(str(c[s]) if c[s] else "·" for s in shown))
    return table, st.finished, st.notes


@app.command()
def status(
    results: ResultsArg,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Redraw every --interval seconds until every run is done or failed "
            "(Ctrl-C to leave).",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, help="Seconds between redraws with --watch.")
    ] = 2.0,
) -> None:
    """Show how far a sweep is: per cell, runs done, failed, running, partial and missing.

    A cell is every swept key except the seed. done counts diverged runs too (shown apart);
    running = claimed by a live process; partial = a checkpoint to resume from; damaged = a
    summary.json cut short or a finished run missing a file (warned about, and retrained by the
    next `bnexp run`). Reads only files, so it is safe while sweeps are running. A damaged
    plan.csv is one line and exit 2 (`bnexp run` rewrites it); a damaged summary.csv is a
    warning (status does not read it; `bnexp run` rebuilds it).
    """
    try:
        table, finished, notes = _status_table(results)
        for note in notes:
            err_console.print(f"[yellow]warning[/]: {note}", highlight=False, soft_wrap=True)
        if not watch:
            console.print(table)
            return
        from rich.live import Live

        with Live(table, console=console, auto_refresh=False) as live:
            while not finished:
                time.sleep(interval)
                table, finished, _ = _status_table(results)
                live.update(table, refresh=True)
    except BnexpError as e:
        raise _fail(e) from None
    except KeyboardInterrupt:
        pass


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
) -> None:
    """Rerun one finished run and report any difference from the recorded one.

    The run is redone from its config.yaml in a scratch folder; metrics.csv is compared byte
    for byte and summary.json without its timings. Exits 0 when identical, 1 when anything
    differs. The results folder is not modified (a --keep folder inside it is refused).
    """
    from bnexp.run.repro import reproduce

    _setup_logging(False)

    def on_start(rid: str, cfg, note: str | None) -> None:
        if note:
            err_console.print(f"[yellow]note[/]: {note}", highlight=False)
        status.update(f"rerunning {rid} ({cfg.train.epochs} epochs)")

    try:
        with console.status("checking the recorded run") as status:
            done = reproduce(results, run_id, keep, on_start)
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
def report(results: ResultsArg) -> None:
    """Write tables, plots, claims and the report for a results folder; print the key tables.

    Writes RESULTS/tables/{speedup,best_lr,regularization,bn_noise,shift,ics}.csv (each where
    its data exist), RESULTS/plots/*.png, RESULTS/claims.json (each claim's verdict as data) and
    RESULTS/report.md and report.html (self-contained, plots inlined), which state each claim's
    outcome with its numbers. Intervals are 95%: t over seeds; speed-ups are paired by seed with
    a bootstrap; runs that never reach measure.target are censored, shown as bounds, never dropped.
    """
    try:
        from bnexp.report import build_report, print_report

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
    from bnexp.io import atomic_write_csv
    from bnexp.report import bn_noise_table, plot_bn_noise, print_table, slopes_frame
    from bnexp.run.probes import noise_at_init

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
    atomic_write_csv(results_dir / "tables" / "bn_noise_init.csv", table)
    plot_bn_noise(table, results_dir / "plots" / "bn_noise_init.png")
    print_table(
        console, slopes_frame(table), "BN noise at initialization: log-log slope vs batch size"
    )
    console.print(f"results: {results_dir}")


bench_app = typer.Typer(
    help="Speed benchmarks, measured side by side (interleaved) in one process.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


@bench_app.command("bn")
def bench_bn(
    repeats: Annotated[
        int,
        typer.Option(min=3, help="Timed samples per norm and shape; each side reports its median."),
    ] = 30,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch CPU threads (default: torch's choice).")
    ] = None,
    layer_only: Annotated[
        bool,
        typer.Option(
            "--layer-only/--steps-only", help="Also time the BN layer alone (forward + backward)."
        ),
    ] = True,
    clock: Annotated[
        str,
        typer.Option(
            help="wall: elapsed time; cpu: this process's CPU time "
            "(steadier on a shared machine; sums threads)."
        ),
    ] = "wall",
    csv: Annotated[Path | None, typer.Option(help="Also write the table to this CSV file.")] = None,
) -> None:
    """Time a training step (forward + backward) with our BatchNorm and with torch's.

    Shapes: the cat/non-cat MLP (batch 64, 12288->20->7->5->1), an MLP layer on (256, 100) and a
    CIFAR-shaped conv block on (128, 64, 32, 32). Samples alternate custom/torch; ratio =
    median custom / median torch (goal: at most bnexp.bench.bn.STEP_RATIO_GOAL for every "step"
    row; the table's title gives it). "custom path" says which
    implementation our layer took: its C kernel, or torch ops (CUDA, no C compiler, or
    BNEXP_BN_KERNEL=off, which times the torch-ops path on the CPU).
    """
    import torch
    from rich.table import Table

    from bnexp.bench.bn import STEP_RATIO_GOAL
    from bnexp.bench.bn import bench_bn as run_bench
    from bnexp.io import atomic_write_csv
    from bnexp.run.device import resolve_device

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
    err_console.print(
        f"device {dev}, {torch.get_num_threads()} torch thread(s), {repeats} repeats, {clock} clock"
    )
    frame = run_bench(
        repeats=repeats,
        device=dev,
        layer_only=layer_only,
        clock=clock,
        on_case=lambda c: err_console.print(f"  timing {c.shape} [{c.scope}]", highlight=False),
    )
    table = Table(
        title=f"training step, custom / torch BatchNorm (goal for a step: ratio <= "
        f"{STEP_RATIO_GOAL}; {dev}, {torch.get_num_threads()} thread(s), {clock} clock, "
        f"median of {repeats}, interleaved)"
    )
    for col in ("shape", "scope", "custom ms", "torch ms", "ratio", "custom path"):
        table.add_column(col, justify="right" if col.endswith(("ms", "ratio")) else "left")
    for row in frame.itertuples():
        ok = row.ratio <= STEP_RATIO_GOAL
        ratio = (
            f"[{'green' if ok else 'red'}]{row.ratio:.3f}[/]"
            if row.scope == "step"
            else f"{row.ratio:.3f}"
        )
        table.add_row(
            row.shape,
            row.scope,
            f"{row.custom_ms:.3f}",
            f"{row.torch_ms:.3f}",
            ratio,
            row.custom_path,
        )
    console.print(table)
    if csv is not None:
        atomic_write_csv(csv, frame)
        console.print(f"wrote {csv}")


@bench_app.command("train")
def bench_train_cmd(
    tiny: Annotated[
        bool,
        typer.Option(
            "--tiny",
            help="Tiny sizes and 1 repeat: checks the code paths in seconds, not the speed.",
        ),
    ] = False,
    repeats: Annotated[
        int | None,
        typer.Option(
            "--repeats",
            min=1,
            help="Repeats per measurement, medians reported (default 5; 1 with --tiny).",
            show_default=False,
        ),
    ] = None,
    section: Annotated[
        list[str] | None,
        typer.Option(
            "--section",
            help="Only these sections (repeatable): loops, denormal, vectorize, workers, memory.",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="torch threads for the in-process sections (default: torch's).",
            show_default=False,
        ),
    ] = None,
    csv: Annotated[
        Path | None,
        typer.Option("--csv", help="Also write the table to this CSV file.", show_default=False),
    ] = None,
) -> None:
    """Time bnexp's training loop (a) against a hand-written loop (b) and a DataLoader loop (c),
    flushing denormals, seeds trained together, --workers 2 vs 1 and peak memory; print the table.
    """
    from bnexp.bench.train import SECTIONS, bench_train, rich_table
    from bnexp.io import atomic_write_csv

    bad = [s for s in section or [] if s not in SECTIONS]
    if bad:
        raise _fail(
            BnexpError(
                f"--section {bad[0]}: unknown section (expected one of: {', '.join(SECTIONS)})"
            )
        )
    df = bench_train(
        tiny=tiny,
        repeats=repeats,
        sections=tuple(section or SECTIONS),
        threads=threads,
        log=lambda m: err_console.print(f"[dim]{m}[/]"),
    )
    if csv is not None:
        atomic_write_csv(csv, df)
    console.print(rich_table(df))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

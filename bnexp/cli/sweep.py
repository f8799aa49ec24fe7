"""`bnexp validate`, `bnexp run`, `bnexp status`: plan, train, and look at a sweep."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bnexp.cli.common import (
    ConfigArg,
    OutOpt,
    ResultsArg,
    SetOpt,
    _fail,
    _plan_table,
    _setup_logging,
    app,
    console,
    err_console,
)
from bnexp.config import PlannedRun, expand, load_experiment
from bnexp.errors import BnexpError
from bnexp.results import is_blank

if TYPE_CHECKING:
    from bnexp.sweep.store import Outcome


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
    # bnexp.report (pandas tables, scipy, matplotlib: ~1.5 s) is imported after the runs, where
    # the report is built: a run's first step does not wait for it
    from bnexp.sweep.runner import resume_command, run_experiment
    from bnexp.track import Trackers, with_trackers

    _setup_logging(verbose)
    # Ctrl-C (SIGINT) stops the sweep, also when this process inherited SIGINT ignored (started
    # in the background by a script, nohup, some CI runners): Python then leaves it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
            counts = {"done": 0, "todo": 0}  # finished runs, for the lines of a log file

            def on_start(n_todo: int, n_workers: int) -> None:
                counts["todo"] = n_todo
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
                if not err_console.is_terminal:  # a log file: rich draws no bar there, so a line
                    counts["done"] += 1
                    line = f"run {counts['done']}/{counts['todo']}: {o.run_id} {o.status}"
                    err_console.print(f"{line} ({o.seconds:.0f} s)", highlight=False)
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
        from bnexp.report import build_report, print_report

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


_STATE_STYLES = {
    "done": "green",
    "diverged": "yellow",
    "failed": "red",
    "damaged": "bold red",
    "running": "cyan",
    "partial": "magenta",
    "missing": "dim",
}


def _cell_text(value: object) -> str:
    """A plan cell as status shows it: blank when the run does not sweep the key, 32 not 32.0."""
    if is_blank(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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
        table.add_row(*(_cell_text(v) for v in cell), *(str(c[s]) if c[s] else "·" for s in shown))
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

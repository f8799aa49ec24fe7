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
    plan_count,
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
    from bnexp.sweep.sizes import model_sizes

    try:
        exp, _ = load_experiment(config, set_)
        plan = expand(exp)
        sizes, notes = model_sizes(plan)  # builds each distinct model: a bad factory fails here
    except BnexpError as e:
        raise _fail(e) from None
    console.print(_plan_table(plan))
    console.print(_sizes_table(sizes))
    for note in notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    total = [s.train_flops for s in sizes]
    if all(t is not None for t in total):
        console.print(
            f"training, all {plan_count(plan)}: about {_si(sum(total))}FLOPs "
            "(3 x forward FLOPs x examples seen)",
            highlight=False,
        )
    console.print(f"[green]ok[/]: {config} is valid")


def _si(n: float) -> str:
    """1.23e15 -> '1.23 P' (decimal prefixes, as FLOP counts are quoted)."""
    prefixes = (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))
    for prefix, scale in prefixes:
        if n >= scale:
            return f"{n / scale:.3g} {prefix}"
    return f"{n:.3g} "


def _sizes_table(sizes):
    from rich.table import Table

    table = Table(title="models (FLOPs: convolutions and matrix products, 2 per multiply-add)")
    for col in ("model", "parameters", "forward FLOPs / example", "runs", "training FLOPs"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for s in sizes:
        if s.params is None:
            table.add_row(s.label, "?", "?", str(s.runs), "?")
            continue
        table.add_row(s.label, f"{s.params:,}", f"{_si(s.forward_flops)}FLOPs", str(s.runs),
                      f"{_si(s.train_flops)}FLOPs")
    return table


DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Validate and show each run with its state (done, failed, damaged, partial, "
        "running, missing); write nothing. A plan the results folder would refuse is refused "
        "here too (exit 2).",
    ),
]
WorkersOpt = Annotated[
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
]
RetryFailedOpt = Annotated[
    bool,
    typer.Option(
        "--retry-failed",
        help="Also rerun runs recorded as failed (by default a rerun skips them, like "
        "complete ones).",
    ),
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force", help="Rerun every run, complete ones included (their old results are replaced)."
    ),
]
ExtendOpt = Annotated[
    bool,
    typer.Option(
        "--extend",
        help="The results folder holds another plan of this experiment's name: add this "
        "plan's runs to it (plan.csv lists both) instead of refusing.",
    ),
]
ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        help="Where runs execute: local (this machine, a process pool) or ray (one Ray task "
        "per run; needs Ray: pip install 'ray>=2.9', the bnexp extra named ray).",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Ray cluster to join (e.g. auto, or ray://host:10001); default: start a local Ray.",
        show_default=False,
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log data shapes and per-run notes.")
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Print only the claims (no progress, no tables); errors still go to stderr.",
    ),
]
TrackOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--track",
        metavar="NAME",
        help="Also log each finished run to mlflow (default store: OUT/<name>/mlflow.db) or "
        "tensorboard (OUT/<name>/tensorboard/), as the config's track: section does. "
        "Repeatable.",
        show_default=False,
    ),
]


@app.command()
def run(
    config: ConfigArg,
    out: OutOpt = Path("results"),
    set_: SetOpt = None,
    dry_run: DryRunOpt = False,
    workers: WorkersOpt = None,
    retry_failed: RetryFailedOpt = False,
    force: ForceOpt = False,
    extend: ExtendOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    track: TrackOpt = None,
) -> None:
    """Run an experiment: every run of its sweep, then summary.csv and the report.

    Results go to OUT/<name>/ (see docs/results.md for the layout). A rerun of the same command
    skips finished runs, resumes interrupted ones from their last checkpoint, and shares the work
    with any other `bnexp run` on the same folder (each run is claimed with a lock). Ctrl-C or
    SIGTERM stops within seconds and prints the command that resumes (exit 130 or 143). Exits 1
    if any run failed, listing them; 2 with one line for bad input, an unusable results folder
    or a full disk (finished runs kept). A folder holding another plan of the same experiment
    name is refused (rerunning the same file, or one whose sweep only adds values, resumes);
    --extend adds this plan's runs to it.
    """
    from bnexp.flow import SweepOptions, run_and_report

    _setup_logging(verbose)
    # Ctrl-C (SIGINT) stops the sweep, also when this process inherited SIGINT ignored (started
    # in the background by a script, nohup, some CI runners): Python then leaves it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    options = SweepOptions(workers, executor, address, retry_failed, force, extend, track or [])
    try:
        exp, raw = load_experiment(config, set_)
        if dry_run:
            from bnexp.sweep.folder import check_plan

            plan = expand(exp)
            check_plan(out / exp.name, plan, str(config), extend)
            console.print(_plan_table(plan, out / exp.name))
            return
        with _SweepDisplay(executor, quiet) as display:
            flow = run_and_report(
                exp,
                raw,
                out,
                source=str(config),
                overrides=set_,
                options=options,
                display=display.hooks(),
            )
        if flow.report is not None:
            from bnexp.report import print_report

            print_report(flow.report, console, detail="claims" if quiet else "summary")
    except BnexpError as e:
        raise _fail(e) from None
    except KeyboardInterrupt as e:  # before any run started (while checking data and models)
        from bnexp.sweep.runner import Terminated

        err_console.print("[yellow]interrupted[/] before any run started", highlight=False)
        raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    _print_ending(flow, quiet)


class _SweepDisplay:
    """The progress bars of a sweep (a line per finished run where stderr is a log file, since
    rich draws no bar there) and a line per failed run."""

    def __init__(self, executor: str, quiet: bool = False):
        self.executor, self.quiet = executor, quiet
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
            disable=quiet,
        )
        self.tasks: dict[str, int] = {}
        self.done = self.todo = 0

    def __enter__(self) -> _SweepDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def hooks(self):
        from bnexp.flow import Display

        return Display(self.on_start, self.on_run_start, self.on_epoch, self.on_outcome, self.wait)

    def on_start(self, n_todo: int, n_workers: int) -> None:
        self.todo = n_todo
        if n_todo:
            where = f"{n_workers} worker(s)" if self.executor == "local" else "ray"
            self.tasks["runs"] = self.progress.add_task(f"runs ({where})", total=n_todo)

    def on_run_start(self, r: PlannedRun) -> None:
        label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in r.params.items()) or r.run_id
        epochs = r.config.train.epochs
        if "epochs" not in self.tasks:
            self.tasks["epochs"] = self.progress.add_task("epochs", total=epochs)
        self.progress.reset(self.tasks["epochs"], total=epochs, description=f"  {label}")

    def on_epoch(self, epoch: int, epochs: int) -> None:
        self.progress.update(self.tasks["epochs"], completed=epoch)

    def on_outcome(self, o: Outcome) -> None:
        self.progress.advance(self.tasks["runs"])
        if not err_console.is_terminal and not self.quiet:  # a log file gets a line, no bar
            self.done += 1
            line = f"run {self.done}/{self.todo}: {o.run_id} {o.status}"
            err_console.print(f"{line} ({o.seconds:.0f} s)", highlight=False)
        if o.resumed_from_epoch is not None:
            where = f"run {o.run_id}: resumed from epoch {o.resumed_from_epoch}"
            self.progress.console.print(where, highlight=False)
        if o.status == "failed":
            self.progress.console.print(f"[red]failed[/] {o.run_id}: {o.error}", highlight=False)

    def wait(self, busy: list[str]) -> None:
        description = f"runs (waiting for {len(busy)} claimed by another process)"
        self.progress.update(self.tasks["runs"], description=description)


def _print_ending(flow, quiet: bool) -> None:
    """What a sweep left: skipped, tracked, diverged, where (with --quiet, diverged only, on
    stderr); then an interrupt (exit 130/143) or the failed runs (exit 1)."""
    from bnexp.sweep.runner import resume_command
    from bnexp.sweep.status import sweep_status

    result = flow.sweep
    if result.skipped and not quiet:
        console.print(f"skipped {len(result.skipped)} run(s) already finished")
    for line in [] if quiet else flow.tracked:
        console.print(f"tracked: {line}", highlight=False, soft_wrap=True)
    if result.diverged:  # a warning: with --quiet on stderr, stdout holding only the claims
        (err_console if quiet else console).print(
            f"[yellow]diverged[/]: {len(result.diverged)} run(s) stopped early on a NaN/inf "
            f"or too-large loss: {', '.join(result.diverged)}"
        )
    if not quiet:
        console.print(f"results: {result.results_dir}")
    if result.interrupted:
        st = sweep_status(result.results_dir)  # what `bnexp status` will show
        by = "SIGTERM" if result.stop_signal == signal.SIGTERM else "Ctrl-C"
        err_console.print(
            f"[yellow]interrupted[/] ({by}): {st.totals['done']} of {st.runs} run(s) done and "
            f"kept. Resume with:\n  {resume_command(sys.argv[1:])}",
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
    """A plan cell as status shows it: null where the run does not sweep the key (or sweeps it
    to null), 32 not 32.0."""
    if is_blank(value) or str(value) == "None":
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _status_table(results: Path):
    """The status of a sweep (bnexp.sweep.status) as a table that reads at 80 columns: one row
    per cell, the swept keys by their last part (the whole key where two share it), and a
    column per state that some run is in (done and missing always); returns (table, every run
    done or failed, notes on damaged files)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from bnexp.sweep.status import COLUMNS, sweep_status

    st = sweep_status(results)
    counts = ", ".join(f"{v} {k}" for k, v in st.totals.items() if v)
    # the folder on a line of its own: a long path wraps there, not inside the counts
    title = Text(f"{results}:\n{st.runs} run(s) — {counts}", style="italic")
    table = Table(box=box.SIMPLE_HEAD)
    last = [k.split(".")[-1] for k in st.keys]
    for key, short in zip(st.keys, last, strict=True):
        table.add_column(short if last.count(short) == 1 else key, justify="right")
    shown = [c for c in COLUMNS if c in ("done", "missing") or st.totals[c]]
    for state in shown:
        table.add_column(state, justify="right", style=_STATE_STYLES[state])
    for cell, c in st.cells.items():
        table.add_row(*(_cell_text(v) for v in cell), *(str(c[s]) if c[s] else "·" for s in shown))
    return Group(title, table), st.finished, st.notes


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

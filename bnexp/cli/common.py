"""What every command shares: the Typer app, the consoles, the argument types, and how a
BnexpError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer import _click as click
from typer.core import TyperGroup

from bnexp.config import PlannedRun
from bnexp.errors import BnexpError


class HelpGroup(TyperGroup):
    """Typer's command group, with help that reads as written: a flag shows no `<bool>` type,
    and a docstring's line breaks (source wrapping) do not break its sentences; rich rewraps
    each paragraph to the terminal. Applied to every command below the group, once."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _plain_help(cmd, ctx)
        return cmd

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _plain_help(self, ctx)
        super().format_help(ctx, formatter)


def _plain_help(cmd: click.Command, ctx: click.Context) -> None:
    if getattr(cmd, "_plain_help", False):
        return
    cmd._plain_help = True
    for param in cmd.get_params(ctx):  # --help included
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # typer otherwise shows the type, <bool>
    if cmd.help:  # paragraphs are separated by blank lines; single newlines are wrapping
        paragraphs = inspect.cleandoc(cmd.help).split("\n\n")
        cmd.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)
    for sub in getattr(cmd, "commands", {}).values():
        _plain_help(sub, ctx)


app = typer.Typer(
    cls=HelpGroup,
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
    typer.Argument(
        metavar="CONFIG",
        help="Experiment YAML file (see configs/ for examples).",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config value, as dotted.key=value (value read as YAML). Repeatable. "
        "Examples: --set train.lr=0.1  --set sweep.train.seed=[0,1,2]. A key the sweep sets "
        "is refused (exit 2, naming the sweep): override the sweep instead, e.g. "
        "--set sweep.model.norm=[torch].",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path,
    typer.Option("--out", metavar="OUT", help="Results root; the run writes to OUT/<name>/."),
]


def _fail(e: BnexpError) -> typer.Exit:
    for line in str(e).splitlines():
        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
        force=True,
    )


def plan_count(plan: list[PlannedRun]) -> str:
    """'432 run(s)', or with shared runs (one run serving several cells, e.g. a none baseline)
    '180 distinct run(s) in 432 planned cells x seeds': what training will cost is the first."""
    distinct = len({p.run_id for p in plan})
    if distinct == len(plan):
        return f"{len(plan)} run(s)"
    return f"{distinct} distinct run(s) in {len(plan)} planned cells x seeds"


def _plan_table(plan: list[PlannedRun], results_dir: Path | None = None):
    from rich.table import Table

    table = Table(title=plan_count(plan))
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


ResultsArg = Annotated[
    Path,
    typer.Argument(
        metavar="RESULTS",
        help="A results folder written by `bnexp run`, e.g. results/quickstart.",
        show_default=False,
    ),
]

"""`bnexp bench bn`: our BatchNorm's speed against torch's, measured side by side in one process.

The goal tables of the training loop (hand-written loops, workers, the GPU) are not part of the
package: `make bench` runs them from the checkout's benchmarks/ folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bnexp.cli.common import _fail, app, console, err_console
from bnexp.errors import BnexpError

bench_app = typer.Typer(
    help="Check this machine's speed: our BatchNorm against torch's (`make bench` in a checkout "
    "times the training loop too).",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


def _check(device: str, clock: str):
    """The torch device for --device; BnexpError for a bad --device or --clock."""
    from bnexp.training.device import resolve_device

    if device not in ("auto", "cpu", "cuda"):
        raise BnexpError(f"--device {device!r}: expected cpu, cuda or auto")
    if clock not in ("wall", "cpu"):
        raise BnexpError(f"--clock {clock!r}: expected wall or cpu")
    return resolve_device(device)


def _timed_with_progress(**bench_args):
    """bnexp.bench.bn.bench_bn with a progress bar on stderr: cases warmed up, then the timing
    phase in expected seconds (its ETA)."""
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bnexp.bench.bn import bench_bn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("warming up", total=None)
        phase = ["warm-up"]

        def on_progress(now: str, done: float, total: float) -> None:
            if now != phase[0]:  # a new phase: its own total, and a fresh rate for the ETA
                phase[0] = now
                bar.reset(task, total=total, description="timing")
            bar.update(task, completed=done, total=total)

        return bench_bn(**bench_args, on_progress=on_progress)


def _table(frame, caption: str):
    """The results, each training-step row marked against the goal (a "BN" row, the layer alone,
    has none); "path": the implementation our layer took."""
    from rich.table import Table

    from bnexp.bench.bn import STEP_RATIO_GOAL

    # fits 80 columns: the shapes' names are at most 28 characters, figures 4 significant digits
    table = Table(
        title=f"One training step, our BatchNorm / torch's (goal ≤ {STEP_RATIO_GOAL})",
        caption=caption,
        box=None,
        padding=(0, 1, 0, 0),  # no borders, one space between columns
        pad_edge=False,
    )
    table.add_column("shape", no_wrap=True)
    for col in ("thr", "custom ms", "torch ms", "ratio"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("goal", no_wrap=True)
    table.add_column("path", no_wrap=True)
    for row in frame.itertuples():
        over = row.scope == "step" and row.ratio > STEP_RATIO_GOAL
        mark = "" if row.scope != "step" else ("[bold red]over goal[/]" if over else "[green]ok[/]")
        ratio = f"[bold red]{row.ratio:.3f}[/]" if over else f"{row.ratio:.3f}"
        table.add_row(
            row.shape.rsplit(" @ ", 1)[0],  # the threads have their own column
            str(row.threads),
            f"{row.custom_ms:.4g}",
            f"{row.torch_ms:.4g}",
            ratio,
            mark,
            row.custom_path,
        )
    return table


def over_goal_line(frame) -> str:
    """One line under the table: how many training-step rows exceed the goal."""
    from bnexp.bench.bn import STEP_RATIO_GOAL

    steps = frame[frame.scope == "step"]
    over = steps[steps.ratio > STEP_RATIO_GOAL]
    if over.empty:
        return f"[green]every training step within the goal (custom / torch ≤ {STEP_RATIO_GOAL})[/]"
    return (
        f"[bold red]{len(over)} of {len(steps)} training step(s) over the goal "
        f"(custom / torch ≤ {STEP_RATIO_GOAL})[/]: {'; '.join(over['shape'])}"
    )


@bench_app.command("bn")
def bench_bn(
    repeats: Annotated[
        int,
        typer.Option(
            min=3,
            help="Timed samples per norm and shape; each side reports its median "
            "(5: under a minute on 2 busy cores; 30 for steadier figures).",
        ),
    ] = 5,  # bnexp.bench.bn.DEFAULT_REPEATS (not imported here: it would import torch)
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch CPU threads (default: torch's choice).")
    ] = None,
    layer_only: Annotated[
        bool,
        typer.Option(
            "--layer-only/--steps-only",
            help="Also time the BN layer alone (forward + backward); default: steps only.",
        ),
    ] = False,
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
    CIFAR-shaped conv block on (128, 64, 32, 32), at 1 torch thread and at torch's count. Samples
    alternate custom/torch; ratio = median custom / median torch. Goal: at most 1.15 for every
    training step; rows over it are marked "over goal". "path" says which implementation our layer
    took: its C kernel, or torch ops (CUDA, no C compiler, or BNEXP_BN_KERNEL=off).
    """
    import torch

    from bnexp.io import atomic_write_csv

    try:
        dev = _check(device, clock)
    except BnexpError as e:
        raise _fail(e) from None
    if threads:
        torch.set_num_threads(threads)
    frame = _timed_with_progress(repeats=repeats, device=dev, layer_only=layer_only, clock=clock)
    caption = (
        f"{dev}, {clock} clock, median of {repeats} interleaved samples; "
        "BN: the layer alone, no goal"
    )
    console.print(_table(frame, caption))
    console.print(over_goal_line(frame))
    if csv is not None:
        atomic_write_csv(csv, frame)
        console.print(f"wrote {csv}")

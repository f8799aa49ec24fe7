"""`bnexp bench bn`: our BatchNorm's speed against torch's, measured side by side in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bnexp.cli.common import _fail, app, console, err_console
from bnexp.errors import BnexpError

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
    from bnexp.training.device import resolve_device

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

"""Sections `startup` and `workers`: what a command pays besides its runs' own work.

startup  launch -> first optimizer step of `bnexp run` on a one-run digits config, launched as
         `python -m benchmarks.first_step run ...` (bnexp's CLI with its optimizer step wrapped
         to print the time of the first one), beside the floor of any command:
         `python -c "import torch"`.
workers  a 12-run quickstart sweep (3 norms x 4 seeds, 15 epochs) with 1 worker and with 2, each
         in a fresh process: the sweep timed inside it (--workers 2 ÷ --workers 1), and the
         whole process from launch to exit (imports, sweep, report) ÷ the sum of its runs'
         wall_s (summary.csv): the overhead of start-up, workers and report.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.cases import quickstart_cfg
from benchmarks.common import COLUMNS, interleaved, row
from benchmarks.first_step import MARK

REPO = Path(__file__).resolve().parents[1]


def python_env() -> dict:
    """This process's environment, with the folder this bnexp was imported from and this checkout
    (for `python -m benchmarks.*`) first on the path: the subprocess times the same code."""
    import bnexp

    env = dict(os.environ)
    first = dict.fromkeys([str(Path(bnexp.__file__).resolve().parents[1]), str(REPO)])
    env["PYTHONPATH"] = os.pathsep.join([*first, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_python(args: list[str], cwd: str | Path, what: str):
    """`python <args>` (this bnexp first on the path) in `cwd`:
    (seconds from launch to exit, the CompletedProcess, output captured as text). RuntimeError
    naming `what`, with the end of its stderr, when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=python_env(),
        cwd=cwd,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {proc.stderr[-500:]}")
    return seconds, proc


def write_quickstart_sweep(
    folder: Path, name: str, epochs: int, sweep: dict, device: str | None = None, **sections
) -> Path:
    """A sweep of the quickstart network (digits, `epochs`, on `device` if given; `sections` such
    as measure added) as folder/sweep.yaml, for a fresh `bnexp run` process to read."""
    cfg = quickstart_cfg(epochs).model_dump(mode="json")
    train = cfg["train"] if device is None else {**cfg["train"], "device": device}
    exp = {"name": name, "data": {"dataset": "digits"}, "model": cfg["model"], "train": train}
    path = Path(folder) / "sweep.yaml"
    path.write_text(yaml.safe_dump({**exp, **sections, "sweep": sweep}))
    return path


def first_step_delay(stderr: str, launched: float) -> float:
    """Seconds from `launched` (time.time() just before the process started) to the first
    optimizer step, as benchmarks.first_step printed it on stderr ("FIRST_STEP <unix time>")."""
    for line in stderr.splitlines():
        if line.startswith(MARK + " "):
            return float(line.split()[1]) - launched
    raise RuntimeError(f"no '{MARK} <time>' line on stderr: {stderr[-500:]}")


ONE_RUN = {
    "name": "bench-startup",
    "data": {"dataset": "digits"},
    "model": {"arch": "mlp", "hidden": [32], "activation": "relu", "norm": "none"},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.1, "device": "cpu"},
}


def bench_startup(repeats: int, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Launch -> first step of `bnexp run` (one run, digits), and the import floor."""
    log("startup: bnexp run <one-run digits config>, launch -> first step")
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
        cfg = Path(tmp) / "one.yaml"
        cfg.write_text(yaml.safe_dump(ONE_RUN))
        counter = iter(range(10**6))

        def launch() -> float:
            out = Path(tmp) / f"out{next(counter)}"  # a fresh folder: the run is not skipped
            launched = time.time()
            args = ["-m", "benchmarks.first_step", "run", str(cfg), "--out", str(out)]
            _, proc = run_python(args, tmp, "bnexp run")
            return first_step_delay(proc.stderr, launched)

        def import_torch() -> float:
            return run_python(["-c", "import torch"], tmp, "import torch")[0]

        res = interleaved({"run": launch, "torch": import_torch}, repeats)
    case = "bnexp run, one digits run (MLP 32, 1 epoch)"
    return pd.DataFrame(
        [
            row("startup", case, "launch -> first optimizer step", statistics.median(res["run"]),
                "s", "<= 1.5", note=f"median of {repeats}; a fresh process each"),
            row("startup", case, "python -c 'import torch' (the floor)",
                statistics.median(res["torch"]), "s", note="launch to exit"),
        ],
        columns=COLUMNS,
    )  # fmt: skip


# --------------------------------------------------------------------------- workers

SWEEP_EPOCHS = 15


def sweep_overhead(whole_s: float, runs_wall_s: float) -> float:
    """A sweep's wall time ÷ the sum of its runs' wall_s (1 = no overhead at 1 worker)."""
    return whole_s / runs_wall_s


def bench_workers(tiny: bool, repeats: int, log: Callable[[str], None] = print) -> pd.DataFrame:
    """The 12-run quickstart sweep with --workers 1 and 2, fresh folders and processes."""
    case = f"12-run quickstart sweep, {2 if tiny else SWEEP_EPOCHS} epochs"
    log(f"workers: {case}, --workers 1 vs 2")
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
        path = write_quickstart_sweep(
            tmp,
            "bench-workers",
            2 if tiny else SWEEP_EPOCHS,
            {"model.norm": ["none", "custom", "torch"], "train.seed": [0, 1, 2, 3]},
            measure={"target": {"metric": "train_acc", "value": 0.95}},
        )
        counter = iter(range(10**6))

        def sweep(workers: int) -> dict:
            out = Path(tmp) / f"out{next(counter)}"
            whole, proc = run_python(
                ["-m", "benchmarks.timed_sweep", str(path), str(out), str(workers)],
                tmp,
                f"sweep with {workers} worker(s)",
            )
            return {**json.loads(proc.stdout.strip().splitlines()[-1]), "whole_s": whole}

        res = interleaved({"1": lambda: sweep(1), "2": lambda: sweep(2)}, repeats)
    med = {w: {k: statistics.median(r[k] for r in res[w]) for k in res[w][0]} for w in res}
    one, two = med["1"], med["2"]
    inside = "the sweep, timed inside its process (no interpreter start, imports or report)"
    whole = "launch to exit: interpreter, imports, workers, sweep, report"
    return pd.DataFrame(
        [
            row("workers", case, "--workers 1", one["sweep_s"], "s", note=inside),
            row("workers", case, "--workers 2", two["sweep_s"], "s"),
            row("workers", case, "--workers 2 speed-up", one["sweep_s"] / two["sweep_s"], "x",
                ">= 1.8", note=f"median of {repeats}"),
            row("workers", case, "whole sweep, --workers 1", one["whole_s"], "s", note=whole),
            row("workers", case, "sum of its runs' wall_s", one["runs_wall_s"], "s",
                note="the runs' summary.json"),
            row("workers", case, "wall ÷ sum of runs' wall_s, --workers 1",
                sweep_overhead(one["whole_s"], one["runs_wall_s"]), "x", "<= 1.2",
                note="overhead of start-up, workers and report"),
            row("workers", case, "wall ÷ sum of runs' wall_s, --workers 2",
                sweep_overhead(two["whole_s"], two["runs_wall_s"]), "x",
                note="no goal: 2 runs at a time, so ~0.5 without overhead"),
        ],
        columns=COLUMNS,
    )  # fmt: skip

"""The training-loop benchmark behind `bnexp bench train` and `make bench`.

Every section returns a long DataFrame, one row per measurement (bnexp.bench.common.COLUMNS).
Times are medians over `repeats`, the variants of one row interleaved (their order rotated each
repeat) so load from other processes hits all alike; ratios are what to read, absolute figures
move with the machine's load.

Sections:
  loops      bnexp's loop vs a hand-written loop vs a DataLoader loop (bnexp.bench.loops)
  denormal   flushing denormals on the quickstart's sigmoid MLP (bnexp.bench.loops)
  vectorize  8 seeds one after another vs trained together (bnexp.training.vectorize): the
             quickstart MLP, and BN cells of the digits and cat/non-cat MLPs
  cnn        the CIFAR CNN's step FLOP/s ÷ matmul FLOP/s; bnexp's step ÷ a hand-written
             channels_last step (bnexp.bench.cnn)
  startup    launch -> first optimizer step of `python -m bnexp run` (bnexp.bench.startup)
  workers    a 12-run sweep with 1 worker vs 2, each in a fresh process; its wall time ÷ the
             sum of its runs' wall_s (bnexp.bench.startup)
  memory     peak RSS of a 50,000-image CIFAR-shaped uint8 run, in a subprocess
  estimate   configs/cifar10_batch_sweep.yaml's wall time here, extrapolated from one timed
             epoch per batch size (bnexp.bench.cnn)
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
import torch

from bnexp.bench.cases import CAT_CASE, DIGITS_CASE, cases, default_data_root
from bnexp.bench.cnn import bench_cnn, bench_estimate
from bnexp.bench.common import COLUMNS, interleaved, rich_table, row
from bnexp.bench.loops import bench_denormal, bench_loops
from bnexp.bench.startup import bench_startup, bench_workers, python_env
from bnexp.config import RunConfig
from bnexp.training.train import train_run

SECTIONS = ("loops", "cnn", "denormal", "vectorize", "startup", "workers", "memory", "estimate")
__all__ = ["COLUMNS", "SECTIONS", "bench_train", "rich_table"]


# --------------------------------------------------------------------------- vectorized seeds


def _with_norm(cfg: RunConfig, norm: str) -> RunConfig:
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"norm": norm})})


def time_seeds(cfgs: list[RunConfig], data, repeats: int) -> tuple[float, float]:
    """Median seconds of whole runs (evaluation and files included) of `cfgs`, runs that differ
    only in train.seed: one after another (`train_run`) and together (`train_seeds`),
    interleaved, after one warm-up of the latter."""
    from bnexp.training.vectorize import train_seeds

    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:

        def one_by_one() -> float:
            t0 = time.perf_counter()
            for c in cfgs:
                train_run(c, Path(tmp) / f"s{c.train.seed}", data=data)
            return time.perf_counter() - t0

        def together() -> float:
            t0 = time.perf_counter()
            train_seeds(cfgs, [Path(tmp) / f"v{c.train.seed}" for c in cfgs], data=data)
            return time.perf_counter() - t0

        together()  # warm-up
        res = interleaved({"seq": one_by_one, "vec": together}, repeats)
    return statistics.median(res["seq"]), statistics.median(res["vec"])


def bench_vectorize(
    tiny: bool,
    repeats: int,
    seeds: int = 8,
    log: Callable[[str], None] = print,
    root: Path | None = None,
) -> pd.DataFrame:
    """Whole runs (evaluation and files included): S seeds one after another vs together.

    The quickstart MLP without BN at 1 thread and one thread per core; the goal's cells, a BN
    cell (norm: custom) of the digits MLP and of the cat/non-cat MLP, at 1 thread."""
    seeds = min(seeds, 4) if tiny else seeds
    by_name = {c.name: c for c in cases(tiny, root)}
    digits = by_name[DIGITS_CASE]
    cat = by_name[CAT_CASE]
    settings = [
        (f"quickstart MLP, {digits.cfg.train.epochs} epochs", digits, "none", t)
        for t in sorted({1, os.cpu_count() or 1})
    ] + [
        (f"BN cell (custom) of the {name}, {c.cfg.train.epochs} epochs", c, "custom", 1)
        for name, c in (("digits MLP", digits), ("cat/non-cat MLP", cat))
    ]
    rows, before = [], torch.get_num_threads()
    for label, case, norm, threads in settings:
        cfgs = [
            _with_norm(case.cfg, norm).model_copy(
                update={"train": case.cfg.train.model_copy(update={"seed": s})}
            )
            for s in range(seeds)
        ]
        log(f"vectorize: {seeds} seeds, {label}, {threads} torch thread(s)")
        torch.set_num_threads(threads)
        seq, vec = time_seeds(cfgs, case.data, repeats)
        torch.set_num_threads(before)
        case_name = f"{seeds} seeds, {label}, {threads} thread(s)"
        goal = ">= 3" if norm != "none" or threads > 1 else None
        rows += [
            row("vectorize", case_name, "one after another", seq, "s"),
            row("vectorize", case_name, "vectorized (train_seeds)", vec, "s"),
            row(
                "vectorize",
                case_name,
                "throughput ratio",
                seq / vec,
                "x",
                goal,
                note=f"{case.source}; median of {repeats}",
            ),
        ]
    return pd.DataFrame(rows, columns=COLUMNS)


# --------------------------------------------------------------------------- memory

_MEMORY_SCRIPT = r"""
import json, sys, torch
from pathlib import Path
from bnexp.config import RunConfig
from bnexp.data import Dataset
from bnexp.training.device import peak_memory_mb
from bnexp.config import RunConfig
from bnexp.training.train import train_run
n, n_test, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
base = peak_memory_mb(torch.device("cpu"))
g = torch.Generator().manual_seed(0)
x = torch.randint(0, 256, (n + n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
y = torch.randint(0, 10, (n + n_test,), generator=g)
data = Dataset("cifar10-50k", x[:n], y[:n], x[n:], y[n:], tuple(map(str, range(10))),
               mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25))
cfg = RunConfig.model_validate({"model": {"arch": "cnn", "channels": [8], "norm": "torch"},
    "train": {"batch_size": 256, "epochs": 1, "device": "cpu", "eval_batch_size": 256}})
s = train_run(cfg, out, data=data)
print(json.dumps({"baseline_mb": base, "peak_rss_mb": s.peak_rss_mb,
                  "data_mb": data.nbytes() / 2**20, "dtype": str(data.x_train.dtype),
                  "steps": s.steps}))
"""


def bench_memory(tiny: bool, log: Callable[[str], None] = print) -> pd.DataFrame:
    """Peak RSS (summary.json's peak_rss_mb) of one CIFAR-shaped uint8 run, in a fresh process."""
    n, n_test = (2_000, 500) if tiny else (50_000, 10_000)
    case = f"CIFAR-shaped run, {n:,} + {n_test:,} uint8 images, CNN 8 channels, eval batch 256"
    log(f"memory: {case}")
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, str(n), str(n_test), tmp],
            capture_output=True,
            text=True,
            env=python_env(),
            cwd=tmp,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"memory run failed: {proc.stderr[-500:]}")
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    return pd.DataFrame(
        [
            row("memory", case, "images in memory", m["data_mb"], "MiB", note=m["dtype"]),
            row(
                "memory",
                case,
                "RSS after imports",
                m["baseline_mb"],
                "MiB",
                note="torch alone is ~500 MiB",
            ),
            row(
                "memory",
                case,
                "peak RSS of the run",
                m["peak_rss_mb"],
                "MiB",
                "<= 1024",
                note="summary.json peak_rss_mb",
            ),
        ],
        columns=COLUMNS,
    )


# --------------------------------------------------------------------------- all


def bench_train(
    tiny: bool = False,
    repeats: int | None = None,
    sections: tuple[str, ...] = SECTIONS,
    data_root: Path | None = None,
    log: Callable[[str], None] = print,
    threads: int | None = None,
    study_config: Path | None = None,
) -> pd.DataFrame:
    """Every section asked for, as one long table (see the module docstring).

    `threads`: torch's intra-op threads for the in-process sections (None: torch's default).
    `study_config`: the sweep the `estimate` section extrapolates (benchmarks/run.py passes the
    checkout's configs/cifar10_batch_sweep.yaml; default: that path under the working folder).
    """
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(
            f"unknown benchmark section(s) {sorted(unknown)}; expected some of {SECTIONS}"
        )
    root = Path(data_root) if data_root else default_data_root()  # None: generated images
    reps = repeats or (1 if tiny else 5)
    study = Path(study_config) if study_config else Path("configs") / STUDY
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _sections(tiny, reps, sections, root, log, study)
    finally:
        torch.set_num_threads(threads_before)


STUDY = "cifar10_batch_sweep.yaml"  # the last row: the user's goal


def _sections(
    tiny: bool,
    reps: int,
    sections: tuple[str, ...],
    root: Path | None,
    log: Callable[[str], None],
    study: Path,
) -> pd.DataFrame:
    from bnexp.sweep.executors import cpu_cores

    parts = []
    if "loops" in sections:
        parts.append(bench_loops(tiny, root, reps, log))
    if "cnn" in sections:
        parts.append(bench_cnn(tiny, root, 1 if tiny else reps, log))
    if "denormal" in sections:
        parts.append(bench_denormal(tiny, reps, log))
    if "vectorize" in sections:
        parts.append(bench_vectorize(tiny, reps, log=log, root=root))
    if "startup" in sections:
        parts.append(bench_startup(1 if tiny else reps, log))
    if "workers" in sections:
        parts.append(bench_workers(tiny, 1 if tiny else min(reps, 2), log))
    if "memory" in sections:
        parts.append(bench_memory(tiny, log))
    if "estimate" in sections:  # as `bnexp run` would: one worker per core
        parts.append(bench_estimate(study, root, tiny, cpu_cores(), log))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)

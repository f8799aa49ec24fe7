"""Section `vectorize`: S seeds of one cell trained one after another (`train_run`) vs together
(`bnexp.training.vectorize.train_seeds`: MLPs as batched matmuls, `bnexp.training.stacked`).
Whole runs, evaluation and files included. The gpu section times the same on a device.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from benchmarks.cases import CAT_CASE, DIGITS_CASE, cases
from benchmarks.common import COLUMNS, interleaved, row
from bnexp.config import RunConfig
from bnexp.training.train import train_run


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

"""`make bench`'s CPU sections (every row of issue 14's goal table, each beside its goal), as one
long table (benchmarks.common.COLUMNS). Times are medians over `repeats`, the variants of one row
interleaved (their order rotated each repeat) so load from other processes hits all alike; ratios
are what to read, absolute figures move with the machine's load.

Sections:
  loops      bnexp's loop vs a hand-written loop vs a DataLoader loop (benchmarks.loops)
  cnn        the CIFAR CNN's step FLOP/s ÷ matmul FLOP/s; bnexp's step ÷ a hand-written
             channels_last step (benchmarks.cnn)
  denormal   flushing denormals on the quickstart's sigmoid MLP (benchmarks.loops)
  vectorize  8 seeds one after another vs trained together (benchmarks.seeds)
  startup    launch -> first optimizer step of `python -m bnexp run` (benchmarks.startup)
  workers    a 12-run sweep with 1 worker vs 2, each in a fresh process; its wall time ÷ the
             sum of its runs' wall_s (benchmarks.startup)
  memory     peak RSS of a 50,000-image CIFAR-shaped uint8 run, in a subprocess (benchmarks.memory)
  estimate   configs/cifar10_batch_sweep.yaml's wall time here, extrapolated from one timed
             epoch per batch size (benchmarks.cnn)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from benchmarks.cases import default_data_root
from benchmarks.cnn import bench_cnn, bench_estimate
from benchmarks.common import COLUMNS, rich_table
from benchmarks.loops import bench_denormal, bench_loops
from benchmarks.memory import bench_memory
from benchmarks.seeds import bench_vectorize
from benchmarks.startup import bench_startup, bench_workers

SECTIONS = (
    "loops", "cnn", "resnet", "denormal", "vectorize", "startup", "workers", "memory", "estimate"
)
__all__ = ["COLUMNS", "SECTIONS", "bench_train", "rich_table"]


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
    `study_config`: the sweep the `estimate` section extrapolates (benchmarks.run passes the
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
    if "resnet" in sections:
        from benchmarks.resnet_step import bench_resnet

        parts.append(bench_resnet(tiny, 1 if tiny else min(reps, 3), log))
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

"""Section `memory`: peak RSS (summary.json's `peak_rss_mb`) of one run holding a CIFAR-shaped
uint8 training set, in a fresh process (`python -m benchmarks.memory N N_TEST OUT` prints its
figures as one JSON line).

The module imports only the standard library at its top, so that the child's "RSS after imports"
counts bnexp and torch, not the parent's table machinery (pandas).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


def measure(n: int, n_test: int, out: Path) -> dict:
    """In this process: RSS after bnexp's imports, then one 1-epoch CNN run on n + n_test
    generated uint8 images (3, 32, 32); its peak RSS, the images' MiB and dtype."""
    import torch

    from bnexp.config import RunConfig
    from bnexp.data import Dataset
    from bnexp.training.device import peak_memory_mb
    from bnexp.training.train import train_run

    base = peak_memory_mb(torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n + n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n + n_test,), generator=g)
    data = Dataset(
        "cifar10-50k", x[:n], y[:n], x[n:], y[n:], tuple(map(str, range(10))),
        mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25),
    )  # fmt: skip
    cfg = RunConfig.model_validate(
        {
            "model": {"arch": "cnn", "channels": [8], "norm": "torch"},
            "train": {"batch_size": 256, "epochs": 1, "device": "cpu", "eval_batch_size": 256},
        }
    )
    s = train_run(cfg, out, data=data)
    return {
        "baseline_mb": base,
        "peak_rss_mb": s.peak_rss_mb,
        "data_mb": data.nbytes() / 2**20,
        "dtype": str(data.x_train.dtype),
        "steps": s.steps,
    }


def bench_memory(tiny: bool, log: Callable[[str], None] = print):
    """The section's rows: `measure` in a fresh process."""
    import pandas as pd

    from benchmarks.common import COLUMNS, row
    from benchmarks.startup import run_python

    n, n_test = (2_000, 500) if tiny else (50_000, 10_000)
    case = f"CIFAR-shaped run, {n:,} + {n_test:,} uint8 images, CNN 8 channels, eval batch 256"
    log(f"memory: {case}")
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
        args = ["-m", "benchmarks.memory", str(n), str(n_test), tmp]
        _, proc = run_python(args, tmp, "memory run")
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    return pd.DataFrame(
        [
            row("memory", case, "images in memory", m["data_mb"], "MiB", note=m["dtype"]),
            row("memory", case, "RSS after imports", m["baseline_mb"], "MiB",
                note="torch alone is ~500 MiB"),
            row("memory", case, "peak RSS of the run", m["peak_rss_mb"], "MiB", "<= 1024",
                note="summary.json peak_rss_mb"),
        ],
        columns=COLUMNS,
    )  # fmt: skip


if __name__ == "__main__":
    n, n_test, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    print(json.dumps(measure(n, n_test, out)))

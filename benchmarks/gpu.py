"""Section `gpu`: the rows for an accelerator, `make bench-gpu` (`benchmarks.run --device cuda`).

The same measurements as the CPU sections, on `device`, side by side in one process:
- steps    the CIFAR CNN (torch BN, batch 128): bnexp's `train_run` optimizer steps (`train_s`)
           against a hand-written loop over the same model, data and batches on the device;
- seeds    8 seeds of a BN cell trained together (`train_seeds`) ÷ one after another, the digits
           MLP (our BN) and the CIFAR CNN (torch's BN): on a GPU a small model leaves most of
           the chip idle, so seeds stacked into one model fill it;
- sweep    a 4-run sweep (the quickstart MLP, no BN and our BN x 2 seeds, each run on its own)
           with `--workers 1` and `--workers 2` on the one device: several runs sharing a GPU;
           each process from launch to exit, every run checked to have run on the device.
On a CPU (`device="cpu"`, what the tests run with `tiny`) the code paths are the same; the figures
that matter are a GPU's. No GPU was lent while this was written: the rows are prepared, not yet
measured there.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from benchmarks.cases import CIFAR_CASE, DIGITS_CASE, Case, cases
from benchmarks.cnn import hand_cnn_loop
from benchmarks.common import COLUMNS, interleaved, row
from benchmarks.seeds import time_seeds
from benchmarks.startup import run_python, write_quickstart_sweep
from bnexp.config import RunConfig
from bnexp.results import ResultsFolder
from bnexp.training.train import train_run


def on_device(cfg: RunConfig, device: str, **train) -> RunConfig:
    return cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"device": device, **train})}
    )


def _steps_rows(case: Case, device: str, repeats: int) -> list[dict]:
    cfg = on_device(case.cfg, device)
    case = Case(case.name, cfg, case.data, case.source)
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
        counter = iter(range(10**6))
        ours = lambda: train_run(cfg, Path(tmp) / f"r{next(counter)}", data=case.data).train_s  # noqa: E731
        hand = lambda: hand_cnn_loop(case, device)  # noqa: E731
        hand()  # warm-up: kernels, allocator, cuDNN's algorithm choice
        res = interleaved({"ours": ours, "hand": hand}, repeats)
    a, b = statistics.median(res["ours"]), statistics.median(res["hand"])
    name = f"{case.name}, batch {cfg.train.batch_size}, {device}"
    return [
        row("gpu", name, "bnexp train_run steps", a, "s", note=f"median of {repeats}"),
        row("gpu", name, "hand-written loop steps", b, "s",
            note="same batches; channels_last, foreach SGD (benchmarks.cnn.hand_cnn_loop)"),
        row("gpu", name, "bnexp ÷ hand-written (throughput)", b / a, "x", ">= 0.95"),
    ]  # fmt: skip


def _seeds_rows(case: Case, norm: str, device: str, seeds: int, repeats: int) -> list[dict]:
    base = case.cfg.model_copy(update={"model": case.cfg.model.model_copy(update={"norm": norm})})
    cfgs = [on_device(base, device, seed=s) for s in range(seeds)]
    seq, vec = time_seeds(cfgs, case.data, repeats)
    name = f"{seeds} seeds, BN cell ({norm}) of the {case.name}, {device}"
    return [
        row("gpu", name, "one after another", seq, "s"),
        row("gpu", name, "vectorized (train_seeds)", vec, "s"),
        row("gpu", name, "throughput ratio", seq / vec, "x", ">= 3",
            note=f"whole runs, evaluation included; median of {repeats}"),
    ]  # fmt: skip


SWEEP_NAME = "bench-gpu-sweep"


def _sweep_rows(device: str, epochs: int, repeats: int) -> list[dict]:
    """The 4-run sweep with 1 and 2 workers, each a fresh `python -m bnexp run` on the device."""
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
        grid = {"model.norm": ["none", "custom"], "train.seed": [0, 1]}  # no BN and ours
        path = write_quickstart_sweep(tmp, SWEEP_NAME, epochs, grid, device)
        counter = iter(range(10**6))

        def sweep(workers: int) -> float:
            out = Path(tmp) / f"out{next(counter)}"
            args = ["-m", "bnexp", "run", str(path), "--out", str(out), "--workers", str(workers)]
            wall, _ = run_python(args, tmp, "bnexp run")
            summary = ResultsFolder(out / SWEEP_NAME).read_summary()
            ran_on = set(summary["device"].astype(str).str.split(":").str[0])
            if len(summary) != 4 or ran_on != {torch.device(device).type}:
                raise RuntimeError(
                    f"the sweep ran {len(summary)} runs on {ran_on}, not 4 on {device}"
                )
            return wall

        if repeats > 1:
            sweep(1)  # warm-up: the BN kernel's build, caches
        res = interleaved({"1": lambda: sweep(1), "2": lambda: sweep(2)}, repeats)
    one, two = statistics.median(res["1"]), statistics.median(res["2"])
    name = f"4-run quickstart sweep, {epochs} epochs, {device}"
    return [
        row("gpu", name, "--workers 1, launch to exit", one, "s"),
        row("gpu", name, "--workers 2, launch to exit", two, "s"),
        row("gpu", name, "--workers 2 speed-up", one / two, "x",
            note=json.dumps({"runs": 4, "repeats": repeats})),
    ]  # fmt: skip


def bench_gpu(
    device: str,
    tiny: bool,
    repeats: int,
    root: Path | None,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Every row of the section on `device` ("cuda", "cuda:1", or "cpu" for the code paths)."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        log(f"gpu: skipped (torch sees no CUDA device for {device!r})")
        return pd.DataFrame(columns=COLUMNS)
    by_name = {c.name: c for c in cases(tiny, root)}
    cifar, digits = by_name[CIFAR_CASE], by_name[DIGITS_CASE]
    seeds = 4 if tiny else 8
    rows = []
    log(f"gpu: CIFAR CNN steps, bnexp vs hand-written, on {device}")
    rows += _steps_rows(cifar, device, repeats)
    for case, norm in ((digits, "custom"), (cifar, "torch")):
        log(f"gpu: {seeds} seeds of {case.name} ({norm} BN) on {device}")
        rows += _seeds_rows(case, norm, device, seeds, repeats)
    log(f"gpu: a 4-run sweep with 1 and 2 workers on {device}")
    rows += _sweep_rows(device, 1 if tiny else 15, min(repeats, 3))
    return pd.DataFrame(rows, columns=COLUMNS)

"""Section `gpu`: the rows for an accelerator, `make bench-gpu` (benchmarks/run.py --device cuda).

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import yaml
from torch import nn

from bnexp.bench.cases import CIFAR_CASE, DIGITS_CASE, Case, cases
from bnexp.bench.common import COLUMNS, interleaved, row
from bnexp.bench.startup import python_env
from bnexp.config import RunConfig
from bnexp.nn.models import build_model, init_weights
from bnexp.training.step import batches_of_epoch, image_layout
from bnexp.training.train import train_run


def on_device(cfg: RunConfig, device: str, **train) -> RunConfig:
    return cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"device": device, **train})}
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_steps(case: Case, device: torch.device) -> float:
    """Seconds of a plain PyTorch loop's optimizer steps: bnexp's batches (the same seeded
    permutations), model and data on the device, torch.optim.SGD (foreach); a classifier's
    cross-entropy (the CIFAR case)."""
    cfg, data = case.cfg, case.data.to(device).ready()
    tc = cfg.train
    model = build_model(cfg.model, data.input_shape, data.num_outputs)
    init_weights(model, tc.seed)
    model.to(device).train()
    conv = cfg.model.arch == "cnn"
    opt = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, foreach=True)
    g = torch.Generator().manual_seed(tc.seed)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(tc.epochs):
        for idx in batches_of_epoch(len(data.x_train), tc.batch_size, g):
            idx = idx.to(device)
            x = image_layout(data.prepare(data.x_train[idx]), conv)
            loss = nn.functional.cross_entropy(model(x), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()  # a host read per step, as bnexp's loop (divergence check)
    _sync(device)
    return time.perf_counter() - t0


def _steps_rows(case: Case, device: str, repeats: int) -> list[dict]:
    dev = torch.device(device)
    cfg = on_device(case.cfg, device)
    case = Case(case.name, cfg, case.data, case.source)
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
        counter = iter(range(10**6))
        ours = lambda: train_run(cfg, Path(tmp) / f"r{next(counter)}", data=case.data).train_s  # noqa: E731
        hand = lambda: hand_steps(case, dev)  # noqa: E731
        hand()  # warm-up: kernels, allocator, cuDNN's algorithm choice
        res = interleaved({"ours": ours, "hand": hand}, repeats)
    a, b = statistics.median(res["ours"]), statistics.median(res["hand"])
    name = f"{case.name}, batch {cfg.train.batch_size}, {device}"
    return [
        row("gpu", name, "bnexp train_run steps", a, "s", note=f"median of {repeats}"),
        row("gpu", name, "hand-written loop steps", b, "s", note="same batches, foreach SGD"),
        row("gpu", name, "bnexp ÷ hand-written (throughput)", b / a, "x", ">= 0.95"),
    ]


def _seeds_rows(case: Case, norm: str, device: str, seeds: int, repeats: int) -> list[dict]:
    from bnexp.training.vectorize import train_seeds

    base = case.cfg.model_copy(update={"model": case.cfg.model.model_copy(update={"norm": norm})})
    cfgs = [on_device(base, device, seed=s) for s in range(seeds)]
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:

        def one_by_one() -> float:
            t0 = time.perf_counter()
            for c in cfgs:
                train_run(c, Path(tmp) / f"s{c.train.seed}", data=case.data)
            return time.perf_counter() - t0

        def together() -> float:
            t0 = time.perf_counter()
            train_seeds(cfgs, [Path(tmp) / f"v{c.train.seed}" for c in cfgs], data=case.data)
            return time.perf_counter() - t0

        together()  # warm-up
        res = interleaved({"seq": one_by_one, "vec": together}, repeats)
    seq, vec = statistics.median(res["seq"]), statistics.median(res["vec"])
    name = f"{seeds} seeds, BN cell ({norm}) of the {case.name}, {device}"
    return [
        row("gpu", name, "one after another", seq, "s"),
        row("gpu", name, "vectorized (train_seeds)", vec, "s"),
        row("gpu", name, "throughput ratio", seq / vec, "x", ">= 3",
            note=f"whole runs, evaluation included; median of {repeats}"),
    ]  # fmt: skip


SWEEP = {
    "name": "bench-gpu-sweep",
    "data": {"dataset": "digits"},
    "model": {"arch": "mlp", "hidden": [100, 100, 100], "activation": "sigmoid"},
    "train": {"optimizer": "sgd", "lr": 0.2, "momentum": 0.9, "batch_size": 64},
    "sweep": {"model.norm": ["none", "custom"], "train.seed": [0, 1]},
}


def _sweep_rows(device: str, epochs: int, repeats: int) -> list[dict]:
    """The 4-run sweep with 1 and 2 workers, each a fresh `python -m bnexp run` on the device."""
    exp = {**SWEEP, "train": {**SWEEP["train"], "epochs": epochs, "device": device}}
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
        cfg = Path(tmp) / "sweep.yaml"
        cfg.write_text(yaml.safe_dump(exp))
        counter = iter(range(10**6))

        def sweep(workers: int) -> float:
            out = Path(tmp) / f"out{next(counter)}"
            cmd = [sys.executable, "-m", "bnexp", "run", str(cfg), "--out", str(out),
                   "--workers", str(workers)]  # fmt: skip
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=python_env(), cwd=tmp)
            wall = time.perf_counter() - t0
            if done.returncode != 0:
                raise RuntimeError(f"bnexp run failed: {done.stderr[-500:]}")
            summary = pd.read_csv(out / exp["name"] / "summary.csv")
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

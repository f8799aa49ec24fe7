"""ResNet-20 training step: bnexp's run vs a hand-written channels_last loop, on 1 thread.

    python -m benchmarks.resnet_step [--tiny] [--repeats 2]    (make bench: section resnet)

Both train He et al.'s ResNet-20 (bnexp.nn.resnet) on the same random CIFAR-shaped batches
(uint8 32x32 RGB, 10 classes, bnexp's seeded batch order), SGD with momentum. bnexp's time is
train_run's train_s (timing.csv: the training steps, evaluations excluded); the hand loop is the
fastest plain-PyTorch loop we know (benchmarks.cnn.hand_cnn_loop: weights and images
channels_last, foreach SGD, grads set to None). Ratio = hand time / bnexp time (>= 0.9 is the
goal of issue 24); FLOP/s ÷ matmul FLOP/s compares the step's arithmetic rate (3 × forward FLOPs,
FlopCounterMode) with a 1024² fp32 matmul's on this machine. Best of --repeats, interleaved.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.cases import Case  # noqa: E402
from benchmarks.cnn import hand_cnn_loop, matmul_flops_per_s  # noqa: E402
from benchmarks.common import COLUMNS, row  # noqa: E402
from bnexp.config import RunConfig  # noqa: E402
from bnexp.data import load_dataset  # noqa: E402
from bnexp.nn.models import build_model  # noqa: E402
from bnexp.training.train import train_run  # noqa: E402


def write_data(folder: Path, n: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    np.savez(folder / "train.npz", x=x, y=y)
    np.savez(folder / "test.npz", x=x[:128], y=y[:128])
    return {"dataset": "npz", "train": str(folder / "train.npz"), "test": str(folder / "test.npz")}


def config(data: dict, norm: str, steps: int, batch: int) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": data,
            "model": {"arch": "resnet", "depth": 20, "norm": norm},
            "train": {
                "lr": 0.05,
                "momentum": 0.9,
                "batch_size": batch,
                "epochs": 1,
                "device": "cpu",
                "checkpoint_every": 0,
            },
        }
    )


def bnexp_seconds(cfg: RunConfig, folder: Path) -> float:
    run = Path(tempfile.mkdtemp(dir=folder))
    train_run(cfg, run)
    return float(pd.read_csv(run / "timing.csv")["train_s"].iloc[-1])


def forward_flops(cfg: RunConfig) -> int:
    model = build_model(cfg.model, (3, 32, 32), 10).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops()


def bench_resnet(tiny: bool, reps: int, log) -> pd.DataFrame:
    """`make bench`'s resnet rows: ms per step of the hand loop and of bnexp (torch's BN, ours),
    hand ÷ bnexp beside its goal (>= 0.9), and each step's FLOP/s ÷ matmul FLOP/s. 1 thread."""
    steps, batch = (2, 16) if tiny else (8, 128)
    log(f"resnet: ResNet-20 training step, batch {batch}, {steps} steps, best of {reps}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times, step_flops, matmul = _timed(steps, batch, reps)
    finally:
        torch.set_num_threads(threads)
    hand = min(times["hand"]) / steps
    note = f"batch {batch}, 1 thread, best of {reps}, interleaved"
    rows = [
        row("resnet", "ResNet-20", "hand-written step (channels_last)", hand * 1e3, "ms", note=note)
    ]
    for norm in ("torch", "custom"):
        s = min(times[norm]) / steps
        case = f"ResNet-20, norm {norm}"
        rows += [
            row("resnet", case, "bnexp step", s * 1e3, "ms", note=note),
            row("resnet", case, "hand step ÷ bnexp step", hand / s, "x", ">= 0.9", note),
            row("resnet", case, "bnexp step FLOP/s ÷ matmul FLOP/s", step_flops / s / matmul, ""),
        ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _timed(steps: int, batch: int, reps: int) -> tuple[dict[str, list[float]], float, float]:
    """Seconds of `steps` training steps per repeat, for the hand loop and bnexp (both norms),
    interleaved so that a change of load hits every variant alike; FLOPs of one step; matmul
    FLOP/s."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = write_data(folder, steps * batch)  # one epoch = `steps` steps
        cfgs = {n: config(data, n, steps, batch) for n in ("torch", "custom")}
        case = Case("resnet20", cfgs["torch"], load_dataset(cfgs["torch"].data), "random")
        times: dict[str, list[float]] = {"hand": [], "torch": [], "custom": []}
        for _ in range(reps):
            times["hand"].append(hand_cnn_loop(case))
            for norm, cfg in cfgs.items():
                times[norm].append(bnexp_seconds(cfg, folder))
        step_flops = 3 * forward_flops(cfgs["torch"]) * batch
    return times, step_flops, matmul_flops_per_s(1024, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2 steps of 16: the code, not speed")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(bench_resnet(args.tiny, args.repeats, print).to_string(index=False))


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")

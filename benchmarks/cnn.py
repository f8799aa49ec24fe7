"""Sections `cnn` and `estimate`: how close the CIFAR CNN's training step comes to the machine,
and what the shipped CIFAR batch-size study would cost here.

cnn       (a) the FLOP/s of bnexp's CNN training step (`train_run`'s optimizer-step time) ÷ the
          FLOP/s of one large `torch.mm` in the same process and thread count; (b) bnexp's step
          ÷ a hand-written channels_last step of the same model, data preparation and batches.
          FLOPs are counted from the layers (`cnn_train_flops`), not measured.
estimate  configs/cifar10_batch_sweep.yaml as shipped: one run per batch size trained for one
          epoch (training and its evaluations timed by `train_run`), extrapolated to the sweep's
          epochs, runs and workers (`sweep_estimate`).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from benchmarks.cases import CIFAR_CASE, Case, cases
from benchmarks.common import COLUMNS, interleaved, row
from bnexp.training.train import batches_of_epoch, train_run

# --------------------------------------------------------------------------- FLOPs


def layer_flops(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Forward multiply-adds ×2 per example of every Conv2d and Linear layer, by layer name:
    conv 2·(Cin/groups)·Cout·kh·kw·Hout·Wout, linear 2·in·out. The output sizes come from one
    forward pass of a single zero example (shapes only); BN, activations and pooling are not
    counted (a few % of a conv network's arithmetic, none of it matmul-like)."""
    out_hw: dict[str, tuple[int, int]] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, o, name=name: out_hw.__setitem__(name, o.shape[2:]))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    flops = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            h, w = out_hw[name]
            kh, kw = m.kernel_size
            flops[name] = 2 * (m.in_channels // m.groups) * m.out_channels * kh * kw * h * w
        elif isinstance(m, nn.Linear):
            flops[name] = 2 * m.in_features * m.out_features
    return flops


# forward + backward = 3 forward passes' arithmetic: the backward computes the input's gradient
# and the weights' gradient, each a product the size of the forward's (the first layer's input
# gradient is not needed, so this overcounts that one layer by a third)
TRAIN_FLOPS_FACTOR = 3


def cnn_train_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one training example through `model`: forward + backward (see above)."""
    return TRAIN_FLOPS_FACTOR * sum(layer_flops(model, input_shape).values())


def matmul_flops_per_s(n: int, repeats: int) -> float:
    """FLOP/s of an (n, n) @ (n, n) fp32 torch.mm (2·n³ FLOPs) at this process's thread count,
    best of `repeats` after a warm-up: the machine's attainable arithmetic rate."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# --------------------------------------------------------------------------- the hand-written step


def hand_cnn_loop(case: Case, device: torch.device | str = "cpu") -> float:
    """The fastest plain-PyTorch loop we know for this model: weights and images channels_last,
    SGD with foreach updates, grads set to None; the same data preparation (Dataset.prepare)
    and the same batches as bnexp's (seeded permutation, a final batch of one dropped), on
    `device` (the gpu section's CUDA rows use it too). Seconds for all its steps (data indexing
    and preparation included, as in train_run's train_s)."""
    from bnexp.nn.models import build_model, init_weights

    device = torch.device(device)
    tc, data = case.cfg.train, case.data.to(device)
    model = build_model(case.cfg.model, data.input_shape, data.num_outputs)
    init_weights(model, tc.seed)
    model = model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, foreach=True)
    order = torch.Generator().manual_seed(tc.seed)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(tc.epochs):
        for idx in batches_of_epoch(len(data.x_train), tc.batch_size, order):
            idx = idx.to(device)
            x = data.prepare(data.x_train[idx]).contiguous(memory_format=torch.channels_last)
            loss = nn.functional.cross_entropy(model(x), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    _sync(device)
    return time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_cnn(
    tiny: bool, root: Path | None, repeats: int, log: Callable[[str], None] = print
) -> pd.DataFrame:
    """Rows (a) and (b) of the issue's table for the CIFAR CNN case (benchmarks.cases)."""
    case = next(c for c in cases(tiny, root) if c.name == CIFAR_CASE)
    data, tc = case.data, case.cfg.train
    n_steps_samples = (
        sum(len(b) for b in batches_of_epoch(len(data.x_train), tc.batch_size, torch.Generator()))
        * tc.epochs
    )
    from bnexp.nn.models import build_model

    per_example = cnn_train_flops(
        build_model(case.cfg.model, data.input_shape, data.num_outputs), data.input_shape
    )
    threads = torch.get_num_threads()
    log(f"cnn: {case.name}, bnexp vs hand-written channels_last steps; matmul, {threads} thread(s)")
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:

        def bnexp_steps() -> float:
            return train_run(case.cfg, Path(tmp) / "a", data=data).train_s

        hand_cnn_loop(case)  # warm-up
        res = interleaved({"bnexp": bnexp_steps, "hand": lambda: hand_cnn_loop(case)}, repeats)
    a, b = statistics.median(res["bnexp"]), statistics.median(res["hand"])
    mm_n = 512 if tiny else 2048
    mm_reps = 2 if tiny else 5
    mm = matmul_flops_per_s(mm_n, mm_reps)
    step_flops = per_example * n_steps_samples / a
    name = f"{case.name}, batch {tc.batch_size}"
    note = f"{n_steps_samples} samples/run, {case.source}, median of {repeats}, {threads} thread(s)"
    return pd.DataFrame(
        [
            row("cnn", name, "FLOPs per training example", per_example / 1e6, "MFLOP",
                note="conv + linear layers, forward x3 (fwd + bwd); BN, ReLU, pooling not counted"),
            row("cnn", name, "bnexp step FLOP/s", step_flops / 1e9, "GFLOP/s", note=note),
            row("cnn", name, "matmul FLOP/s", mm / 1e9, "GFLOP/s",
                note=f"torch.mm {mm_n}x{mm_n} fp32, best of {mm_reps}, {threads} thread(s)"),
            row("cnn", name, "bnexp step FLOP/s ÷ matmul FLOP/s", step_flops / mm, "",
                ">= 0.5", note=f"{threads} thread(s)"),
            row("cnn", name, "hand-written step (channels_last)", n_steps_samples / b,
                "samples/s"),
            row("cnn", name, "bnexp step", n_steps_samples / a, "samples/s",
                note="train_run's train_s (optimizer steps, data preparation included)"),
            row("cnn", name, "bnexp step ÷ hand-written step", b / a, "x", ">= 1.0",
                note="throughput ratio; same model, data preparation and batches"),
        ],
        columns=COLUMNS,
    )  # fmt: skip


# --------------------------------------------------------------------------- the study's estimate


# measure.eval_subset in the estimate: whole-set evaluations per run besides the first and last
# (those whose subset estimate is near the target; 1-3 in the CIFAR study's runs)
NEAR_TARGET_EVALUATIONS = 3


def sweep_estimate(
    epochs: int,
    runs_per_bs: dict[int, int],
    timed: dict[int, dict],
    workers: int,
    subset_share: float | None = None,
):
    """Seconds for the whole sweep, from one timed one-epoch run per batch size.

    timed[bs]: that run's train_s (one epoch of steps), eval_s (its two evaluations: before the
    first step and after the epoch) and wall_s. A run of E epochs: E epochs of steps, E + 1
    evaluations, and the rest of the one-epoch run's wall time (data, model, files) once per
    epoch (an upper bound: part of it is paid once per run). The runs share `workers` cores,
    assumed to scale perfectly (a lower bound for the wall time of that part). `subset_share`:
    measure.eval_subset's examples ÷ the train + test examples; then 2 + NEAR_TARGET_EVALUATIONS
    whole-set evaluations and E - 1 subset estimates, each costing that share of one (an upper
    bound: most estimates are first looks at a quarter of the subset)."""
    total = 0.0
    for bs, n_runs in runs_per_bs.items():
        t = timed[bs]
        evaluation = t["eval_s"] / 2
        rest = max(0.0, t["wall_s"] - t["train_s"] - t["eval_s"])
        if subset_share is None:
            evaluations = epochs + 1.0
        else:
            # never more than the whole sets at every evaluation
            full = 2 + NEAR_TARGET_EVALUATIONS
            evaluations = min(epochs + 1.0, full + (epochs - 1) * subset_share)
        per_run = epochs * (t["train_s"] + rest) + evaluations * evaluation
        total += n_runs * per_run
    return total / max(1, workers)


def bench_estimate(
    config: Path | None,
    root: Path | None,
    tiny: bool,
    workers: int,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Row (e): the estimated wall time of the shipped CIFAR batch-size sweep on this machine."""
    from bnexp.config import expand, load_experiment

    if config is None or not Path(config).is_file():
        log(f"estimate: skipped (no study config at {config})")
        return pd.DataFrame(columns=COLUMNS)
    overrides = ["train.device=cpu"]
    subset = root / "cifar10-subset" if root else None
    if subset is not None and (subset / "train.npz").is_file():
        overrides += [f"data.train={subset / 'train.npz'}", f"data.test={subset / 'test.npz'}"]
        source = "cifar10-subset files"
    else:
        source = None
    exp, _ = load_experiment(config, overrides)
    plan = expand(exp)
    epochs = exp.train.epochs
    runs_per_bs: dict[int, int] = {}
    first: dict[int, object] = {}
    for r in plan:
        bs = r.config.train.batch_size
        runs_per_bs[bs] = runs_per_bs.get(bs, 0) + 1
        # one run per batch size: our BN's when swept (the costliest norm), else the first
        if bs not in first or (
            r.config.model.norm == "custom" and first[bs].config.model.norm != "custom"
        ):
            first[bs] = r
    data = _study_data(exp, source, tiny)
    source = source or "generated (no files)"
    timed = {}
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
        for bs, r in sorted(first.items()):
            cfg = r.config.model_copy(
                update={"train": r.config.train.model_copy(update={"epochs": 1})}
            )
            if tiny:
                cfg = cfg.model_copy(
                    update={"model": cfg.model.model_copy(update={"channels": [8, 16]})}
                )
            log(f"estimate: one epoch at batch size {bs} (norm {cfg.model.norm}), {source}")
            s = train_run(cfg, Path(tmp) / f"bs{bs}", data=data)
            timed[bs] = {"train_s": s.train_s, "eval_s": s.eval_s, "wall_s": s.wall_s}
    n_sub = exp.measure.eval_subset
    share = None if n_sub is None else min(1.0, n_sub / (len(data.x_train) + len(data.x_test)))
    total = sweep_estimate(epochs, runs_per_bs, timed, workers, share)
    name = f"{Path(config).name} as shipped ({len(plan)} runs x {epochs} epochs)"
    rows = [
        row("estimate", name, f"one epoch at batch {bs}: train / eval", t["train_s"], "s",
            note=f"evaluations {t['eval_s']:.1f} s (2 of them), whole run {t['wall_s']:.1f} s")
        for bs, t in sorted(timed.items())
    ]  # fmt: skip
    rows.append(
        row(
            "estimate",
            name,
            "estimated sweep wall time",
            total / 3600,
            "h",
            "<= 1",
            note=f"estimate: 1-epoch runs ({len(data.x_train)} + {len(data.x_test)} images, "
            f"{source}{', tiny model' if tiny else ''}) x {epochs} epochs, "
            f"{workers} worker(s) assumed to scale; {torch.get_num_threads()} thread(s) each"
            + (f"; eval_subset {n_sub}" if n_sub else ""),
        )
    )
    return pd.DataFrame(rows, columns=COLUMNS)


def _study_data(exp, source: str | None, tiny: bool):
    """The study's data as `bnexp run` would load it, else generated images of its shape
    (5,000 + 10,000 for the shipped subset); tiny: 256 + 64 of them."""
    from benchmarks.cases import _subset, cifar_data
    from bnexp.data import load_dataset

    if source is not None:
        data = load_dataset(exp.data)
    else:
        data, _ = cifar_data(None, 5000, 10000)
    return _subset(data, 256, 64) if tiny else data

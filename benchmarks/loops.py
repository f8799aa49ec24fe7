"""Section `loops`: samples/s of (a) bnexp's `train_run` (its optimizer-step time `train_s`; also
its whole wall time, evaluation and files included), (b) a minimal hand-written loop, (c) that
loop fed by DataLoader(TensorDataset); same model, data, steps. Section `denormal`: step time of
the quickstart's sigmoid MLP (no BN) with and without flushing denormals.
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

from benchmarks.cases import (
    CAT_CASE,
    CIFAR_CASE,
    DIGITS_CASE,
    Case,
    cases,
    digits_data,
    quickstart_cfg,
)
from benchmarks.common import COLUMNS, interleaved, row
from bnexp.config import RunConfig
from bnexp.data import Dataset
from bnexp.nn.models import build_model, init_weights
from bnexp.training.train import batches_of_epoch, train_run


def _n_samples(n: int, batch_size: int, epochs: int) -> int:
    per_epoch = sum(
        len(b) for b in batches_of_epoch(n, batch_size, torch.Generator().manual_seed(0))
    )
    return per_epoch * epochs


def _hand_model(case: Case) -> tuple[nn.Module, torch.optim.Optimizer]:
    tc = case.cfg.train
    model = build_model(case.cfg.model, case.data.input_shape, case.data.num_outputs)
    init_weights(model, tc.seed)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum)
    return model, opt


def _hand_step(model, opt, x, y, data: Dataset) -> None:
    x = data.prepare(x)  # uint8 images: /255 and standardize, as any loop over uint8 data must
    out = model(x)
    if data.binary:
        loss = nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), y.float())
    else:
        loss = nn.functional.cross_entropy(out, y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def bnexp_loop(case: Case, workdir: Path) -> dict[str, float]:
    """bnexp's train_run: its optimizer-step seconds, its whole wall time and its eval time."""
    s = train_run(case.cfg, workdir / "a", data=case.data)
    return {"steps_s": s.train_s, "wall_s": s.wall_s, "eval_s": s.eval_s}


# The evaluation-share row's run: the case measured as the shipped configs measure it,
# measure.eval_subset a fifth of the training set, with the shipped configs' train_acc target
# and epochs for that network (configs/catvnoncat_batch_sweep.yaml, configs/quickstart.yaml,
# configs/studies/cifar10_*.yaml): the whole sets near the target are a few evaluations of a
# shipped run's length, but most of a short run's.
SUBSET_FRACTION = 5
SHIPPED = {CAT_CASE: (0.95, 60), DIGITS_CASE: (0.95, 40), CIFAR_CASE: (0.5, 40)}  # target, epochs


def subset_cfg(case: Case, tiny: bool = False) -> RunConfig:
    """The case's run as the shipped configs measure it: measure.eval_subset, the shipped
    train_acc target and epochs (`tiny`: the case's own epochs). The whole sets are evaluated at
    the first and last evaluation and wherever an estimate comes near the target."""
    n = max(32, len(case.data.x_train) // SUBSET_FRACTION)
    value, epochs = SHIPPED[case.name]
    target = {"metric": "train_acc", "value": value}
    tc = case.cfg.train
    return case.cfg.model_copy(
        update={
            "measure": case.cfg.measure.model_validate(
                {**case.cfg.measure.model_dump(), "eval_subset": n, "target": target}
            ),
            "train": tc.model_copy(update={"epochs": tc.epochs if tiny else epochs}),
        }
    )


def eval_share(cfg: RunConfig, data: Dataset, workdir: Path) -> float:
    s = train_run(cfg, workdir / "e", data=data)
    return s.eval_s / s.wall_s


@torch.inference_mode()
def _hand_evaluate(model: nn.Module, case: Case) -> None:
    """What bnexp evaluates at each point: loss and accuracy on the whole train and test sets,
    in eval mode, `eval_batch_size` examples at a time."""
    data, bs = case.data, case.cfg.train.eval_batch_size
    model.eval()
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        loss, correct = 0.0, 0
        for i in range(0, len(x), bs):
            out = model(data.prepare(x[i : i + bs]))
            if data.binary:
                z = out.squeeze(1)
                loss += float(
                    nn.functional.binary_cross_entropy_with_logits(z, y[i : i + bs].float())
                )
                correct += int(((z > 0).long() == y[i : i + bs]).sum())
            else:
                loss += float(nn.functional.cross_entropy(out, y[i : i + bs]))
                correct += int((out.argmax(1) == y[i : i + bs]).sum())
    model.train()


def hand_loop(case: Case, evaluate: bool = False) -> float:
    """The minimal hand-written loop: a permutation per epoch, index, step; `evaluate`: also the
    evaluations bnexp makes (before the first step and after every epoch)."""
    model, opt = _hand_model(case)
    x, y, bs = case.data.x_train, case.data.y_train, case.cfg.train.batch_size
    g = torch.Generator().manual_seed(case.cfg.train.seed)
    t0 = time.perf_counter()
    if evaluate:
        _hand_evaluate(model, case)
    for _ in range(case.cfg.train.epochs):
        for idx in torch.randperm(len(x), generator=g).split(bs):
            if len(idx) > 1:
                _hand_step(model, opt, x[idx], y[idx], case.data)
        if evaluate:
            _hand_evaluate(model, case)
    return time.perf_counter() - t0


def dataloader_loop(case: Case) -> float:
    """The same loop fed by torch.utils.data.DataLoader over a TensorDataset."""
    from torch.utils.data import DataLoader, TensorDataset

    model, opt = _hand_model(case)
    bs = case.cfg.train.batch_size
    loader = DataLoader(
        TensorDataset(case.data.x_train, case.data.y_train),
        batch_size=bs,
        shuffle=True,
        generator=torch.Generator().manual_seed(case.cfg.train.seed),
    )
    t0 = time.perf_counter()
    for _ in range(case.cfg.train.epochs):
        for xb, yb in loader:
            if len(yb) > 1:
                _hand_step(model, opt, xb, yb, case.data)
    return time.perf_counter() - t0


def bench_loops(
    tiny: bool, root: Path | None, repeats: int, log: Callable[[str], None] = print
) -> pd.DataFrame:
    rows = []
    for case in cases(tiny, root):
        log(f"loops: {case.name} ({case.source})")
        tc = case.cfg.train
        samples = _n_samples(len(case.data.x_train), tc.batch_size, tc.epochs)
        sub = subset_cfg(case, tiny)  # the evaluation-share row's run (variant e)
        with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
            hand_loop(case)  # warm-up (first-call costs: allocator, kernels, lazy imports)
            reps = (
                repeats if case.cfg.model.arch == "mlp" else min(repeats, 3)
            )  # CNN steps are slow on a CPU
            variants = {
                "a": lambda c=case: bnexp_loop(c, Path(tmp)),
                "b": lambda c=case: hand_loop(c),
                "c": lambda c=case: dataloader_loop(c),
            }
            if case.cfg.model.arch == "mlp":  # the goal's networks (a CNN's evaluation: cnn.py)
                variants["d"] = lambda c=case: hand_loop(c, evaluate=True)
            variants["e"] = lambda c=case, s=sub: eval_share(s, c.data, Path(tmp))
            res = interleaved(variants, reps)
        a_steps = statistics.median(r["steps_s"] for r in res["a"])
        a_wall = statistics.median(r["wall_s"] for r in res["a"])
        full_share = statistics.median(r["eval_s"] / r["wall_s"] for r in res["a"])
        b, c = statistics.median(res["b"]), statistics.median(res["c"])
        is_mlp = case.cfg.model.arch == "mlp"
        note = f"{samples} samples/run, {case.source}, median of {reps}"
        rows += [
            row(
                "loops",
                case.name,
                "a: bnexp train_run (steps)",
                samples / a_steps,
                "samples/s",
                note=note,
            ),
            row(
                "loops",
                case.name,
                "a: bnexp train_run (whole run)",
                samples / a_wall,
                "samples/s",
                note="evaluation and files included",
            ),
            row("loops", case.name, "b: hand-written loop", samples / b, "samples/s"),
            row("loops", case.name, "c: DataLoader loop", samples / c, "samples/s"),
            row("loops", case.name, "a/b (steps)", b / a_steps, "x", ">= 0.95"),
            row(
                "loops",
                case.name,
                "a/b (whole run)",
                b / a_wall,
                "x",
                note="a evaluates train+test sets every epoch, b never",
            ),
            row("loops", case.name, "a/c (steps)", c / a_steps, "x", ">= 2" if is_mlp else None),
        ]
        if "d" in res:  # the whole-run goal is for the quickstart network
            d = statistics.median(res["d"])
            rows.append(
                row("loops", case.name, "a/d (whole run)", d / a_wall, "x",
                    ">= 0.95" if case.name == DIGITS_CASE else None,
                    note="d: the hand loop with bnexp's evaluations (whole sets, each epoch)"),
            )  # fmt: skip
        rows += [
            row("loops", case.name, "evaluation share, whole sets at every evaluation",
                full_share, "", note=f"{tc.epochs} epochs"),
            row("loops", case.name, "evaluation share, measure.eval_subset",
                statistics.median(res["e"]), "", "<= 0.10",
                note=f"eval_subset {sub.measure.eval_subset}, {sub.train.epochs} epochs, target "
                f"train_acc {sub.measure.target.value} (the shipped configs'); whole sets at the "
                "first, the last and near the target"),
        ]  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


# --------------------------------------------------------------------------- denormals


def bench_denormal(tiny: bool, repeats: int, log: Callable[[str], None] = print) -> pd.DataFrame:
    """train_run's step time on the quickstart's sigmoid MLP without BN, flush on vs off."""
    cfg = quickstart_cfg(1 if tiny else 40)
    data = digits_data(tiny)
    log("denormal: quickstart MLP, flush_denormal off vs on")
    was = torch.set_flush_denormal(False)
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:

        def steps(flush: bool) -> float:
            torch.set_flush_denormal(flush)
            try:
                return train_run(cfg, Path(tmp), data=data).train_s
            finally:
                torch.set_flush_denormal(False)

        res = interleaved({"off": lambda: steps(False), "on": lambda: steps(True)}, repeats)
    torch.set_flush_denormal(was)
    off, on = statistics.median(res["off"]), statistics.median(res["on"])
    case = f"quickstart MLP, {cfg.train.epochs} epochs"
    return pd.DataFrame(
        [
            row("denormal", case, "steps, denormals kept", off, "s"),
            row("denormal", case, "steps, denormals flushed", on, "s"),
            row("denormal", case, "kept / flushed", off / on, "x", note="> 1: flushing helps"),
        ],
        columns=COLUMNS,
    )

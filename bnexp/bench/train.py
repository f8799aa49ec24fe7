"""The training-loop benchmark behind `bnexp bench train` and `make bench`.

Every section returns a long DataFrame, one row per measurement:
  section, case, measure, value, unit, goal, ok, note
`goal` is the issue's target as text (">= 0.95") and `ok` whether `value` meets it (None when
the row is a plain figure). Times are medians over `repeats`, the variants of one row
interleaved (their order rotated each repeat) so load from other processes hits all alike;
ratios are what to read, absolute figures move with the machine's load.

Sections:
  loops      samples/s of (a) bnexp's `train_run` (its optimizer-step time `train_s`; also its
             whole wall time, evaluation and files included), (b) a minimal hand-written loop,
             (c) that loop fed by DataLoader(TensorDataset); same model, data, steps
  denormal   step time of the quickstart's sigmoid MLP (no BN) with and without flushing denormals
  vectorize  8 seeds of the quickstart MLP one after another vs trained together (bnexp.run.vectorize)
  workers    a 12-run sweep with 1 worker vs 2, each in a fresh process, timed inside it
  memory     peak RSS of a 50,000-image CIFAR-shaped uint8 run, in a subprocess
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

from bnexp.config import DataConfig, RunConfig
from bnexp.data import Dataset, load_dataset
from bnexp.errors import DataError
from bnexp.nn.models import build_model, init_weights
from bnexp.run.train import batches_of_epoch, train_run

SECTIONS = ("loops", "denormal", "vectorize", "workers", "memory")
COLUMNS = ["section", "case", "measure", "value", "unit", "goal", "ok", "note"]
REPO = Path(__file__).resolve().parents[1]


def default_data_root() -> Path:
    return Path(os.environ.get("BNEXP_SHARED_DATA", REPO.parent / "shared" / "data"))


def _row(section, case, measure, value, unit="", goal=None, note="") -> dict:
    ok = None
    if goal is not None and isinstance(value, (int, float)):
        op, bound = goal.split()
        ok = value >= float(bound) if op == ">=" else value <= float(bound)
    return dict(
        section=section,
        case=case,
        measure=measure,
        value=value,
        unit=unit,
        goal=goal or "",
        ok=ok,
        note=note,
    )


# --------------------------------------------------------------------------- data


def _uint8_images(n: int, n_test: int, hw: int, classes: int, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n + n_test, 3, hw, hw), dtype=torch.uint8, generator=g)
    y = torch.randint(0, classes, (n + n_test,), generator=g)
    return x[:n], y[:n], x[n:], y[n:]


def cat_data(root: Path, n: int | None = None) -> tuple[Dataset, str]:
    """The course's cat/non-cat set (209 + 50 RGB 64x64, uint8, /255 per batch), else generated."""
    try:
        data, source = (
            load_dataset(DataConfig(dataset="catvnoncat", root=str(root / "catvnoncat"))),
            "catvnoncat files",
        )
    except DataError:  # no files here: random images of the same shape
        x_tr, y_tr, x_te, y_te = _uint8_images(209, 50, 64, 2)
        data, source = (
            Dataset("catvnoncat", x_tr, y_tr, x_te, y_te, ("non-cat", "cat"), binary=True),
            "generated (no files)",
        )
    if n is not None:
        data = _subset(data, n, max(2, n // 4))
    return data, source


def cifar_data(root: Path, n: int, n_test: int) -> tuple[Dataset, str]:
    """The first n / n_test images of the CIFAR-10 subset's files (npz loader: uint8 CHW,
    standardized per batch), else generated."""
    path = root / "cifar10-subset"
    try:
        data = load_dataset(
            DataConfig(dataset="npz", train=str(path / "train.npz"), test=str(path / "test.npz"))
        )
        return _subset(data, n, n_test), "cifar10-subset files"
    except DataError:  # no files here: random images of the same shape
        x_tr, y_tr, x_te, y_te = _uint8_images(n, n_test, 32, 10)
        mean = x_tr.float().mean((0, 2, 3)) / 255
        std = (x_tr.float() / 255).std((0, 2, 3))
        return Dataset(
            "cifar10", x_tr, y_tr, x_te, y_te, tuple(map(str, range(10))), mean=mean, std=std
        ), "generated (no files)"


def digits_data(tiny: bool) -> Dataset:
    """The embedded digits (the quickstart's data); tiny: 256 + 64 of them."""
    data = load_dataset(DataConfig())
    return _subset(data, 256, 64) if tiny else data


def _subset(data: Dataset, n: int, n_test: int) -> Dataset:
    from dataclasses import replace

    return replace(
        data,
        x_train=data.x_train[:n],
        y_train=data.y_train[:n],
        x_test=data.x_test[:n_test],
        y_test=data.y_test[:n_test],
    )


# --------------------------------------------------------------------------- the three loops


@dataclass
class Case:
    name: str
    cfg: RunConfig
    data: Dataset
    source: str


def _cfg(model: dict, train: dict) -> RunConfig:
    return RunConfig.model_validate({"model": model, "train": {"device": "cpu", **train}})


def quickstart_cfg(epochs: int, seed: int = 0) -> RunConfig:
    """configs/quickstart.yaml's network and optimizer, without BN (its first sweep value)."""
    return _cfg(
        {"arch": "mlp", "hidden": [100, 100, 100], "activation": "sigmoid", "norm": "none"},
        {
            "optimizer": "sgd",
            "lr": 0.2,
            "momentum": 0.9,
            "batch_size": 64,
            "epochs": epochs,
            "seed": seed,
        },
    )


def cases(tiny: bool, root: Path) -> list[Case]:
    """The three models of the issue; `tiny` shrinks data and epochs for the test suite."""
    cat, cat_src = cat_data(root, n=64 if tiny else None)
    digits = digits_data(tiny)
    cifar, cifar_src = cifar_data(root, 256 if tiny else 1280, 64 if tiny else 512)
    return [
        Case(
            "cat/non-cat MLP 12288-20-7-5-1 relu",
            _cfg(
                {"arch": "mlp", "hidden": [20, 7, 5], "activation": "relu", "norm": "none"},
                {"optimizer": "sgd", "lr": 0.0075, "batch_size": 64, "epochs": 2 if tiny else 40},
            ),
            cat,
            cat_src,
        ),
        Case(
            "digits MLP 3x100 sigmoid (quickstart)",
            quickstart_cfg(1 if tiny else 10),
            digits,
            "embedded digits",
        ),
        Case(
            "CIFAR CNN 32-64-128 relu, torch BN",
            _cfg(
                {
                    "arch": "cnn",
                    "channels": [8, 16] if tiny else [32, 64, 128],
                    "activation": "relu",
                    "norm": "torch",
                },
                {
                    "optimizer": "sgd",
                    "lr": 0.05,
                    "momentum": 0.9,
                    "batch_size": 128,
                    "epochs": 1 if tiny else 2,
                    "eval_batch_size": 1024,
                },
            ),
            cifar,
            cifar_src,
        ),
    ]


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


def hand_loop(case: Case) -> float:
    """The minimal hand-written loop: a permutation per epoch, index, step."""
    model, opt = _hand_model(case)
    x, y, bs = case.data.x_train, case.data.y_train, case.cfg.train.batch_size
    g = torch.Generator().manual_seed(case.cfg.train.seed)
    t0 = time.perf_counter()
    for _ in range(case.cfg.train.epochs):
        for idx in torch.randperm(len(x), generator=g).split(bs):
            if len(idx) > 1:
                _hand_step(model, opt, x[idx], y[idx], case.data)
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


def _interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list]:
    names, out = list(variants), {k: [] for k in variants}
    for r in range(repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            out[k].append(variants[k]())
    return out


def bench_loops(
    tiny: bool, root: Path, repeats: int, log: Callable[[str], None] = print
) -> pd.DataFrame:
    rows = []
    for case in cases(tiny, root):
        log(f"loops: {case.name} ({case.source})")
        tc = case.cfg.train
        samples = _n_samples(len(case.data.x_train), tc.batch_size, tc.epochs)
        with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
            hand_loop(case)  # warm-up (first-call costs: allocator, kernels, lazy imports)
            reps = (
                repeats if case.cfg.model.arch == "mlp" else min(repeats, 3)
            )  # CNN steps are slow on a CPU
            res = _interleaved(
                {
                    "a": lambda c=case: bnexp_loop(c, Path(tmp)),
                    "b": lambda c=case: hand_loop(c),
                    "c": lambda c=case: dataloader_loop(c),
                },
                reps,
            )
        a_steps = statistics.median(r["steps_s"] for r in res["a"])
        a_wall = statistics.median(r["wall_s"] for r in res["a"])
        eval_share = statistics.median(r["eval_s"] / r["wall_s"] for r in res["a"])
        b, c = statistics.median(res["b"]), statistics.median(res["c"])
        is_mlp = case.cfg.model.arch == "mlp"
        note = f"{samples} samples/run, {case.source}, median of {reps}"
        rows += [
            _row(
                "loops",
                case.name,
                "a: bnexp train_run (steps)",
                samples / a_steps,
                "samples/s",
                note=note,
            ),
            _row(
                "loops",
                case.name,
                "a: bnexp train_run (whole run)",
                samples / a_wall,
                "samples/s",
                note="evaluation and files included",
            ),
            _row("loops", case.name, "b: hand-written loop", samples / b, "samples/s"),
            _row("loops", case.name, "c: DataLoader loop", samples / c, "samples/s"),
            _row("loops", case.name, "a/b (steps)", b / a_steps, "x", ">= 0.95"),
            _row(
                "loops",
                case.name,
                "a/b (whole run)",
                b / a_wall,
                "x",
                note="a evaluates train+test sets every epoch, b never",
            ),
            _row("loops", case.name, "a/c (steps)", c / a_steps, "x", ">= 2" if is_mlp else None),
            _row("loops", case.name, "evaluation share of a run", eval_share, "", "<= 0.10"),
        ]
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

        res = _interleaved({"off": lambda: steps(False), "on": lambda: steps(True)}, repeats)
    torch.set_flush_denormal(was)
    off, on = statistics.median(res["off"]), statistics.median(res["on"])
    case = f"quickstart MLP, {cfg.train.epochs} epochs"
    return pd.DataFrame(
        [
            _row("denormal", case, "steps, denormals kept", off, "s"),
            _row("denormal", case, "steps, denormals flushed", on, "s"),
            _row("denormal", case, "kept / flushed", off / on, "x", note="> 1: flushing helps"),
        ],
        columns=COLUMNS,
    )


# --------------------------------------------------------------------------- vectorized seeds


def bench_vectorize(
    tiny: bool, repeats: int, seeds: int = 8, log: Callable[[str], None] = print
) -> pd.DataFrame:
    """Whole runs (evaluation and files included): S seeds one after another vs together,
    with 1 torch thread and with one per core (the goal's setting: 2 cores)."""
    from bnexp.run.vectorize import train_seeds

    epochs, seeds = (1, min(seeds, 4)) if tiny else (10, seeds)
    cfgs = [quickstart_cfg(epochs, seed=s) for s in range(seeds)]
    data = digits_data(tiny)
    rows, before = [], torch.get_num_threads()
    for threads in sorted({1, os.cpu_count() or 1}):
        log(
            f"vectorize: {seeds} seeds of the quickstart MLP, {epochs} epochs, {threads} torch thread(s)"
        )
        torch.set_num_threads(threads)
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
            res = _interleaved({"seq": one_by_one, "vec": together}, repeats)
        torch.set_num_threads(before)
        seq, vec = statistics.median(res["seq"]), statistics.median(res["vec"])
        case = f"{seeds} seeds, quickstart MLP, {epochs} epochs, {threads} thread(s)"
        rows += [
            _row("vectorize", case, "one after another", seq, "s"),
            _row("vectorize", case, "vectorized (train_seeds)", vec, "s"),
            _row(
                "vectorize",
                case,
                "throughput ratio",
                seq / vec,
                "x",
                ">= 3" if threads > 1 else None,
                note="goal: on 2 cores" if threads > 1 else "",
            ),
        ]
    return pd.DataFrame(rows, columns=COLUMNS)


# --------------------------------------------------------------------------- workers


def _python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


_SWEEP_SCRIPT = r"""
import sys, time
from pathlib import Path
from bnexp.config import load_experiment
from bnexp.sweep.runner import run_experiment
if __name__ == "__main__":
    exp, raw = load_experiment(sys.argv[1])
    t0 = time.perf_counter()
    result = run_experiment(exp, raw, Path(sys.argv[2]), workers=int(sys.argv[3]))
    assert len(result.summary) == len(result.plan), "not every run finished"
    print(time.perf_counter() - t0)
"""


def bench_workers(tiny: bool, repeats: int, log: Callable[[str], None] = print) -> pd.DataFrame:
    """A 12-run quickstart sweep (3 norms x 4 seeds) with --workers 1 and 2, fresh folders."""
    case = "12-run quickstart sweep, --workers 2 vs 1"
    exp = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    exp["train"]["epochs"] = (
        2 if tiny else 40
    )  # the quickstart's own length: runs of ~1 s, not worker start-up
    exp["train"]["device"] = "cpu"
    exp["sweep"] = {"model.norm": ["none", "custom", "torch"], "train.seed": [0, 1, 2, 3]}
    log(f"workers: {case}, {exp['train']['epochs']} epochs")
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-") as tmp:
        path = Path(tmp) / "sweep.yaml"
        path.write_text(yaml.safe_dump(exp))
        counter = iter(range(10**6))

        def sweep(workers: int) -> float:
            # a fresh process per sweep, timed from inside: the sweep itself (worker start-up
            # included), not the interpreter's start and imports, which every command pays once
            out = Path(tmp) / f"out{next(counter)}"
            proc = subprocess.run(
                [sys.executable, "-c", _SWEEP_SCRIPT, str(path), str(out), str(workers)],
                capture_output=True,
                text=True,
                env=_python_env(),
                cwd=REPO,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"sweep with {workers} worker(s) failed: {proc.stderr[-500:]}")
            return float(proc.stdout.strip().splitlines()[-1])

        res = _interleaved({"1": lambda: sweep(1), "2": lambda: sweep(2)}, repeats)
    one, two = statistics.median(res["1"]), statistics.median(res["2"])
    return pd.DataFrame(
        [
            _row(
                "workers", case, "--workers 1", one, "s", note="the sweep, timed inside its process"
            ),
            _row("workers", case, "--workers 2", two, "s"),
            _row("workers", case, "speed-up", one / two, "x", ">= 1.7"),
        ],
        columns=COLUMNS,
    )


# --------------------------------------------------------------------------- memory

_MEMORY_SCRIPT = r"""
import json, sys, torch
from pathlib import Path
from bnexp.config import RunConfig
from bnexp.data import Dataset
from bnexp.run.device import peak_memory_mb
from bnexp.run.train import train_run
n, n_test, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
torch.optim.SGD([torch.zeros(1, requires_grad=True)])  # the optimizer's lazy imports, before the baseline
base = peak_memory_mb(torch.device("cpu"))
g = torch.Generator().manual_seed(0)
x = torch.randint(0, 256, (n + n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
y = torch.randint(0, 10, (n + n_test,), generator=g)
data = Dataset("cifar10-50k", x[:n], y[:n], x[n:], y[n:], tuple(map(str, range(10))),
               mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25))
cfg = RunConfig.model_validate({"model": {"arch": "cnn", "channels": [8], "norm": "torch"},
    "train": {"batch_size": 256, "epochs": 1, "device": "cpu", "eval_batch_size": 256}})
s = train_run(cfg, out, data=data)
print(json.dumps({"baseline_mb": base, "peak_rss_mb": s.peak_rss_mb, "data_mb": data.nbytes() / 2**20,
                  "dtype": str(data.x_train.dtype), "steps": s.steps}))
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
            env=_python_env(),
            cwd=REPO,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"memory run failed: {proc.stderr[-500:]}")
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    return pd.DataFrame(
        [
            _row("memory", case, "images in memory", m["data_mb"], "MiB", note=m["dtype"]),
            _row(
                "memory",
                case,
                "RSS after imports",
                m["baseline_mb"],
                "MiB",
                note="torch alone is ~500 MiB",
            ),
            _row(
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
) -> pd.DataFrame:
    """Every section asked for, as one long table (see the module docstring).

    `threads`: torch's intra-op threads for the in-process sections (None: torch's default).
    """
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(
            f"unknown benchmark section(s) {sorted(unknown)}; expected some of {SECTIONS}"
        )
    root = Path(data_root) if data_root else default_data_root()
    reps = repeats or (1 if tiny else 5)
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _sections(tiny, reps, sections, root, log)
    finally:
        torch.set_num_threads(threads_before)


def _sections(
    tiny: bool, reps: int, sections: tuple[str, ...], root: Path, log: Callable[[str], None]
) -> pd.DataFrame:
    parts = []
    if "loops" in sections:
        parts.append(bench_loops(tiny, root, reps, log))
    if "denormal" in sections:
        parts.append(bench_denormal(tiny, reps, log))
    if "vectorize" in sections:
        parts.append(bench_vectorize(tiny, reps, log=log))
    if "workers" in sections:
        parts.append(bench_workers(tiny, 1 if tiny else min(reps, 2), log))
    if "memory" in sections:
        parts.append(bench_memory(tiny, log))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def rich_table(df: pd.DataFrame, title: str = "bnexp bench train"):
    """The long table for the terminal: figures to 3 significant digits, goals marked."""
    from rich.table import Table

    table = Table(title=title)
    for col in ["section", "case", "measure", "value", "unit", "goal", "met", "note"]:
        table.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    for r in df.itertuples(index=False):
        value = (
            f"{r.value:,.3g}"
            if isinstance(r.value, (int, float)) and r.value >= 1000
            else (f"{r.value:.3g}" if isinstance(r.value, (int, float)) else str(r.value))
        )
        if isinstance(r.value, float) and r.value >= 1000:
            value = f"{r.value:,.0f}"
        met = (
            ""
            if r.ok is None or (isinstance(r.ok, float) and np.isnan(r.ok))
            else ("[green]yes[/]" if r.ok else "[red]no[/]")
        )
        table.add_row(r.section, r.case, r.measure, value, r.unit, r.goal, met, r.note)
    return table

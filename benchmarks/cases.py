"""The benchmarks' data and models: the issue's three cases (the course's cat/non-cat MLP, the
quickstart's digits MLP, a CIFAR CNN) on the real files when `root` has them, else on generated
images of the same shape. Nothing here reads a source checkout: the caller names the data root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bnexp.config import DataConfig, RunConfig
from bnexp.data import Dataset, load_dataset
from bnexp.errors import DataError


def default_data_root() -> Path | None:
    """$BNEXP_SHARED_DATA, if set (the real cat/non-cat and CIFAR-10 subset files), else None:
    generated images of the same shapes."""
    root = os.environ.get("BNEXP_SHARED_DATA")
    return Path(root) if root else None


def _uint8_images(n: int, n_test: int, hw: int, classes: int, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n + n_test, 3, hw, hw), dtype=torch.uint8, generator=g)
    y = torch.randint(0, classes, (n + n_test,), generator=g)
    return x[:n], y[:n], x[n:], y[n:]


def cat_data(root: Path | None, n: int | None = None) -> tuple[Dataset, str]:
    """The course's cat/non-cat set (209 + 50 RGB 64x64, uint8, /255 per batch), else generated."""
    try:
        if root is None:
            raise DataError("no data root")
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


def cifar_data(root: Path | None, n: int, n_test: int) -> tuple[Dataset, str]:
    """The first n / n_test images of the CIFAR-10 subset's files (npz loader: uint8 CHW,
    standardized per batch), else generated."""
    try:
        if root is None:
            raise DataError("no data root")
        path = root / "cifar10-subset"
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
    return replace(
        data,
        x_train=data.x_train[:n],
        y_train=data.y_train[:n],
        x_test=data.x_test[:n_test],
        y_test=data.y_test[:n_test],
    )


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


CAT_CASE = "cat/non-cat MLP 12288-20-7-5-1 relu"
DIGITS_CASE = "digits MLP 3x100 sigmoid (quickstart)"
CIFAR_CASE = "CIFAR CNN 32-64-128 relu, torch BN"


def cases(tiny: bool, root: Path | None) -> list[Case]:
    """The three models of the issue; `tiny` shrinks data and epochs for the test suite."""
    cat, cat_src = cat_data(root, n=64 if tiny else None)
    digits = digits_data(tiny)
    cifar, cifar_src = cifar_data(root, 256 if tiny else 1280, 64 if tiny else 512)
    return [
        Case(
            CAT_CASE,
            _cfg(
                {"arch": "mlp", "hidden": [20, 7, 5], "activation": "relu", "norm": "none"},
                {"optimizer": "sgd", "lr": 0.0075, "batch_size": 64, "epochs": 2 if tiny else 40},
            ),
            cat,
            cat_src,
        ),
        Case(
            DIGITS_CASE,
            quickstart_cfg(1 if tiny else 10),
            digits,
            "embedded digits",
        ),
        Case(
            CIFAR_CASE,
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

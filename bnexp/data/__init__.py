"""Datasets as in-memory tensors: one module per dataset, one `Dataset` shape for all.

digits (embedded), catvnoncat (the course's HDF5 files), cifar10, cifar100, mnist (and
fashion_mnist) and svhn (torchvision's files, read here), imagefolder (a folder per class) and
npz (users' own arrays); `subsets` draws classes / binary / n-per-class subsets of all but the
first two. No file read as data runs code (`pickles`; docs/datasets.md).
With data.val_fraction, `validation` carves a stratified validation split from any of them.
`load_dataset(cfg, device)` is cached per process by the data config, so a sweep reads its
files once and keeps them as tensors on the run's device.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from bnexp.config import DataConfig

log = logging.getLogger("bnexp")


# Datasets whose prepared float32 copy (train + test) fits in this many bytes are prepared once
# per run (Dataset.ready): the course's cat/non-cat files (12 MiB), where preparing each batch was
# 20% of a run's time (measured, 1 thread, MLP with BN, batch 64). Larger sets stay uint8 and
# are converted per batch, as before: the studies' CIFAR-10 subsets (86 MiB and up; converting a
# batch of 128 takes 0.6 ms, ~2% of the CNN step) and full CIFAR-10 (703 MiB), for memory.
PREPARED_MAX_BYTES = 32 * 2**20


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: Tensor  # (N, C, H, W) or (N, D); float32, or uint8 pixels converted per batch
    y_train: Tensor  # (N,) int64 class index (0/1 for binary)
    x_test: Tensor
    y_test: Tensor
    classes: tuple[str, ...]
    binary: bool = False  # one logit + BCE-with-logits (the course's setting) instead of softmax
    mean: Tensor | None = None  # per-channel, applied per batch to uint8 pixels scaled to [0, 1]
    std: Tensor | None = None
    # data.val_fraction's split, carved from the training set (bnexp.data.validation); None: none
    x_val: Tensor | None = None
    y_val: Tensor | None = None
    # how float inputs are standardized: per "channel" (images; features of (N, D) vectors),
    # or per "pixel" (digits: each input value its own mean and std)
    standardize_per: str = "channel"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_outputs(self) -> int:
        return 1 if self.binary else len(self.classes)

    def prepare(self, x: Tensor) -> Tensor:
        """A batch as the float32 the network takes (uint8 pixels: /255, then standardized)."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
            if self.mean is not None:
                shape = [1, -1] + [1] * (x.dim() - 2)
                x = (x - self.mean.view(shape)) / self.std.view(shape)
        return x

    def ready(self, max_bytes: int = PREPARED_MAX_BYTES) -> Dataset:
        """This dataset with its uint8 images already prepared (float32, standardized), when that
        copy takes at most `max_bytes`: a batch is then a slice, not a conversion. The numbers
        are the same (prepare is elementwise: the whole set at once or batch by batch gives the
        same floats). Larger sets stay uint8 and are converted per batch, for memory."""
        if self.x_train.dtype != torch.uint8:
            return self
        if 4 * sum(x.numel() for x in self._inputs()) > max_bytes:
            return self
        return replace(
            self,
            x_train=self.prepare(self.x_train),
            x_test=self.prepare(self.x_test),
            x_val=None if self.x_val is None else self.prepare(self.x_val),
            mean=None,
            std=None,
        )

    def to(self, device: torch.device | str) -> Dataset:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            x_train=move(self.x_train),
            y_train=move(self.y_train),
            x_test=move(self.x_test),
            y_test=move(self.y_test),
            x_val=move(self.x_val),
            y_val=move(self.y_val),
            mean=move(self.mean),
            std=move(self.std),
        )

    def class_counts(self) -> tuple[list[int], list[int]]:
        """Images per class (label order of `classes`) in the training and test sets."""
        k = len(self.classes)
        return (
            torch.bincount(self.y_train.cpu(), minlength=k).tolist(),
            torch.bincount(self.y_test.cpu(), minlength=k).tolist(),
        )

    def _inputs(self) -> list[Tensor]:
        return [x for x in (self.x_train, self.x_test, self.x_val) if x is not None]

    def nbytes(self) -> int:
        tensors = (self.x_train, self.y_train, self.x_test, self.y_test, self.x_val, self.y_val)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def describe(self) -> str:
        return (
            f"{self.name}: train {tuple(self.x_train.shape)} {self.x_train.dtype}, "
            f"test {tuple(self.x_test.shape)}, "
            f"{'' if self.x_val is None else f'val {tuple(self.x_val.shape)}, '}"
            f"{len(self.classes)} classes"
            f"{' (binary, one logit)' if self.binary else ''}, {self.nbytes() / 2**20:.1f} MiB"
        )


def load_dataset(cfg: DataConfig, device: torch.device | str | None = None) -> Dataset:
    """The dataset `cfg` names, on `device` (default: the CPU).

    Cached per process by the data config's JSON (and the device), so a sweep reads its files
    once and uploads them to a GPU once. Raises `DataError` for files a user must fix.
    """
    key = cfg.model_dump_json()
    if device is None or torch.device(device).type == "cpu":
        return _load_cached(key)
    return _on_device(key, str(torch.device(device)))


def clear_cache() -> None:
    """Forget every loaded dataset (tests; a process that changes files under a running sweep)."""
    _on_device.cache_clear()
    _load_cached.cache_clear()


@functools.lru_cache(maxsize=4)
def _load_cached(cfg_json: str) -> Dataset:
    cfg = DataConfig.model_validate_json(cfg_json)
    t0 = time.perf_counter()
    if cfg.dataset == "digits":
        from bnexp.data.digits import load_digits as load
    elif cfg.dataset == "catvnoncat":
        from bnexp.data.catvnoncat import load_catvnoncat as load
    elif cfg.dataset == "cifar10":
        from bnexp.data.cifar10 import load_cifar10 as load
    elif cfg.dataset == "cifar100":
        from bnexp.data.cifar100 import load_cifar100 as load
    elif cfg.dataset in ("mnist", "fashion_mnist"):
        from bnexp.data.mnist import load_mnist as load
    elif cfg.dataset == "svhn":
        from bnexp.data.svhn import load_svhn as load
    elif cfg.dataset == "imagefolder":
        from bnexp.data.imagefolder import load_imagefolder as load
    else:
        from bnexp.data.npz import load_npz as load
    if cfg.val_fraction is None:
        data = load(cfg)
    else:  # standardized after the split, with the statistics of the training part left
        from bnexp.data.validation import carve_validation

        raw = load(cfg.model_copy(update={"standardize": False}))
        data = carve_validation(raw, cfg.val_fraction, cfg.seed, cfg.standardize)
    log.info("loaded %s in %.2f s", data.describe(), time.perf_counter() - t0)
    return data


@functools.lru_cache(maxsize=2)
def _on_device(cfg_json: str, device: str) -> Dataset:
    data = _load_cached(cfg_json).to(device)
    log.info("copied %s to %s (%.1f MiB)", data.name, device, data.nbytes() / 2**20)
    return data

"""Datasets as in-memory tensors: one module per dataset, one `Dataset` shape for all.

`load_dataset(cfg)` is cached per process by the data config, so a sweep reads its files once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from bnexp.config import DataConfig


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

    def to(self, device: torch.device | str) -> Dataset:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            x_train=move(self.x_train), y_train=move(self.y_train),
            x_test=move(self.x_test), y_test=move(self.y_test),
            mean=move(self.mean), std=move(self.std),
        )

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.x_train, self.y_train, self.x_test, self.y_test))

    def describe(self) -> str:
        return (
            f"{self.name}: train {tuple(self.x_train.shape)} {self.x_train.dtype}, "
            f"test {tuple(self.x_test.shape)}, {len(self.classes)} classes"
            f"{' (binary, one logit)' if self.binary else ''}, {self.nbytes() / 2**20:.1f} MiB"
        )


def load_dataset(cfg: DataConfig) -> Dataset:
    """The dataset `cfg` names, on the CPU; cached per process by the data config's JSON."""
    return _load_cached(cfg.model_dump_json())


@functools.lru_cache(maxsize=4)
def _load_cached(cfg_json: str) -> Dataset:
    cfg = DataConfig.model_validate_json(cfg_json)
    if cfg.dataset == "digits":
        from bnexp.data.digits import load_digits

        return load_digits(cfg)
    raise NotImplementedError(f"dataset {cfg.dataset!r} is not available yet")

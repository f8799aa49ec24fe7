"""data.augment: random crop after zero padding, and horizontal flip, of each training batch.

The batch is cropped and flipped on its device in one gather (no per-image Python): image n of
(N, C, H, W) is padded with `crop_padding` zeros on each side and cut at rows dy[n] .. dy[n]+H-1
and columns dx[n] .. dx[n]+W-1 (dy, dx uniform in 0 .. 2 x padding), then mirrored left-right
with probability 1/2. The pad is added after standardization, so it is the mean pixel (for the
standardized datasets), whatever the dataset's storage (uint8 or prepared floats).

The offsets and flips are drawn on the CPU from the run's data-order generator, after that
epoch's permutation: a run stays a pure function of its config (the same metrics.csv bytes on a
rerun), a checkpoint (which saves that generator) resumes the same draws, and seeds trained
together draw each from its own generator, as their separate runs do. Evaluation never augments.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from bnexp.config import AugmentConfig
from bnexp.data import Dataset
from bnexp.errors import DataError


def check_images(cfg: AugmentConfig | None, data: Dataset) -> None:
    """DataError (one line) when data.augment is set for data that are not images."""
    if cfg is not None and data.x_train.dim() != 4:
        raise DataError(
            f"data.augment: {data.name}'s training inputs are {tuple(data.x_train.shape)}, not "
            "images (N, C, H, W); crop and flip apply to images only (expected data.augment: "
            "null)"
        )


def draw(cfg: AugmentConfig, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """The crop offsets dy, dx (n,) and flips (n,) bool of n images, from `gen` (CPU)."""
    p = cfg.crop_padding
    dy, dx = torch.randint(0, 2 * p + 1, (2, n), generator=gen) if p else torch.zeros(2, n).long()
    flip = torch.rand(n, generator=gen) < 0.5 if cfg.hflip else torch.zeros(n, dtype=torch.bool)
    return dy, dx, flip


def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, padding: int) -> Tensor:
    """x (N, C, H, W) -> (N, C, H, W): image n zero-padded by `padding`, cut at (dy[n], dx[n])
    in the padded image, mirrored left-right where flip[n]."""
    n, _, h, w = x.shape
    dev = x.device
    dy, dx, flip = dy.to(dev), dx.to(dev), flip.to(dev)
    padded = F.pad(x, (padding,) * 4) if padding else x
    rows = dy[:, None] + torch.arange(h, device=dev)  # (N, H) rows of the padded images
    cols = dx[:, None] + torch.arange(w, device=dev)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    images = torch.arange(n, device=dev)[:, None, None]
    # advanced indices around a slice: the indexed dims come first, (N, H, W, C)
    return padded[images, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def augment(cfg: AugmentConfig | None, x: Tensor, gens: list[torch.Generator]) -> Tensor:
    """x (G x B, C, H, W) augmented, its g-th B images with draws from gens[g] (one run: one
    generator; seeds trained together: one each); x itself when data.augment is null."""
    if cfg is None:
        return x
    draws = [draw(cfg, len(x) // len(gens), g) for g in gens]
    dy, dx, flip = (torch.cat(d) for d in zip(*draws, strict=True))
    return crop_flip(x, dy, dx, flip, cfg.crop_padding)

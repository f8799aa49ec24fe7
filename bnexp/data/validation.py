"""data.val_fraction: a validation split carved from any dataset's training set.

Stratified (the same share of every class: 10% of a 500-per-class CIFAR-10 subset holds 50 of
each) and drawn by data.seed alone, so every run of a sweep, whatever its train.seed, trains on
the same examples and is judged on the same held-out ones. It is applied by `load_dataset` to
what a dataset module returns, unstandardized, so every dataset has it; the standardization
statistics then come from the training part left, as `arrays.build` takes them from a training
set (a validation example is as unseen as a test example).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from bnexp.data import Dataset
from bnexp.data.arrays import moments
from bnexp.errors import DataError


def stratified_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train_idx, val_idx), each in ascending order, of labels y (N,): from each class of n
    examples, round(fraction * n) of them (at most n - 1: every class keeps a training example)
    go to validation, drawn by a generator seeded with `seed` (classes in label order)."""
    g = torch.Generator().manual_seed(seed)
    y = y.cpu()
    val = [torch.zeros(0, dtype=torch.int64)]
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        k = min(math.floor(fraction * len(idx) + 0.5), len(idx) - 1)
        val.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    val_idx = torch.cat(val).sort().values
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[val_idx] = False
    return torch.nonzero(keep).flatten(), val_idx


def carve_validation(data: Dataset, fraction: float, seed: int, standardize: bool) -> Dataset:
    """`data` (unstandardized, no split yet) with `fraction` of its training set moved to a
    validation split (stratified_split), then standardized with the statistics of the training
    part left when `standardize`. Raises DataError when no example would be held out."""
    train_idx, val_idx = stratified_split(data.y_train, fraction, seed)
    if len(val_idx) == 0:
        raise DataError(
            f"data.val_fraction: {fraction} of {len(data.y_train)} training examples "
            f"({data.name}) holds out no example of any class; expected a larger fraction"
        )
    split = replace(
        data,
        x_train=data.x_train[train_idx],
        y_train=data.y_train[train_idx],
        x_val=data.x_train[val_idx],
        y_val=data.y_train[val_idx],
    )
    return standardized(split) if standardize else split


def standardized(data: Dataset) -> Dataset:
    """`data` standardized with its training set's statistics, the rules of `arrays.build`:
    uint8 pixels keep their dtype and get a per-channel mean and std (of pixels / 255, applied
    per batch by Dataset.prepare); float inputs are standardized here, per channel (or feature)
    or, with data.standardize_per "pixel", per input value. A constant one keeps scale 1."""
    x = data.x_train
    if x.dtype == torch.uint8 or data.standardize_per == "channel":
        m, s = (torch.from_numpy(v) for v in moments(x.numpy()))
    else:  # per pixel: over the examples only
        m, s = x.double().mean(0), x.double().std(0, correction=0)
    s[s == 0] = 1.0
    if x.dtype == torch.uint8:  # applied per batch by Dataset.prepare, after /255
        return replace(data, mean=(m / 255).float(), std=(s / 255).float())
    shape = (1, *m.shape) if data.standardize_per == "pixel" else (1, -1) + (1,) * (x.dim() - 2)
    m, s = m.float().reshape(shape), s.float().reshape(shape)
    scale = lambda t: None if t is None else (t - m) / s  # noqa: E731
    return replace(data, x_train=scale(x), x_test=scale(data.x_test), x_val=scale(data.x_val))

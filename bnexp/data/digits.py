"""The embedded default: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
download)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as _sk_load_digits
from sklearn.model_selection import train_test_split

from bnexp.config import DataConfig
from bnexp.data import Dataset


def load_digits(cfg: DataConfig) -> Dataset:
    bunch = _sk_load_digits()
    x = bunch.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=cfg.test_fraction, stratify=y, random_state=cfg.seed
    )
    if cfg.standardize:  # per pixel, training statistics only; constant pixels keep scale 1
        mean = x_tr.mean(axis=0, keepdims=True)
        std = x_tr.std(axis=0, keepdims=True)
        std[std == 0] = 1.0
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    else:
        x_tr, x_te = x_tr / 16.0, x_te / 16.0
    return Dataset(
        name="digits",
        x_train=torch.from_numpy(np.ascontiguousarray(x_tr)),
        y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy(np.ascontiguousarray(x_te)),
        y_test=torch.from_numpy(y_te),
        classes=tuple(str(c) for c in range(10)),
    )

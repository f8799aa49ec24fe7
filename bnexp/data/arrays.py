"""NumPy arrays from any loader -> one `Dataset`: layout, dtype and training statistics.

Images are stored (N, C, H, W); vectors (N, D). uint8 pixels stay uint8 in memory (a quarter of
float32) and `Dataset.prepare` scales and standardizes each batch; other inputs become float32
and are standardized here, once.
"""

from __future__ import annotations

import numpy as np
import torch

from bnexp.data import Dataset
from bnexp.errors import DataError


def to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W, C) -> (N, C, H, W); (N, H, W) -> (N, 1, H, W); (N, D) unchanged."""
    if x.ndim == 2:
        return x
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[-1] not in (1, 3, 4) and x.shape[1] in (1, 3, 4):
            raise DataError(
                f"{where}: x has shape {x.shape}, which looks like channels first (N, C, H, W); "
                f"expected channels last (N, H, W, C)"
            )
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise DataError(f"{where}: x has shape {x.shape}; expected (N, H, W, C), (N, H, W) or (N, D)")


def moments(x: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased) std per channel of (N, C, H, W), or per feature of (N, D), in float64.

    Summed in chunks of rows, so a large uint8 array is never copied whole into float64.
    """
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    s1 = s2 = 0.0
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk].astype(np.float64)
        s1 = s1 + part.sum(axis=axes)
        s2 = s2 + np.square(part).sum(axis=axes)
    n = x.size // x.shape[1]  # values per channel (or feature)
    mean = s1 / n
    return mean, np.sqrt(np.maximum(s2 / n - mean**2, 0.0))


def check_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Labels as (N,) int64 class indices >= 0; integral floats are accepted."""
    y = np.asarray(y)
    if y.size != n or (y.ndim > 1 and max(y.shape) != y.size):
        raise DataError(f"{where}: {n} images but labels of shape {y.shape}; expected ({n},)")
    y = y.reshape(-1)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{where}: labels are not whole numbers; expected class indices 0..K-1")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{where}: labels have dtype {y.dtype}; expected integer class indices")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise DataError(f"{where}: negative label {int(y.min())}; expected class indices 0..K-1")
    return y


def build(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: tuple[str, ...],
    binary: bool,
    standardize: bool,
) -> Dataset:
    """x: (N, C, H, W) or (N, D), uint8 or any real dtype; y: (N,) int64. Statistics: train only."""
    for split, x in (("training", x_train), ("test", x_test)):
        if len(x) == 0:
            raise DataError(f"{name}: the {split} set is empty (no images left to use)")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{name}: training examples have shape {x_train.shape[1:]} but test examples "
            f"{x_test.shape[1:]}; expected the same shape"
        )
    mean = std = None
    if standardize:
        m, s = moments(x_train)
        s[s == 0] = 1.0  # a constant channel keeps its scale
        if x_train.dtype == np.uint8:  # applied per batch by Dataset.prepare, after /255
            mean, std = torch.from_numpy(m / 255).float(), torch.from_numpy(s / 255).float()
        else:
            shape = (1, -1, 1, 1) if x_train.ndim == 4 else (1, -1)
            m, s = m.reshape(shape).astype(np.float32), s.reshape(shape).astype(np.float32)
            x_train, x_test = (x_train - m) / s, (x_test - m) / s
    if x_train.dtype != np.uint8:
        x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    return Dataset(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test, dtype=np.int64)),
        classes=tuple(classes),
        binary=binary,
        mean=mean,
        std=std,
    )

"""SVHN (cropped digits) from torchvision's files `root/train_32x32.mat` and `root/test_32x32.mat`.

Each is a MATLAB v5 file (read by scipy.io.loadmat, as torchvision reads it; no code runs)
holding `X`, (32, 32, 3, N) uint8 images (height, width, channel, image), and `y`, (N, 1)
labels 1..10, where 10 is the digit 0. Loaded as (N, 3, 32, 32) uint8 with labels 0..9 (10 ->
0, as torchvision does), class names "0".."9". The `extra_32x32.mat` split is not read.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import scipy.io
from torchvision.datasets import SVHN
from torchvision.datasets import utils as tv_utils

from bnexp.config import DataConfig
from bnexp.data import Dataset
from bnexp.data.arrays import check_labels
from bnexp.data.fetch import fetch
from bnexp.data.subsets import subset_dataset
from bnexp.errors import DataError

SPLITS = {"training": SVHN.split_list["train"], "test": SVHN.split_list["test"]}  # url, file, md5
NAMES = [str(d) for d in range(10)]


def load_svhn(cfg: DataConfig) -> Dataset:
    root = Path(cfg.root)
    if missing_files(root) and cfg.download:
        for url, name, md5 in SPLITS.values():
            if not (root / name).is_file():
                get = functools.partial(tv_utils.download_url, url, str(root), name, md5)
                fetch("SVHN", url, root, get)
    missing = missing_files(root)
    if missing:
        raise DataError(
            f"data.root: {root} lacks {', '.join(missing)} (dataset svhn expects "
            f"{' and '.join(name for _, name, _ in SPLITS.values())} there; set data.download: "
            f"true on a machine that is online, or download them from "
            f"{SPLITS['training'][0].rsplit('/', 1)[0]}/)"
        )
    (x_tr, y_tr), (x_te, y_te) = (read_mat(root / name) for _, name, _ in SPLITS.values())
    return subset_dataset("svhn", (x_tr, y_tr), (x_te, y_te), NAMES, cfg, source=str(root))


def missing_files(root: Path) -> list[str]:
    return [name for _, name, _ in SPLITS.values() if not (root / name).is_file()]


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """x (N, 3, 32, 32) uint8, y (N,) int64 0..9 of one split; do not modify them."""
    return _read_cached(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_cached(file: str, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    path = Path(file)
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except NotImplementedError as e:  # scipy's word for a v7.3 (HDF5) file
        raise DataError(f"{path}: {e}; expected a MATLAB v5 file as SVHN's are") from None
    except Exception as e:  # MatReadError, ValueError, OSError, ...: not a MAT file, or damaged
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"{path}: cannot read it as a MATLAB file, it is truncated or corrupt ({reason})"
        ) from None
    missing = [k for k in ("X", "y") if k not in mat]
    if missing:
        raise DataError(
            f"{path}: no variable {', '.join(missing)}; expected X (32, 32, 3, N) uint8 and "
            "y (N, 1)"
        )
    x = mat["X"]
    if x.ndim != 4 or x.shape[2] != 3 or x.dtype != np.uint8:
        raise DataError(
            f"{path}: X is {x.dtype} of shape {x.shape}; expected uint8 (H, W, 3, N), one RGB "
            "image per index of the last axis"
        )
    y = check_labels(mat["y"], x.shape[3], f"{path}: y")
    if len(y) and (y.min() < 1 or y.max() > 10):
        bad = int(y.min()) if y.min() < 1 else int(y.max())
        raise DataError(f"{path}: label {bad} found; expected 1..10 (10: the digit 0)")
    y[y == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y

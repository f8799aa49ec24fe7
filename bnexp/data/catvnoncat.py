"""The course's cat vs non-cat images: `train_catvnoncat.h5` (209) and `test_catvnoncat.h5` (50).

Each file holds `{split}_set_x` (N, 64, 64, 3) uint8 RGB, `{split}_set_y` (N,) int64 with
1 = cat, and `list_classes` [b'non-cat', b'cat']. The task is binary, as in the course: one
logit, BCE-with-logits, accuracy at threshold 0. Pixels are scaled to [0, 1] per batch and,
with `data.standardize`, standardized per channel with training statistics.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from bnexp.config import DataConfig
from bnexp.data import Dataset
from bnexp.data.arrays import build, check_labels, to_nchw
from bnexp.errors import DataError

FILES = {"train": "train_catvnoncat.h5", "test": "test_catvnoncat.h5"}
EXPECTED = (
    f"dataset catvnoncat expects {FILES['train']} and {FILES['test']} in data.root; "
    f"point to their folder with --set data.root=PATH"
)


def load_catvnoncat(cfg: DataConfig) -> Dataset:
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"data.root: folder {root} not found ({EXPECTED})")
    x_tr, y_tr, classes = read_split(root / FILES["train"], "train")
    x_te, y_te, _ = read_split(root / FILES["test"], "test")
    x_tr, x_te = to_nchw(x_tr, FILES["train"]), to_nchw(x_te, FILES["test"])  # (N, 3, 64, 64) uint8
    return build(
        "catvnoncat", x_tr, y_tr, x_te, y_te, classes, binary=True, standardize=cfg.standardize
    )


def read_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """(x (N, H, W, 3) uint8, y (N,) int64 in {0, 1}, class names) of one course file."""
    if not path.is_file():
        raise DataError(f"data.root: {path} not found ({EXPECTED})")
    x_key, y_key = f"{split}_set_x", f"{split}_set_y"
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in (x_key, y_key) if k not in f]
            if missing:
                raise DataError(
                    f"{path}: missing key {', '.join(missing)} (found: "
                    f"{', '.join(f.keys()) or 'none'}; "
                    f"expected {x_key}, {y_key}, list_classes)"
                )
            x, y = f[x_key][()], f[y_key][()]
            names = f["list_classes"][()] if "list_classes" in f else None
    except DataError:
        raise
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        RuntimeError,
    ) as e:  # h5py reports damage as these
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"{path}: cannot read it as HDF5, the file is truncated or corrupt ({reason})"
        ) from None
    if x.ndim != 4 or x.shape[-1] != 3:
        raise DataError(
            f"{path}: {x_key} has shape {x.shape}; expected (N, height, width, 3) RGB images"
        )
    if x.dtype != np.uint8:
        raise DataError(f"{path}: {x_key} has dtype {x.dtype}; expected uint8 pixels 0..255")
    y = check_labels(y, len(x), f"{path}: {y_key}")
    if len(y) and y.max() > 1:
        raise DataError(
            f"{path}: {y_key} holds label {int(y.max())}; expected 0 (non-cat) or 1 (cat)"
        )
    classes = ("non-cat", "cat")
    if names is not None:
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in np.ravel(names))
        if len(classes) != 2:
            raise DataError(
                f"{path}: list_classes has {len(classes)} names {classes}; expected 2 (non-cat, "
                "cat)"
            )
    return x, y, classes

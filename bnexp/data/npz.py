"""Users' own data: `data.train` and `data.test` are .npz files holding

- `x`: (N, H, W, C) images, channels last, or (N, H, W) grey images, or (N, D) vectors;
  uint8 (pixels 0..255, kept as uint8 and scaled per batch) or any real dtype (used as is);
- `y`: (N,) integer class indices 0..K-1;
- optionally `classes`: (K,) names of the labels (else `data.class_names`, else "0".."K-1").

The subset keys (`classes`, `binary`, `*_per_class`) apply, as for CIFAR-10. Written by e.g.
`np.savez_compressed(path, x=x, y=y)`; the shared CIFAR-10 subset is in this layout.
"""

from __future__ import annotations

import functools
import zipfile
import zlib
from pathlib import Path

import numpy as np

from bnexp.config import DataConfig
from bnexp.data import Dataset
from bnexp.data.arrays import check_labels, to_nchw
from bnexp.data.subsets import subset_dataset
from bnexp.errors import DataError

MAX_CLASSES = 1000  # classes an npz may have without names (labels 0..999)
LAYOUT = "an .npz file holding x (N, H, W, C) or (N, D) and y (N,)"


def load_npz(cfg: DataConfig) -> Dataset:
    x_tr, y_tr, names_tr = read_npz(Path(cfg.train), "data.train")
    x_te, y_te, _ = read_npz(Path(cfg.test), "data.test")
    x_tr, x_te = to_nchw(x_tr, cfg.train), to_nchw(x_te, cfg.test)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(
            f"data.test: {cfg.test} holds examples of shape {x_te.shape[1:]} (as stored: N, C, H, "
            "W or N, D) "
            f"but {cfg.train} holds {x_tr.shape[1:]}; expected the same shape"
        )
    num_labels = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    if cfg.class_names is not None:
        names, where = list(cfg.class_names), "data.class_names"
    elif names_tr is not None:
        names, where = names_tr, f"the classes array of {cfg.train}"
    else:
        names, where = None, ""
        _check_unnamed_labels(y_tr, y_te, cfg)
        names = [str(i) for i in range(num_labels)]
    if len(names) < num_labels:
        raise DataError(
            f"{where} names {len(names)} classes, but the labels go up to {num_labels - 1}; "
            "expected a name per label"
        )
    return subset_dataset(
        "npz", (x_tr, y_tr), (x_te, y_te), names, cfg, source=f"{cfg.train} / {cfg.test}"
    )


def _check_unnamed_labels(y_tr: np.ndarray, y_te: np.ndarray, cfg: DataConfig) -> None:
    """Without class names, labels must be 0..K-1 with K <= MAX_CLASSES and every class present:
    a stray label (1000 among 0..9, 2**40) is a broken file, not 1,001 classes. Checked before
    anything is sized by K."""
    top = int(max(y_tr.max(initial=0), y_te.max(initial=0)))
    where = f"data.train / data.test: {cfg.train} / {cfg.test}"
    if top >= MAX_CLASSES:
        raise DataError(
            f"{where}: label {top} found; expected class indices 0..K-1 with K <= "
            f"{MAX_CLASSES:,} (name more classes with data.class_names or a classes array)"
        )
    present = np.zeros(top + 1, dtype=bool)
    present[y_tr] = True
    present[y_te] = True
    if not present.all():
        absent = np.flatnonzero(~present)
        shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
        raise DataError(
            f"{where}: labels go up to {top} but {len(absent)} of 0..{top} have no example "
            f"({shown}); expected class indices 0..K-1 (name the classes with data.class_names "
            "if some are meant to be empty)"
        )


def read_npz(path: Path, key: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(x as stored, y (N,) int64, class names or None) of one file; do not modify them.

    Cached by (path, modification time, size): configs that differ only in the subset drawn
    (a sweep over data.seed or data.train_per_class) decompress the file once.
    """
    if not path.is_file():
        raise DataError(
            f"{key}: file {path} not found (expected {LAYOUT}; point to it with --set {key}=PATH)"
        )
    stat = path.stat()
    return _read_cached(str(path), stat.st_mtime_ns, stat.st_size, key)


@functools.lru_cache(maxsize=2)
def _read_cached(
    file: str, mtime_ns: int, size: int, key: str
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    path = Path(file)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{key}: {path} is a single .npy array; expected {LAYOUT}")
        with archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise DataError(
                    f"{key}: {path} has no array {', '.join(missing)} (found: "
                    f"{', '.join(archive.files) or 'none'}; "
                    f"expected x (N, H, W, C) or (N, D) and y (N,))"
                )
            x, y = archive["x"], archive["y"]
            names = [str(n) for n in archive["classes"]] if "classes" in archive.files else None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"{key}: cannot read {path}, the file is truncated or corrupt ({reason})"
        ) from None
    if x.dtype.kind not in "uifb":
        raise DataError(
            f"{key}: {path}: x has dtype {x.dtype}; expected uint8 pixels or real numbers"
        )
    if x.dtype != np.uint8 and not np.all(np.isfinite(x)):
        raise DataError(f"{key}: {path}: x holds NaN or infinite values")
    y = check_labels(y, len(x), f"{key}: {path}: y")
    return x, y, names

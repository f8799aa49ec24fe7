"""CIFAR-10 from torchvision's folder `root/cifar-10-batches-py/` (the "python version").

The folder holds `data_batch_1`..`data_batch_5` (training, 10,000 images each), `test_batch`
(10,000) and `batches.meta` (`label_names`). Each batch is a pickled dict whose `data` is
(N, 3072) uint8, every row the R, G and B planes of a 32x32 image, i.e. already (3, 32, 32),
and whose `labels` is a list of N ints.

torchvision is used for what it owns: the file list, the official MD5s, and the download
(its helper fetches, checks and extracts the archive). The batches are then read here rather
than through `CIFAR10(download=False)`: that constructor refuses any folder whose files differ
from the 2009 release by a single byte, with "Dataset not found or corrupted" and no file named,
and it reads them with plain `pickle.load`, which runs whatever code a pickle names. Here a
restricted unpickler (`bnexp.data.pickles`) reads them: a file that names anything but the
numpy array reconstruction is refused and runs nothing. Reading them ourselves also names the
file and the problem (missing, truncated, missing keys, wrong shapes), and accepts a faithful
re-pickled copy; a file whose MD5 differs from the official one is reported in the log as a
warning, not silently used.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10
from torchvision.datasets import utils as tv_utils

from bnexp.config import DataConfig
from bnexp.data import Dataset, pickles
from bnexp.data.arrays import check_labels
from bnexp.data.fetch import fetch
from bnexp.data.subsets import subset_dataset
from bnexp.errors import DataError

log = logging.getLogger("bnexp")

FOLDER = CIFAR10.base_folder  # "cifar-10-batches-py"
TRAIN_FILES = [name for name, _ in CIFAR10.train_list]
TEST_FILES = [name for name, _ in CIFAR10.test_list]
META_FILE = CIFAR10.meta["filename"]  # "batches.meta"
MD5 = {name: md5 for name, md5 in (*CIFAR10.train_list, *CIFAR10.test_list)} | {
    META_FILE: CIFAR10.meta["md5"]
}
HOW_TO_GET = (
    f"set data.download: true on a machine that is online, or download {CIFAR10.url} "
    f"and extract it into data.root"
)


def load_cifar10(cfg: DataConfig) -> Dataset:
    root = Path(cfg.root)
    folder = find_folder(root)
    if missing_files(folder) and cfg.download:
        download(root)
        folder = root / FOLDER
    missing = missing_files(folder)
    if missing:
        raise DataError(
            f"data.root: {folder} lacks {', '.join(missing)} (dataset cifar10 expects "
            f"{', '.join(TRAIN_FILES)}, {', '.join(TEST_FILES)}, {META_FILE} there; {HOW_TO_GET})"
        )
    names, (x_tr, y_tr), (x_te, y_te) = read_folder(folder)
    return subset_dataset("cifar10", (x_tr, y_tr), (x_te, y_te), names, cfg, source=str(folder))


def read_folder(
    folder: Path,
) -> tuple[list[str], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(class names, (x, y) training, (x, y) test) of a complete folder; do not modify them.

    Cached by the files' modification times, so configs that differ only in the subset drawn
    read and check the 180 MB once.
    """
    stamp = tuple((folder / name).stat().st_mtime_ns for name in MD5)
    return _read_folder_cached(str(folder), stamp)


def warn_if_not_official(dataset: str, folder: Path, md5s: dict[str, str]) -> None:
    """A log warning naming the files whose MD5 differs from the official release's (a re-packed
    subset, say): they are still read, through the restricted unpickler."""
    differ = [n for n, md5 in md5s.items() if not tv_utils.check_integrity(str(folder / n), md5)]
    if differ:
        log.warning(
            "%s: %s in %s differ from the official release (MD5); using them as they are",
            dataset,
            ", ".join(differ),
            folder,
        )


@functools.lru_cache(maxsize=1)
def _read_folder_cached(folder_str: str, stamp: tuple[int, ...]):
    folder = Path(folder_str)
    warn_if_not_official("cifar10", folder, MD5)
    names = read_meta(folder / META_FILE)
    train = read_batches([folder / f for f in TRAIN_FILES], len(names))
    test = read_batches([folder / f for f in TEST_FILES], len(names))
    return names, train, test


def find_folder(root: Path) -> Path:
    """root/cifar-10-batches-py, or root itself when it is that folder."""
    if not (root / FOLDER).is_dir() and (root / TRAIN_FILES[0]).is_file():
        return root
    return root / FOLDER


def missing_files(folder: Path) -> list[str]:
    return [
        name for name in (*TRAIN_FILES, *TEST_FILES, META_FILE) if not (folder / name).is_file()
    ]


def download(root: Path) -> None:
    """The archive fetched, MD5-checked and extracted by torchvision's helper (not by
    `CIFAR10(download=True)`, whose constructor then reads the batches with plain pickle)."""
    fetch(
        "CIFAR-10",
        CIFAR10.url,
        root,
        lambda: tv_utils.download_and_extract_archive(
            CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5
        ),
    )


def unpickle(path: Path, what: str = "a CIFAR-10 batch") -> dict:
    """A CIFAR pickle as a dict with str keys (the originals were written by Python 2), read by
    the restricted unpickler (`pickles`): a file that names any other global runs nothing."""
    obj = pickles.load(path, what)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}; expected {what} (a pickled dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_meta(path: Path) -> list[str]:
    meta = unpickle(path, "CIFAR-10's batches.meta")
    if "label_names" not in meta:
        raise DataError(
            f"{path}: missing key label_names (found: {', '.join(map(str, meta)) or 'none'})"
        )
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta["label_names"]]
    if len(names) != 10:
        raise DataError(
            f"{path}: label_names has {len(names)} names; expected the 10 CIFAR-10 classes"
        )
    return names


def read_batches(
    paths: list[Path], num_classes: int, labels: str = "labels", what: str = "a CIFAR-10 batch"
) -> tuple[np.ndarray, np.ndarray]:
    """The batches stacked: x (N, 3, 32, 32) uint8, y (N,) int64 (the batch's key `labels`)."""
    xs, ys = [], []
    for path in paths:
        batch = unpickle(path, what)
        missing = [k for k in ("data", labels) if k not in batch]
        if missing:
            raise DataError(
                f"{path}: missing key {', '.join(missing)} (found: "
                f"{', '.join(map(str, batch)) or 'none'}; "
                f"expected data, {labels})"
            )
        x = np.asarray(batch["data"])
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or x.dtype != np.uint8:
            raise DataError(
                f"{path}: data is {x.dtype} of shape {x.shape}; expected uint8 (N, 3072), one "
                "32x32 RGB image per row"
            )
        y = check_labels(np.asarray(batch[labels]), len(x), f"{path}: {labels}")
        if len(y) and y.max() >= num_classes:
            raise DataError(f"{path}: label {int(y.max())} found; expected 0..{num_classes - 1}")
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)

"""CIFAR-100 from torchvision's folder `root/cifar-100-python/` (the "python version").

The folder holds `train` (50,000 images), `test` (10,000) and `meta` (`fine_label_names`, the
100 class names, and `coarse_label_names`, the 20 superclasses). Each split is a pickled dict
whose `data` is (N, 3072) uint8 rows, each the R, G and B planes of a 32x32 image, as in
CIFAR-10, with `fine_labels` and `coarse_labels`. The classes are the 100 fine labels, as
torchvision's `CIFAR100` gives them.

As for CIFAR-10 (see cifar10.py), torchvision gives the file names, MD5s and download, and the
pickles are read here by the restricted unpickler: a file that names any global besides the
numpy array reconstruction runs nothing and is a one-line error.
"""

from __future__ import annotations

import functools
from pathlib import Path

from torchvision.datasets import CIFAR100
from torchvision.datasets import utils as tv_utils

from bnexp.config import DataConfig
from bnexp.data import Dataset
from bnexp.data.cifar10 import read_batches, unpickle, warn_if_not_official
from bnexp.data.fetch import fetch
from bnexp.data.subsets import subset_dataset
from bnexp.errors import DataError

FOLDER = CIFAR100.base_folder  # "cifar-100-python"
TRAIN_FILE, TEST_FILE = CIFAR100.train_list[0][0], CIFAR100.test_list[0][0]  # "train", "test"
META_FILE, NAMES_KEY = CIFAR100.meta["filename"], CIFAR100.meta["key"]  # meta, fine_label_names
LABELS_KEY = "fine_labels"
MD5 = {name: md5 for name, md5 in (*CIFAR100.train_list, *CIFAR100.test_list)} | {
    META_FILE: CIFAR100.meta["md5"]
}
HOW_TO_GET = (
    f"set data.download: true on a machine that is online, or download {CIFAR100.url} "
    f"and extract it into data.root"
)


def load_cifar100(cfg: DataConfig) -> Dataset:
    root = Path(cfg.root)
    folder = (
        root if (root / TRAIN_FILE).is_file() and (root / META_FILE).is_file() else root / FOLDER
    )
    if missing_files(folder) and cfg.download:
        fetch(
            "CIFAR-100",
            CIFAR100.url,
            root,
            lambda: tv_utils.download_and_extract_archive(
                CIFAR100.url, str(root), filename=CIFAR100.filename, md5=CIFAR100.tgz_md5
            ),
        )
        folder = root / FOLDER
    missing = missing_files(folder)
    if missing:
        raise DataError(
            f"data.root: {folder} lacks {', '.join(missing)} (dataset cifar100 expects "
            f"{TRAIN_FILE}, {TEST_FILE}, {META_FILE} there; {HOW_TO_GET})"
        )
    stamp = tuple((folder / name).stat().st_mtime_ns for name in MD5)
    names, (x_tr, y_tr), (x_te, y_te) = _read_folder(str(folder), stamp)
    return subset_dataset("cifar100", (x_tr, y_tr), (x_te, y_te), names, cfg, source=str(folder))


def missing_files(folder: Path) -> list[str]:
    return [name for name in (TRAIN_FILE, TEST_FILE, META_FILE) if not (folder / name).is_file()]


@functools.lru_cache(maxsize=1)
def _read_folder(folder_str: str, stamp: tuple[int, ...]):
    """(class names, (x, y) training, (x, y) test), cached by the files' modification times."""
    folder = Path(folder_str)
    warn_if_not_official("cifar100", folder, MD5)
    names = read_meta(folder / META_FILE)
    read = functools.partial(
        read_batches, num_classes=len(names), labels=LABELS_KEY, what="a CIFAR-100 split"
    )
    return names, read([folder / TRAIN_FILE]), read([folder / TEST_FILE])


def read_meta(path: Path) -> list[str]:
    meta = unpickle(path, "CIFAR-100's meta")
    if NAMES_KEY not in meta:
        raise DataError(
            f"{path}: missing key {NAMES_KEY} (found: {', '.join(map(str, meta)) or 'none'})"
        )
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta[NAMES_KEY]]
    if len(names) != 100 or len(set(names)) != 100:
        raise DataError(
            f"{path}: {NAMES_KEY} has {len(set(names))} distinct names; expected the 100 "
            "CIFAR-100 classes"
        )
    return names

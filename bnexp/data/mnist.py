"""MNIST and Fashion-MNIST from torchvision's folders `root/MNIST/raw/` and
`root/FashionMNIST/raw/`.

Each folder holds the four IDX files of LeCun's release: `train-images-idx3-ubyte`,
`train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, as torchvision
extracts them, or gzipped (`.gz`, as downloaded). An IDX file is a big-endian header, then the
values: the magic number 0x00000803 (2 zero bytes, type 0x08 = uint8, 3 dimensions) and the
sizes N, H, W for images; 0x00000801 and N for labels.

Images load as (N, 1, H, W) uint8 (28x28 in the releases), labels 0..9. Class names: "0".."9"
for MNIST (so `classes: [3, 5]` names digits), torchvision's ten names for Fashion-MNIST
("T-shirt/top", ...). torchvision gives the file names and the download.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path

import numpy as np
from torchvision.datasets import MNIST, FashionMNIST

from bnexp.config import DataConfig
from bnexp.data import Dataset
from bnexp.data.fetch import fetch
from bnexp.data.subsets import subset_dataset
from bnexp.errors import DataError

SOURCES = {  # dataset -> (torchvision class, class names)
    "mnist": (MNIST, [str(d) for d in range(10)]),
    "fashion_mnist": (FashionMNIST, list(FashionMNIST.classes)),
}
FILES = {  # split -> (images, labels), without .gz
    "training": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_mnist(cfg: DataConfig) -> Dataset:
    source, names = SOURCES[cfg.dataset]
    root = Path(cfg.root)
    folder = find_folder(root, source)
    if missing_files(folder) and cfg.download:
        url = source.mirrors[0]
        fetch(source.__name__, url, root, lambda: source(str(root), train=False, download=True))
        folder = root / source.__name__ / "raw"
    missing = missing_files(folder)
    if missing:
        expected = ", ".join(f"{f}[.gz]" for pair in FILES.values() for f in pair)
        raise DataError(
            f"data.root: {folder} lacks {', '.join(missing)} (dataset {cfg.dataset} expects "
            f"{expected} there; set data.download: true on a machine that is online, or put "
            f"the files of {source.mirrors[0]} there)"
        )
    train, test = (read_split(folder, split) for split in FILES)
    return subset_dataset(cfg.dataset, train, test, names, cfg, source=str(folder))


def find_folder(root: Path, source: type) -> Path:
    """root/<MNIST|FashionMNIST>/raw, or root itself when it holds the files."""
    if not missing_files(root):
        return root
    return root / source.__name__ / "raw"


def file_of(folder: Path, name: str) -> Path | None:
    """The file `name`, else `name.gz`, in `folder` (torchvision reads the first)."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def missing_files(folder: Path) -> list[str]:
    return [f for pair in FILES.values() for f in pair if file_of(folder, f) is None]


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """x (N, 1, H, W) uint8, y (N,) int64 of one split; do not modify them."""
    images, labels = (file_of(folder, f) for f in FILES[split])
    return _read_cached(
        str(images), str(labels), images.stat().st_mtime_ns, labels.stat().st_mtime_ns
    )


@functools.lru_cache(maxsize=2)
def _read_cached(images: str, labels: str, *stamp: int) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(Path(images), ndim=3)
    y = read_idx(Path(labels), ndim=1)
    if len(y) != len(x):
        raise DataError(f"{labels}: {len(y)} labels but {images} holds {len(x)} images")
    if len(y) and y.max() > 9:
        raise DataError(f"{labels}: label {int(y.max())} found; expected 0..9")
    return x[:, None], y.astype(np.int64)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzipped when its name ends in .gz)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read it, the file is truncated or corrupt ({e})") from None
    magic = 0x0800 + ndim
    head = 4 * (1 + ndim)
    if len(raw) < head or int.from_bytes(raw[:4], "big") != magic:
        found = f"0x{int.from_bytes(raw[:4], 'big'):08X}" if len(raw) >= 4 else "nothing"
        raise DataError(
            f"{path}: magic number {found}; expected 0x{magic:08X} (IDX, uint8, "
            f"{ndim} dimension{'s' * (ndim > 1)})"
        )
    shape = tuple(int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(1, ndim + 1))
    size = int(np.prod(shape))
    if len(raw) - head != size:
        raise DataError(
            f"{path}: {len(raw) - head:,} bytes of values; the header's sizes {shape} need "
            f"{size:,} (the file is truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape)

"""Users' own images in torchvision's ImageFolder layout: one folder per class, per split.

    root/train/<class>/**/<image>   (a class's images may sit in subfolders)
    root/test/<class>/**/<image>

Class names are the folder names, sorted, labels 0..K-1 in that order (torchvision's
`find_classes`); both splits must have the same class folders. Images are the files with
torchvision's extensions (`IMG_EXTENSIONS`: .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp;
other files are ignored), found and ordered by torchvision's `make_dataset`, decoded by Pillow
and converted to RGB as torchvision's default loader does. All must have the same size; they
load as (N, 3, H, W) uint8.

Pillow decodes only the formats those extensions name (PNG, JPEG, PPM, BMP, TIFF, WebP),
whatever a file's name says: it would otherwise open an EPS file, whatever its extension, by
running Ghostscript on the PostScript program inside.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from bnexp.config import DataConfig
from bnexp.data import Dataset
from bnexp.data.subsets import subset_dataset
from bnexp.errors import DataError

SPLITS = {"training": "train", "test": "test"}  # split -> folder under root
FORMATS = ("PNG", "JPEG", "PPM", "BMP", "TIFF", "WEBP")  # Pillow's names for IMG_EXTENSIONS
LAYOUT = "root/train/<class>/*.png and root/test/<class>/*.png, one folder per class"


def load_imagefolder(cfg: DataConfig) -> Dataset:
    root = Path(cfg.root)
    names, samples = None, {}
    for split, sub in SPLITS.items():
        folder = root / sub
        if not folder.is_dir():
            raise DataError(f"data.root: {folder} not found (dataset imagefolder expects {LAYOUT})")
        classes, samples[split] = list_images(folder)
        if names is not None and classes != names:
            only_tr = sorted(set(names) - set(classes))
            only_te = sorted(set(classes) - set(names))
            raise DataError(
                f"data.root: the class folders of {folder} differ from those of "
                f"{root / SPLITS['training']} (only in training: {', '.join(only_tr) or 'none'}; "
                f"only in test: {', '.join(only_te) or 'none'}); expected the same classes"
            )
        names = classes
    (x_tr, y_tr), (x_te, y_te) = (read_images(tuple(samples[s])) for s in SPLITS)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(
            f"data.root: the training images are {x_tr.shape[3]}x{x_tr.shape[2]} but the test "
            f"images {x_te.shape[3]}x{x_te.shape[2]}; expected one size (resize them)"
        )
    return subset_dataset("imagefolder", (x_tr, y_tr), (x_te, y_te), names, cfg, source=str(root))


def list_images(folder: Path) -> tuple[list[str], list[tuple[str, int, int]]]:
    """(class names, [(path, label, mtime_ns)]) of one split's folder, in torchvision's order."""
    try:
        classes, class_to_idx = find_classes(folder)
        found = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:  # no class folder, or a class folder without images
        raise DataError(
            f"data.root: {folder}: {str(e).splitlines()[0]} (expected {LAYOUT})"
        ) from None
    return classes, [(p, label, Path(p).stat().st_mtime_ns) for p, label in found]


@functools.lru_cache(maxsize=2)
def read_images(samples: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """x (N, 3, H, W) uint8, y (N,) int64 of [(path, label, mtime_ns)]; do not modify them.
    Cached by the list (paths and modification times)."""
    first = read_image(Path(samples[0][0]))
    x = np.empty((len(samples), *first.shape), dtype=np.uint8)
    for i, (path, _, _) in enumerate(samples):
        image = read_image(Path(path)) if i else first
        if image.shape != first.shape:
            raise DataError(
                f"{path}: a {image.shape[2]}x{image.shape[1]} image; expected "
                f"{first.shape[2]}x{first.shape[1]} as {samples[0][0]} (resize them to one size)"
            )
        x[i] = image
    return x, np.array([label for _, label, _ in samples], dtype=np.int64)


def read_image(path: Path) -> np.ndarray:
    """(3, H, W) uint8 RGB."""
    try:
        with Image.open(path, formats=FORMATS) as image:
            rgb = np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise DataError(
            f"{path}: not an image in a format read here ({', '.join(FORMATS)})"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # Pillow's
        raise DataError(
            f"{path}: cannot decode it, the file is truncated or corrupt ({e})"
        ) from None
    return rgb.transpose(2, 0, 1)

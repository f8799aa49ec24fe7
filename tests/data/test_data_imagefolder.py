"""dataset: imagefolder — PNG files written here (Pillow) in torchvision's ImageFolder layout,
checked against torchvision's own ImageFolder reading the same folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from bnexp.config import DataConfig
from bnexp.data import load_dataset
from bnexp.errors import DataError

pytestmark = pytest.mark.usefixtures("fresh_data_cache")

CLASSES = ["bird", "cat", "dog"]  # sorted: labels 0, 1, 2


def make_image_folder(root: Path, per_class: dict | None = None, size=(8, 6)) -> None:
    """root/{train,test}/<class>/ with random RGB PNGs of `size` (width, height); one image per
    split is greyscale (mode L), one sits in a nested folder, and a README is not an image."""
    per_class = per_class or {"train": 4, "test": 2}
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for c in CLASSES:
            folder = root / split / c
            (folder / "nested").mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                image = Image.fromarray(pixels)
                if c == "cat" and i == 0:
                    image = image.convert("L")
                where = folder / "nested" if i == 1 else folder
                image.save(where / f"{c}_{i}.png")
            (folder / "README.txt").write_text("not an image")


def cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="imagefolder", root=str(root), **kw)


def test_loads_what_torchvision_reads_from_the_same_folders(tmp_path):
    make_image_folder(tmp_path)
    data = load_dataset(cfg(tmp_path))
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        ref = ImageFolder(str(tmp_path / split))  # PIL images converted to RGB
        want = np.stack([np.asarray(ref.loader(p)).transpose(2, 0, 1) for p, _ in ref.samples])
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 6, 8)
        assert np.array_equal(x.numpy(), want) and y.tolist() == ref.targets
        assert len(ref.samples) == 3 * (4 if split == "train" else 2)
    assert data.classes == tuple(ref.classes) == tuple(CLASSES) and data.name == "imagefolder"


def test_subsets_by_folder_name(tmp_path):
    make_image_folder(tmp_path, {"train": 5, "test": 3})
    data = load_dataset(cfg(tmp_path, classes=["dog", "bird"], train_per_class=2))
    assert data.classes == ("dog", "bird") and data.class_counts() == ([2, 2], [3, 3])
    data = load_dataset(cfg(tmp_path, binary={"positive": "cat"}, test_per_class=2))
    assert data.binary and data.class_counts() == ([5, 5], [2, 2])


def test_layout_problems_name_the_folder_or_file(tmp_path):
    with pytest.raises(
        DataError,
        match=r"data.root: .*/train not found \(dataset imagefolder expects root/train/<class>/",
    ):
        load_dataset(cfg(tmp_path))
    make_image_folder(tmp_path)
    (tmp_path / "test" / "dog").rename(tmp_path / "test" / "wolf")
    with pytest.raises(
        DataError,
        match=r"class folders of .*/test differ from those of .*/train \(only in training: dog; "
        r"only in test: wolf\); expected the same classes",
    ):
        load_dataset(cfg(tmp_path))
    for path in (tmp_path / "test" / "wolf").rglob("*.png"):
        path.unlink()
    (tmp_path / "test" / "wolf").rename(tmp_path / "test" / "dog")
    with pytest.raises(DataError, match=r"/test: Found no valid file for the classes dog"):
        load_dataset(cfg(tmp_path))


def test_bad_images_are_one_line_errors(tmp_path):
    make_image_folder(tmp_path)
    odd = tmp_path / "train" / "dog" / "dog_3.png"
    Image.new("RGB", (9, 6)).save(odd)
    with pytest.raises(DataError, match=r"dog_3.png: a 9x6 image; expected 8x6 as .*bird_0.png"):
        load_dataset(cfg(tmp_path))
    odd.unlink()
    for path in (tmp_path / "test").rglob("*.png"):
        Image.new("RGB", (8, 7)).save(path)
    with pytest.raises(
        DataError, match=r"the training images are 8x6 but the test images 8x7; expected one size"
    ):
        load_dataset(cfg(tmp_path))
    odd.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    with pytest.raises(DataError, match=r"dog_3.png: (not an image|cannot decode it)"):
        load_dataset(cfg(tmp_path))


def test_an_eps_file_named_png_is_not_rendered(tmp_path, monkeypatch):
    """Pillow opens EPS whatever the file's name and renders it by running Ghostscript on the
    PostScript inside: refused here, and Ghostscript is never called."""
    from PIL import EpsImagePlugin

    make_image_folder(tmp_path)
    eps = tmp_path / "train" / "cat" / "cat_3.png"
    eps.write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 6\n0 0 moveto 8 6 lineto stroke\n%%EOF\n"
    )
    with Image.open(eps) as image:  # what plain Pillow would do with it
        assert image.format == "EPS"
    ran = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append(a))
    with pytest.raises(DataError, match=r"cat_3.png: not an image in a format read here \(PNG, "):
        load_dataset(cfg(tmp_path))
    assert not ran

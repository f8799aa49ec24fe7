"""dataset: cifar100 — files written here in torchvision's `cifar-100-python` layout, checked
against torchvision's own CIFAR100 reading the same files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from py2pickle import dumps as py2_dumps  # tests/data is on sys.path (pytest rootdir)
from torchvision.datasets import CIFAR100

from bnexp.config import DataConfig
from bnexp.data import load_dataset
from bnexp.errors import DataError

pytestmark = pytest.mark.usefixtures("fresh_data_cache")

NAMES = [f"class{i:02d}" for i in range(100)]  # the real ones: apple, aquarium_fish, ...


def write(path: Path, obj: dict, form: str) -> None:
    """py2: as the 2009 files (Python 2, str keys); py3: pickle protocol 2 with str keys;
    bytes: protocol 2 with bytes keys (b'data', b'fine_labels', ...)."""
    if form == "py2":
        path.write_bytes(py2_dumps(obj))
        return
    if form == "bytes":
        obj = {k.encode(): v for k, v in obj.items()}
    path.write_bytes(pickle.dumps(obj, protocol=2))


def make_cifar100_folder(root: Path, form: str = "py2", train: int = 2, test: int = 1) -> dict:
    """root/cifar-100-python/{train,test,meta}: `train` / `test` images per class, in an order
    shuffled by a fixed seed; returns the arrays written, (N, 3, 32, 32)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ref = {}
    for split, per in (("train", train), ("test", test)):
        fine = rng.permutation(np.repeat(np.arange(100), per))
        rows = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
        batch = {
            "filenames": [f"img_{i}.png" for i in range(len(fine))],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": [int(v) for v in fine],
            "coarse_labels": [int(v) // 5 for v in fine],
            "data": rows,
        }
        write(folder / split, batch, form)
        ref[split] = (rows.reshape(-1, 3, 32, 32), fine)
    meta = {"fine_label_names": NAMES, "coarse_label_names": [f"super{i}" for i in range(20)]}
    write(folder / "meta", meta, form)
    return ref


def cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="cifar100", root=str(root), **kw)


@pytest.mark.parametrize("form", ["py2", "py3"])
def test_loads_what_torchvision_reads_from_the_same_files(tmp_path, monkeypatch, form):
    make_cifar100_folder(tmp_path, form)
    data = load_dataset(cfg(tmp_path))
    # torchvision's CIFAR100 refuses files that are not the official release: its MD5 check is
    # lifted here so that it reads ours (plain pickle.load: our own files, written above)
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    for train, x, y in ((True, data.x_train, data.y_train), (False, data.x_test, data.y_test)):
        ref = CIFAR100(str(tmp_path), train=train, download=False)
        assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == (3, 32, 32)
        assert np.array_equal(x.numpy(), ref.data.transpose(0, 3, 1, 2))  # tv: (N, H, W, C)
        assert y.tolist() == list(ref.targets)
    assert data.classes == tuple(ref.classes) == tuple(NAMES)
    assert data.name == "cifar100" and data.num_outputs == 100 and data.mean is not None


def test_bytes_keys_and_the_folder_itself_as_root(tmp_path):
    ref = make_cifar100_folder(tmp_path, "bytes")
    data = load_dataset(cfg(tmp_path / "cifar-100-python"))
    assert np.array_equal(data.x_train.numpy(), ref["train"][0])
    assert data.y_test.tolist() == ref["test"][1].tolist()


def test_subsets_by_fine_class_name(tmp_path):
    ref = make_cifar100_folder(tmp_path, train=3, test=2)
    data = load_dataset(cfg(tmp_path, classes=["class07", "class03"], train_per_class=2))
    assert data.classes == ("class07", "class03") and data.class_counts() == ([2, 2], [2, 2])
    x_all, y_all = ref["train"]
    for x, y in zip(data.x_train.numpy(), data.y_train.tolist(), strict=True):
        (i,) = np.flatnonzero((x_all == x).all(axis=(1, 2, 3)))
        assert y_all[i] == (7, 3)[y]
    binary = load_dataset(
        cfg(tmp_path, binary={"positive": "class42", "negatives_per_positive": 2})
    )
    assert binary.binary and binary.classes == ("non-class42", "class42")
    assert binary.class_counts() == ([6, 3], [4, 2])  # 3 positives, 6 negatives drawn evenly


def test_missing_files_are_named(tmp_path):
    make_cifar100_folder(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(
        DataError,
        match=r"data.root: .*cifar-100-python lacks meta \(dataset cifar100 expects train, test, "
        r"meta there; set data.download: true .*cifar-100-python.tar.gz",
    ):
        load_dataset(cfg(tmp_path))


def test_wrong_keys_and_names_are_one_line_errors(tmp_path):
    make_cifar100_folder(tmp_path)
    folder = tmp_path / "cifar-100-python"
    write(folder / "test", {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, "py3")
    with pytest.raises(
        DataError, match=r"test: missing key fine_labels \(found: data, labels; expected data, "
    ):
        load_dataset(cfg(tmp_path))
    write(folder / "meta", {"fine_label_names": NAMES[:10]}, "py3")
    with pytest.raises(DataError, match=r"meta: fine_label_names has 10 distinct names; expected"):
        load_dataset(cfg(tmp_path))


def test_download_offline_is_a_one_line_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(
        DataError, match=r"data.download: could not download CIFAR-100 from https://.*online"
    ) as err:
        load_dataset(cfg(tmp_path, download=True))
    assert "\n" not in str(err.value)


def test_download_extracts_with_torchvision_helper_then_reads_here(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake(url, download_root, filename, md5):
        calls.append((url, filename, md5))
        make_cifar100_folder(Path(download_root))

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake)
    data = load_dataset(cfg(tmp_path, download=True))
    assert calls == [(CIFAR100.url, "cifar-100-python.tar.gz", CIFAR100.tgz_md5)]
    assert data.x_train.shape == (200, 3, 32, 32)

"""dataset: svhn — MATLAB v5 files written here (scipy.io.savemat) in torchvision's layout,
checked against torchvision's own SVHN reading the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from bnexp.config import DataConfig
from bnexp.data import load_dataset
from bnexp.errors import DataError

pytestmark = pytest.mark.usefixtures("fresh_data_cache")


def write_mat(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's form: X (32, 32, 3, N) uint8, y (N, 1) labels 1..10 (10: the digit 0)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (rng.permutation(np.arange(n) % 10) + 1).astype(np.uint8).reshape(n, 1)
    scipy.io.savemat(path, {"X": x, "y": y})  # format "5", as the released files
    return x, y


def make_svhn_folder(root: Path, n_train: int = 30, n_test: int = 20) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    return {
        "train": write_mat(root / "train_32x32.mat", n_train, 0),
        "test": write_mat(root / "test_32x32.mat", n_test, 1),
    }


def cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="svhn", root=str(root), **kw)


def test_loads_what_torchvision_reads_from_the_same_files(tmp_path, monkeypatch):
    import torchvision.datasets.svhn as tv_svhn

    ref_files = make_svhn_folder(tmp_path)
    data = load_dataset(cfg(tmp_path))
    monkeypatch.setattr(tv_svhn, "check_integrity", lambda *args, **kwargs: True)  # not MD5s
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        ref = tv_svhn.SVHN(str(tmp_path), split=split, download=False)
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
        assert np.array_equal(x.numpy(), ref.data) and y.tolist() == ref.labels.tolist()
        # by hand: image i is X[:, :, :, i] as (C, H, W); label 10 is the digit 0
        x_mat, y_mat = ref_files[split]
        assert np.array_equal(x[3].numpy(), x_mat[:, :, :, 3].transpose(2, 0, 1))
        assert y.tolist() == [0 if v == 10 else int(v) for v in y_mat[:, 0]]
    assert data.classes == tuple(str(d) for d in range(10)) and data.name == "svhn"


def test_subsets(tmp_path):
    make_svhn_folder(tmp_path)
    data = load_dataset(cfg(tmp_path, classes=[0, 9], train_per_class=2, test_per_class=2))
    assert data.classes == ("0", "9") and data.class_counts() == ([2, 2], [2, 2])
    data = load_dataset(cfg(tmp_path, binary={"positive": 1}))
    assert data.binary and data.class_counts() == ([3, 3], [2, 2])  # 1 negative per positive


def test_files_that_are_not_svhn_are_one_line_errors(tmp_path):
    make_svhn_folder(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(
        DataError,
        match=r"data.root: .* lacks test_32x32.mat \(dataset svhn expects train_32x32.mat and "
        r"test_32x32.mat there; set data.download: true .*http://ufldl.stanford.edu/housenumbers/",
    ):
        load_dataset(cfg(tmp_path))
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 600)
    with pytest.raises(DataError, match=r"test_32x32.mat: cannot read it as a MATLAB file"):
        load_dataset(cfg(tmp_path))
    scipy.io.savemat(path, {"images": np.zeros((2, 2), np.uint8)})
    with pytest.raises(DataError, match=r"test_32x32.mat: no variable X, y; expected X \(32, 32"):
        load_dataset(cfg(tmp_path))
    scipy.io.savemat(path, {"X": np.zeros((4, 32, 32, 3), np.uint8), "y": np.ones((4, 1))})
    with pytest.raises(DataError, match=r"X is uint8 of shape \(4, 32, 32, 3\); expected uint8 "):
        load_dataset(cfg(tmp_path))
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])})
    with pytest.raises(DataError, match=r"label 0 found; expected 1..10 \(10: the digit 0\)"):
        load_dataset(cfg(tmp_path))


def test_download_fetches_only_the_missing_files(tmp_path, monkeypatch):
    """data.download: torchvision's download_url for each missing split (offline here: it
    writes our files); offline for real, a one-line error."""
    import urllib.error

    import torchvision.datasets.utils as tv_utils

    make_svhn_folder(tmp_path / "files")
    (tmp_path / "root").mkdir()
    (tmp_path / "files" / "train_32x32.mat").rename(tmp_path / "root" / "train_32x32.mat")
    fetched = []

    def fake(url, root, filename, md5):
        fetched.append((url, filename, md5))
        (tmp_path / "files" / filename).rename(Path(root) / filename)

    monkeypatch.setattr(tv_utils, "download_url", fake)
    data = load_dataset(cfg(tmp_path / "root", download=True))
    assert fetched == [
        (
            "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
            "test_32x32.mat",
            "eb5a983be6a315427106f1b164d9cef3",
        )
    ]
    assert data.x_test.shape == (20, 3, 32, 32)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(
        DataError, match=r"^data.download: could not download SVHN from http://ufldl.*online"
    ) as err:
        load_dataset(cfg(tmp_path / "empty", download=True))
    assert "\n" not in str(err.value)

"""dataset: mnist / fashion_mnist — IDX files written here in torchvision's `MNIST/raw/` layout,
checked against torchvision's own MNIST and FashionMNIST reading the same files; a short run."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torchvision.datasets import MNIST, FashionMNIST
from typer.testing import CliRunner

from bnexp.cli import app
from bnexp.config import DataConfig
from bnexp.data import clear_cache, load_dataset
from bnexp.errors import DataError

pytestmark = pytest.mark.usefixtures("fresh_data_cache")

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(a: np.ndarray) -> bytes:
    """LeCun's IDX format: 0x00 0x00, type 0x08 (uint8), the number of dimensions, each size as
    a big-endian int32, then the values (0x00000803 for images, 0x00000801 for labels)."""
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(n.to_bytes(4, "big") for n in a.shape)
    return head + a.astype(np.uint8).tobytes()


def make_raw_folder(
    root: Path, name: str = "MNIST", gz: bool = False, n: dict | None = None, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """root/<name>/raw/ with the four files (gzipped if `gz`): {split: (x (N, 28, 28), y)}.
    Digits are random strokes: a bright band whose row is the label, on noise."""
    n = n or {"train": 40, "t10k": 20}
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ref = {}
    for split, (images, labels) in FILES.items():
        y = rng.permutation(np.arange(n[split]) % 10).astype(np.uint8)
        x = rng.integers(0, 60, (n[split], 28, 28), dtype=np.uint8)
        for i, label in enumerate(y):
            x[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        for file, a in ((images, x), (labels, y)):
            data = idx_bytes(a)
            if gz:
                (raw / f"{file}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / file).write_bytes(data)
        ref[split] = (x, y)
    return ref


def cfg(root: Path, dataset: str = "mnist", **kw) -> DataConfig:
    return DataConfig(dataset=dataset, root=str(root), **kw)


@pytest.mark.parametrize("dataset, source", [("mnist", MNIST), ("fashion_mnist", FashionMNIST)])
def test_loads_what_torchvision_reads_from_the_same_files(tmp_path, dataset, source):
    make_raw_folder(tmp_path, source.__name__)
    data = load_dataset(cfg(tmp_path, dataset))
    for train, x, y in ((True, data.x_train, data.y_train), (False, data.x_test, data.y_test)):
        ref = source(str(tmp_path), train=train, download=False)  # reads the raw IDX files
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)
        assert torch.equal(x[:, 0], ref.data) and torch.equal(y, ref.targets)
    names = [str(d) for d in range(10)] if dataset == "mnist" else FashionMNIST.classes
    assert data.classes == tuple(names) and data.name == dataset
    # one channel, standardized with the training set's statistics (per batch, on uint8)
    scaled = data.x_train.double() / 255
    assert data.mean.shape == (1,) and torch.allclose(
        data.mean.double(), scaled.mean().reshape(1), rtol=1e-6, atol=1e-7
    )


def test_gzipped_files_load_the_same(tmp_path):
    ref = make_raw_folder(tmp_path / "gz", gz=True)
    data = load_dataset(cfg(tmp_path / "gz"))
    assert np.array_equal(data.x_train[:, 0].numpy(), ref["train"][0])
    assert data.y_test.tolist() == ref["t10k"][1].tolist()
    # the folder holding the files may itself be data.root
    data = load_dataset(cfg(tmp_path / "gz" / "MNIST" / "raw"))
    assert np.array_equal(data.x_test[:, 0].numpy(), ref["t10k"][0])


def test_subsets_name_digits_by_number(tmp_path):
    ref = make_raw_folder(tmp_path)
    data = load_dataset(cfg(tmp_path, classes=[7, 2], train_per_class=3, test_per_class=1))
    assert data.classes == ("7", "2") and data.class_counts() == ([3, 3], [1, 1])
    x_all, y_all = ref["train"]
    for x, y in zip(data.x_train[:, 0].numpy(), data.y_train.tolist(), strict=True):
        (i,) = np.flatnonzero((x_all == x).all(axis=(1, 2)))
        assert y_all[i] == (7, 2)[y]
    data = load_dataset(cfg(tmp_path, binary={"positive": 0, "negatives_per_positive": 1}))
    assert data.binary and data.classes == ("non-0", "0") and data.class_counts()[0] == [4, 4]


def test_missing_files_name_them(tmp_path):
    make_raw_folder(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(
        DataError,
        match=r"data.root: .*MNIST/raw lacks t10k-labels-idx1-ubyte \(dataset mnist expects "
        r"train-images-idx3-ubyte\[.gz\], .*set data.download: true",
    ):
        load_dataset(cfg(tmp_path))
    with pytest.raises(DataError, match=r"FashionMNIST/raw lacks train-images-idx3-ubyte, "):
        load_dataset(cfg(tmp_path, "fashion_mnist"))


def test_wrong_magic_truncated_and_bad_labels_are_one_line_errors(tmp_path):
    ref = make_raw_folder(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(idx_bytes(ref["train"][1]))  # a label file in place of the images
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte: magic number 0x00000801; expected 0x00000803 "
        r"\(IDX, uint8, 3 dimensions\)",
    ):
        load_dataset(cfg(tmp_path))
    images.write_bytes(idx_bytes(ref["train"][0])[:-5])
    with pytest.raises(
        DataError, match=r"31,355 bytes of values; the header's sizes \(40, 28, 28\) need 31,360"
    ):
        load_dataset(cfg(tmp_path))
    images.write_bytes(idx_bytes(ref["train"][0]))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(20, 10)))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: label 10 found; expected 0..9"):
        load_dataset(cfg(tmp_path))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(DataError, match=r"3 labels but .*t10k-images-idx3-ubyte holds 20 images"):
        load_dataset(cfg(tmp_path))
    gz = tmp_path / "gz" / "MNIST" / "raw"
    gz.mkdir(parents=True)
    for path in raw.iterdir():
        (gz / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes())[:30])
    with pytest.raises(DataError, match=r"\.gz: cannot read it, the file is truncated or corrupt"):
        load_dataset(cfg(tmp_path / "gz"))


def test_download_offline_is_a_one_line_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(
        DataError, match=r"data.download: could not download MNIST from https://.*online"
    ) as err:
        load_dataset(cfg(tmp_path, download=True))
    assert "\n" not in str(err.value)


def test_mnist_trains_offline_from_torchvision_raw_files(tmp_path):
    """`bnexp run` on MNIST's raw files: the bands are learnt (a smoke test of the whole path)."""
    make_raw_folder(tmp_path / "data", n={"train": 200, "t10k": 50})
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        yaml.safe_dump(
            {
                "name": "mnist",
                "data": {"dataset": "mnist", "root": str(tmp_path / "data")},
                "model": {"arch": "mlp", "hidden": [32], "norm": "torch"},
                "train": {"epochs": 15, "batch_size": 20, "lr": 0.1, "device": "cpu"},
            }
        )
    )
    result = CliRunner().invoke(app, ["run", str(exp), "--out", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(tmp_path / "results" / "mnist" / "summary.csv")
    assert df["final_test_acc"].iloc[0] > 0.8, df.iloc[0].to_dict()


def test_data_info_reports_the_raw_files(tmp_path):
    ref = make_raw_folder(tmp_path)
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"name: x\ndata: {{dataset: mnist, root: '{tmp_path}', classes: [1, 0]}}\n")
    result = CliRunner().invoke(app, ["data", "info", str(exp)])
    assert result.exit_code == 0, result.output
    assert (
        "mnist: train (8, 1, 28, 28) torch.uint8, test (4, 1, 28, 28), 2 classes" in result.output
    )
    x, y = ref["train"]
    mean = x[np.isin(y, [0, 1])].mean()  # the one channel of the subset's training images
    assert f"{mean:.2f}" in result.output, (mean, result.output)
    (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08")
    clear_cache()  # as a new process would
    result = CliRunner().invoke(app, ["data", "info", str(exp)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "magic number" in errors[0], result.output


def test_download_goes_through_torchvision_and_loads_what_it_wrote(tmp_path, monkeypatch):
    """data.download: torchvision's MNIST(download=True) fetches into root/MNIST/raw (here its
    fetcher writes our files, uncompressed as it extracts them)."""
    import torchvision.datasets.mnist as tv_mnist

    ref = make_raw_folder(tmp_path / "files")
    calls = []

    def fake(url, download_root, filename, md5):
        calls.append(url)
        src = tmp_path / "files" / "MNIST" / "raw" / filename.removesuffix(".gz")
        src.rename(Path(download_root) / src.name)

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake)
    data = load_dataset(cfg(tmp_path / "root", download=True))
    assert len(calls) == 4 and all(u.startswith(MNIST.mirrors[0]) for u in calls)
    assert np.array_equal(data.x_train[:, 0].numpy(), ref["train"][0])

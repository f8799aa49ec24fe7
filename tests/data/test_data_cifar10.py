"""dataset: cifar10 — files written here in torchvision's `cifar-10-batches-py` pickle layout."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bnexp.config import DataConfig
from bnexp.data import load_dataset
from bnexp.errors import DataError

pytestmark = pytest.mark.usefixtures("fresh_data_cache")  # each test loads its own files

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH = 40  # images per data_batch_i (10,000 in the real files)


def write_batch(
    path: Path, x_rows: np.ndarray, labels: list[int], bytes_keys: bool = False
) -> None:
    """One batch as the original files hold it: a pickled dict with data (N, 3072) uint8 and
    labels."""
    batch = {
        "batch_label": "training batch",
        "labels": labels,
        "data": x_rows,
        "filenames": [f"{i}.png" for i in range(len(labels))],
    }
    if bytes_keys:  # how a batch pickled by Python 2 reads without encoding="latin1"
        batch = {k.encode(): v for k, v in batch.items()}
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)


def make_cifar_folder(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """root/cifar-10-batches-py/ with 5 training batches and a test batch; labels cycle 0..9."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(1, 7):
        rows = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(PER_BATCH) + i) % 10]
        write_batch(
            folder / (f"data_batch_{i}" if i <= 5 else "test_batch"),
            rows,
            labels,
            bytes_keys=(i == 2),
        )
        xs.append(rows)
        ys.append(labels)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump(
            {"num_cases_per_batch": PER_BATCH, "label_names": NAMES, "num_vis": 3072}, f, protocol=2
        )
    return {
        "x_train": np.concatenate(xs[:5]).reshape(-1, 3, 32, 32),
        "y_train": np.concatenate(ys[:5]),
        "x_test": xs[5].reshape(-1, 3, 32, 32),
        "y_test": np.array(ys[5]),
    }


def cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="cifar10", root=str(root), **kw)


def test_pickle_layout_loads_as_nchw_uint8_with_the_files_labels(tmp_path, caplog):
    ref = make_cifar_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bnexp"):
        data = load_dataset(cfg(tmp_path))
    assert data.classes == tuple(NAMES) and not data.binary
    assert data.x_train.dtype == torch.uint8 and tuple(data.x_train.shape) == (
        5 * PER_BATCH,
        3,
        32,
        32,
    )
    assert np.array_equal(data.x_train.numpy(), ref["x_train"]) and np.array_equal(
        data.x_test.numpy(), ref["x_test"]
    )
    assert (
        data.y_train.tolist() == ref["y_train"].tolist()
        and data.y_test.tolist() == ref["y_test"].tolist()
    )
    # these files are not the 2009 release: said in the log, not silently used
    assert "differ from the official release (MD5)" in caplog.text
    # per-channel standardization with training statistics
    scaled = ref["x_train"] / 255.0
    want_mean, want_std = scaled.mean(axis=(0, 2, 3)), scaled.std(axis=(0, 2, 3))
    miss = max(
        np.abs(data.mean.numpy() - want_mean).max(), np.abs(data.std.numpy() - want_std).max()
    )
    assert miss < 1e-6, f"channel statistics off by {miss:.2e}"


def test_the_official_python2_form_loads_as_torchvision_reads_it(tmp_path, monkeypatch):
    """The 2009 files' form (Python 2 str, numpy.core.multiarray._reconstruct; py2pickle),
    through the restricted unpickler, against torchvision's CIFAR10 on the same files."""
    import torchvision.datasets.cifar as tv_cifar
    from py2pickle import dumps as py2_dumps  # tests/data is on sys.path (pytest rootdir)

    make_cifar_folder(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for path in folder.iterdir():  # our own files: re-written in Python 2's form
        obj = pickle.loads(path.read_bytes(), encoding="latin1")
        path.write_bytes(
            py2_dumps({str(k, "latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()})
        )
    data = load_dataset(cfg(tmp_path))
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # not the MD5s
    for train, x, y in ((True, data.x_train, data.y_train), (False, data.x_test, data.y_test)):
        ref = tv_cifar.CIFAR10(str(tmp_path), train=train, download=False)
        assert np.array_equal(x.numpy(), ref.data.transpose(0, 3, 1, 2))  # tv: (N, H, W, C)
        assert y.tolist() == list(ref.targets)
    assert data.classes == tuple(ref.classes) == tuple(NAMES)


def test_root_may_be_the_batches_folder_itself(tmp_path):
    ref = make_cifar_folder(tmp_path)
    data = load_dataset(cfg(tmp_path / "cifar-10-batches-py"))
    assert np.array_equal(data.x_test.numpy(), ref["x_test"])


def test_classes_subset_relabels_in_the_order_given(tmp_path):
    ref = make_cifar_folder(tmp_path)
    data = load_dataset(cfg(tmp_path, classes=["dog", "cat"], train_per_class=7, test_per_class=2))
    assert data.classes == ("dog", "cat")
    assert data.class_counts() == ([7, 7], [2, 2])
    # each kept image carries its new label: dog (5) -> 0, cat (3) -> 1
    for x, y in zip(data.x_train.numpy(), data.y_train.tolist(), strict=True):
        matches = np.flatnonzero((ref["x_train"] == x).all(axis=(1, 2, 3)))
        assert len(matches) == 1 and ref["y_train"][matches[0]] == (5, 3)[y]


def test_binary_cat_vs_noncat_draws_negatives_evenly(tmp_path):
    make_cifar_folder(tmp_path)
    data = load_dataset(
        cfg(tmp_path, binary={"positive": "cat", "negatives_per_positive": 1}, train_per_class=18)
    )
    assert data.binary and data.num_outputs == 1 and data.classes == ("non-cat", "cat")
    assert data.class_counts()[0] == [18, 18]  # 18 cats, 18 others: 2 from each of the 9 classes


def test_download_on_an_offline_machine_is_a_one_line_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(
        DataError,
        match=r"data.download: could not download CIFAR-10 from https://.*is the machine online",
    ) as err:
        load_dataset(cfg(tmp_path, download=True))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- errors


def test_missing_files_name_them_and_say_how_to_download(tmp_path):
    make_cifar_folder(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(
        DataError,
        match=r"lacks data_batch_4 .*set data.download: true on a machine that is online, "
        r"or download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ):
        load_dataset(cfg(tmp_path))
    with pytest.raises(DataError, match=r"lacks data_batch_1, data_batch_2, .*batches.meta"):
        load_dataset(cfg(tmp_path / "empty"))


def test_truncated_pickle_is_a_data_error(tmp_path):
    make_cifar_folder(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(
        DataError, match=r"data_batch_3: cannot unpickle it, the file is truncated or corrupt"
    ):
        load_dataset(cfg(tmp_path))


def test_missing_key_and_wrong_shape(tmp_path):
    make_cifar_folder(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with (folder / "test_batch").open("wb") as f:
        pickle.dump({"data": np.zeros((4, 3072), np.uint8)}, f)
    with pytest.raises(
        DataError, match=r"test_batch: missing key labels \(found: data; expected data, labels\)"
    ):
        load_dataset(cfg(tmp_path))
    write_batch(folder / "test_batch", np.zeros((4, 1024), np.uint8), [0, 1, 2, 3])
    with pytest.raises(
        DataError,
        match=r"test_batch: data is uint8 of shape \(4, 1024\); expected uint8 \(N, 3072\)",
    ):
        load_dataset(cfg(tmp_path))


def test_unknown_class_lists_the_valid_ones(tmp_path):
    make_cifar_folder(tmp_path)
    with pytest.raises(
        DataError,
        match=r"data.binary.positive: no class 'kitten' "
        r".*valid classes: airplane, automobile, bird, cat",
    ):
        load_dataset(cfg(tmp_path, binary={"positive": "kitten"}))


def test_subset_larger_than_the_data(tmp_path):
    make_cifar_folder(tmp_path)  # 20 images per class in training, 4 in test
    with pytest.raises(
        DataError,
        match=r"data.train_per_class: 21 images asked for, "
        r"but class 'airplane' in the training set of .* has only 20",
    ):
        load_dataset(cfg(tmp_path, train_per_class=21))
    # 4 cats x 10 = 40 negatives from 9 classes: 4 or 5 of each, but the test set has 4 per class
    with pytest.raises(
        DataError,
        match=r"data.binary.negatives_per_positive \(4 positives x 10 = 40 negatives from 9 "
        r"classes\): 5 images asked for, but class '\w+' in the test set of .* has only 4",
    ):
        load_dataset(
            cfg(
                tmp_path,
                binary={"positive": "cat", "negatives_per_positive": 10},
                train_per_class=2,
                test_per_class=4,
            )
        )

"""dataset: npz — users' own arrays, the subset keys, and the shared CIFAR-10 subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bnexp.config import DataConfig
from bnexp.data import clear_cache, load_dataset
from bnexp.errors import DataError

pytestmark = pytest.mark.usefixtures("fresh_data_cache")  # each test loads its own files

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_pair(root: Path, x_tr, y_tr, x_te, y_te, **extra) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / "train.npz", x=x_tr, y=y_tr, **extra)
    np.savez_compressed(root / "test.npz", x=x_te, y=y_te, **extra)
    return root / "train.npz", root / "test.npz"


def images(n_per_class: int, k: int = 4, size: int = 6, seed: int = 0):
    """k classes, n_per_class images each: uint8 (N, H, W, 3) random pixels, labels cycling
    0..k-1."""
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(k), n_per_class)
    x = rng.integers(0, 256, (len(y), size, size, 3), dtype=np.uint8)
    return x, y


def cfg(train: Path, test: Path, **kw) -> DataConfig:
    return DataConfig(dataset="npz", train=str(train), test=str(test), **kw)


def test_channels_last_images_load_as_nchw_uint8(tmp_path):
    x_tr, y_tr = images(5)
    x_te, y_te = images(2, seed=1)
    train, test = write_pair(tmp_path, x_tr, y_tr, x_te, y_te)
    data = load_dataset(cfg(train, test))
    assert data.x_train.dtype == torch.uint8 and np.array_equal(
        data.x_train.numpy(), x_tr.transpose(0, 3, 1, 2)
    )
    assert data.y_test.tolist() == y_te.tolist()
    assert data.classes == ("0", "1", "2", "3") and not data.binary


def test_float_vectors_are_standardized_per_feature_with_training_statistics(tmp_path):
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.normal(3, 2, (50, 7)), rng.normal(3, 2, (20, 7))
    train, test = write_pair(tmp_path, x_tr, np.arange(50) % 2, x_te, np.arange(20) % 2)
    data = load_dataset(cfg(train, test))
    want = (x_te - x_tr.mean(0)) / x_tr.std(0)
    got = data.prepare(data.x_test).numpy()
    assert data.x_test.dtype == torch.float32 and np.abs(got - want).max() < 1e-5, (
        f"max |diff| {np.abs(got - want).max():.2e}"
    )


def test_grey_images_get_one_channel_and_class_names_come_from_the_file(tmp_path):
    x = np.zeros((6, 5, 5), np.uint8)
    train, test = write_pair(
        tmp_path,
        x,
        np.array([0, 1, 2, 0, 1, 2]),
        x,
        np.array([0, 1, 2, 0, 1, 2]),
        classes=np.array(["a", "b", "c"]),
    )
    data = load_dataset(cfg(train, test))
    assert tuple(data.x_train.shape) == (6, 1, 5, 5) and data.classes == ("a", "b", "c")


def test_classes_subset_remaps_labels_in_the_order_given(tmp_path):
    x_tr, y_tr = images(10)
    train, test = write_pair(tmp_path, x_tr, y_tr, x_tr, y_tr)
    data = load_dataset(
        cfg(train, test, class_names=["w", "x", "y", "z"], classes=["z", "x"], train_per_class=4)
    )
    assert data.classes == ("z", "x") and data.class_counts() == ([4, 4], [10, 10])
    originals = {x.tobytes(): int(y) for x, y in zip(x_tr.transpose(0, 3, 1, 2), y_tr, strict=True)}
    for x, y in zip(data.x_train.numpy(), data.y_train.tolist(), strict=True):
        assert originals[x.tobytes()] == (3, 1)[y]


def test_subsets_are_deterministic_by_seed_and_shared_between_subsets(tmp_path):
    x_tr, y_tr = images(30)
    train, test = write_pair(tmp_path, x_tr, y_tr, x_tr[:8], y_tr[:8])
    names = ["w", "x", "y", "z"]
    a = load_dataset(cfg(train, test, class_names=names, train_per_class=5, seed=1))
    clear_cache()
    b = load_dataset(cfg(train, test, class_names=names, train_per_class=5, seed=1))
    c = load_dataset(cfg(train, test, class_names=names, train_per_class=5, seed=2))
    assert torch.equal(a.x_train, b.x_train), "same seed, different images"
    assert not torch.equal(a.x_train, c.x_train), "another seed drew the same images"
    with pytest.raises(ValueError, match="greater than or equal to 0"):  # refused by validate
        cfg(train, test, class_names=names, train_per_class=5, seed=-1)
    # the z images of a {x, z} subset are the z images of the all-classes subset (same seed, n)
    d = load_dataset(
        cfg(train, test, class_names=names, classes=["x", "z"], train_per_class=5, seed=1)
    )
    assert torch.equal(a.x_train[a.y_train == 3], d.x_train[d.y_train == 1])


def test_binary_balance_and_even_negatives(tmp_path):
    x_tr, y_tr = images(30, k=5)
    train, test = write_pair(tmp_path, x_tr, y_tr, x_tr, y_tr)
    data = load_dataset(
        cfg(
            train,
            test,
            class_names=list("abcde"),
            binary={"positive": "c", "negatives_per_positive": 2},
            train_per_class=10,
        )
    )
    assert data.binary and data.classes == ("non-c", "c")
    assert data.class_counts()[0] == [
        20,
        10,
    ]  # 10 positives, 2 x 10 negatives: 5 from each of a, b, d, e
    originals = {x.tobytes(): int(y) for x, y in zip(x_tr.transpose(0, 3, 1, 2), y_tr, strict=True)}
    sources = [originals[x.tobytes()] for x in data.x_train[data.y_train == 0].numpy()]
    assert np.bincount(sources, minlength=5).tolist() == [5, 5, 0, 5, 5]


# --------------------------------------------------------------------------- errors


def test_missing_file_says_what_is_expected(tmp_path):
    with pytest.raises(
        DataError, match=r"data.train: file .*nope.npz not found \(expected an .npz file holding x"
    ):
        load_dataset(cfg(tmp_path / "nope.npz", tmp_path / "nope.npz"))


def test_truncated_and_non_npz_files(tmp_path):
    x, y = images(4)
    train, test = write_pair(tmp_path, x, y, x, y)
    test.write_bytes(test.read_bytes()[:300])
    with pytest.raises(
        DataError, match=r"data.test: cannot read .*test.npz, the file is truncated or corrupt"
    ):
        load_dataset(cfg(train, test))
    np.save(tmp_path / "plain.npy", x)
    with pytest.raises(DataError, match=r"plain.npy is a single .npy array; expected an .npz"):
        load_dataset(cfg(train, tmp_path / "plain.npy"))


def test_missing_arrays_and_mismatched_shapes(tmp_path):
    x, y = images(4)
    np.savez(tmp_path / "noy.npz", x=x, labels=y)
    train, test = write_pair(tmp_path / "ok", x, y, x, y)
    with pytest.raises(DataError, match=r"has no array y \(found: x, labels; expected"):
        load_dataset(cfg(train, tmp_path / "noy.npz"))
    np.savez(tmp_path / "short.npz", x=x, y=y[:-1])
    with pytest.raises(DataError, match=r"16 images but labels of shape \(15,\)"):
        load_dataset(cfg(tmp_path / "short.npz", test))
    np.savez(tmp_path / "small.npz", x=x[:, :4, :4], y=y)
    with pytest.raises(
        DataError, match=r"holds examples of shape \(3, 4, 4\) .* but .* holds \(3, 6, 6\)"
    ):
        load_dataset(cfg(train, tmp_path / "small.npz"))
    np.savez(tmp_path / "nchw.npz", x=x.transpose(0, 3, 1, 2), y=y)
    with pytest.raises(
        DataError, match=r"looks like channels first \(N, C, H, W\); expected channels last"
    ):
        load_dataset(cfg(tmp_path / "nchw.npz", test))


def test_unknown_class_and_too_few_names(tmp_path):
    x, y = images(4)
    train, test = write_pair(tmp_path, x, y, x, y)
    with pytest.raises(
        DataError, match=r"data.classes: no class 'cat' .*valid classes: 0, 1, 2, 3\)"
    ):
        load_dataset(cfg(train, test, classes=["cat", "0"]))
    with pytest.raises(
        DataError, match=r"data.class_names names 2 classes, but the labels go up to 3"
    ):
        load_dataset(cfg(train, test, class_names=["a", "b"]))


def test_subset_larger_than_the_data(tmp_path):
    x, y = images(4)
    train, test = write_pair(tmp_path, x, y, x, y)
    with pytest.raises(
        DataError,
        match=r"data.test_per_class: 5 images asked for, "
        r"but class '0' in the test set of .* has only 4",
    ):
        load_dataset(cfg(train, test, test_per_class=5))


# ------------------------------------------------------------------ the shared CIFAR-10 subset


def test_shared_cifar_subset_class_balance(shared_data):
    folder = shared_data / "cifar10-subset"
    full = load_dataset(cfg(folder / "train.npz", folder / "test.npz", class_names=CIFAR))
    assert tuple(full.x_train.shape) == (10000, 3, 32, 32) and full.class_counts() == (
        [1000] * 10,
        [1000] * 10,
    )
    # README: train pixel means (125.82, 123.19, 114.00), std (62.74, 62.23, 66.70)
    mean, std = (full.mean * 255).tolist(), (full.std * 255).tolist()
    miss = max(
        abs(a - b)
        for a, b in zip(mean + std, [125.82, 123.19, 114.00, 62.74, 62.23, 66.70], strict=True)
    )
    assert miss < 0.01, f"channel statistics off by {miss:.3f}: mean {mean}, std {std}"

    sub = load_dataset(
        cfg(
            folder / "train.npz",
            folder / "test.npz",
            class_names=CIFAR,
            train_per_class=300,
            test_per_class=50,
        )
    )
    assert sub.class_counts() == ([300] * 10, [50] * 10)

    cats = load_dataset(
        cfg(
            folder / "train.npz", folder / "test.npz", class_names=CIFAR, binary={"positive": "cat"}
        )
    )
    train, test = cats.class_counts()
    assert (train, test) == ([1000, 1000], [1000, 1000]), (
        f"non-cat/cat counts train {train}, test {test}"
    )
    # negatives evenly from the 9 other classes: 1000 = 111 x 9 + 1, so 111 or 112 of each
    full_x = {
        x.tobytes(): int(y)
        for x, y in zip(full.x_train.numpy(), full.y_train.tolist(), strict=True)
    }
    sources = np.bincount(
        [full_x[x.tobytes()] for x in cats.x_train[cats.y_train == 0].numpy()], minlength=10
    )
    assert sources[3] == 0 and set(np.delete(sources, 3).tolist()) <= {111, 112}, (
        f"negatives per class {sources.tolist()}"
    )


def test_classes_may_be_named_by_label_when_the_file_has_no_names(tmp_path):
    x, y = images(6)
    train, test = write_pair(tmp_path, x, y, x, y)
    data = load_dataset(
        cfg(train, test, classes=[3, 1], train_per_class=2)
    )  # YAML `classes: [3, 1]`
    assert data.classes == ("3", "1") and data.class_counts() == ([2, 2], [6, 6])
    cats = load_dataset(cfg(train, test, binary={"positive": 2}))
    assert cats.classes == ("non-2", "2") and cats.class_counts()[0] == [6, 6]


@pytest.mark.parametrize(
    "stray, expected",
    [
        (15, r"labels go up to 15 but 5 of 0..15 have no example \(10, 11, 12, 13, 14\)"),
        (1000, r"label 1000 found; expected class indices 0..K-1 with K <= 1,000"),
        (100_000, r"label 100000 found"),
        (2**40, r"label 1099511627776 found"),
    ],
)
def test_stray_label_without_names_is_one_line_fast(tmp_path, stray, expected):
    """A label far above the others (and no class names) is a broken file, not 1,001 or 2**40
    classes: refused before anything is sized by it (was a 100,000-row table, MemoryError)."""
    import time

    from typer.testing import CliRunner

    from bnexp.cli import app

    x, y = images(4, k=10)
    y = y.astype(np.int64)
    y[5] = stray
    train, test = write_pair(tmp_path, x, y, x, y)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=expected):
        load_dataset(cfg(train, test))
    assert time.perf_counter() - t0 < 5
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"name: x\ndata: {{dataset: npz, train: {train}, test: {test}}}\n")
    result = CliRunner().invoke(app, ["data", "info", str(exp)])
    assert result.exit_code == 2 and result.output.count("error:") == 1, result.output
    # with names for every label up to the stray one, it is a class like any other
    if stray == 15:
        names = [f"c{i}" for i in range(16)]
        assert len(load_dataset(cfg(train, test, class_names=names)).classes) == 16

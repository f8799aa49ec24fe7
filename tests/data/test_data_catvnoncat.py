"""dataset: catvnoncat — files in the course's HDF5 layout written here, and the real ones."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from bnexp.config import DataConfig
from bnexp.data import load_dataset
from bnexp.errors import DataError

pytestmark = pytest.mark.usefixtures("fresh_data_cache")  # each test loads its own files


def write_course_file(
    path: Path, split: str, x: np.ndarray, y: np.ndarray, classes=(b"non-cat", b"cat")
) -> None:
    """The course's layout: {split}_set_x uint8 (N, H, W, 3), {split}_set_y int64,
    list_classes |S7."""
    with h5py.File(path, "w") as f:
        f.create_dataset(f"{split}_set_x", data=x)
        f.create_dataset(f"{split}_set_y", data=y)
        if classes is not None:
            f.create_dataset("list_classes", data=np.array(classes, dtype="S7"))


def make_course_folder(
    root: Path, n_train: int = 12, n_test: int = 6, size: int = 8, seed: int = 0
):
    rng = np.random.default_rng(seed)
    x_tr = rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8)
    x_te = rng.integers(0, 256, (n_test, size, size, 3), dtype=np.uint8)
    y_tr = (np.arange(n_train) % 3 == 0).astype(np.int64)
    y_te = (np.arange(n_test) % 2 == 0).astype(np.int64)
    root.mkdir(parents=True, exist_ok=True)
    write_course_file(root / "train_catvnoncat.h5", "train", x_tr, y_tr)
    write_course_file(root / "test_catvnoncat.h5", "test", x_te, y_te)
    return x_tr, y_tr, x_te, y_te


def cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="catvnoncat", root=str(root), **kw)


def test_layout_labels_and_scaling_match_a_hand_computation(tmp_path):
    x_tr, y_tr, x_te, y_te = make_course_folder(tmp_path)
    data = load_dataset(cfg(tmp_path))
    assert data.binary and data.num_outputs == 1 and data.classes == ("non-cat", "cat")
    assert data.x_train.dtype == torch.uint8, "pixels must stay uint8 in memory"
    # NCHW: x_train[n, c, h, w] is the file's x[n, h, w, c]
    assert np.array_equal(data.x_train.numpy(), x_tr.transpose(0, 3, 1, 2))
    assert np.array_equal(data.x_test.numpy(), x_te.transpose(0, 3, 1, 2))
    assert data.y_train.tolist() == y_tr.tolist() and data.y_test.tolist() == y_te.tolist()
    # per batch: /255, then per-channel standardization with training statistics (biased std)
    scaled = x_tr.astype(np.float64) / 255
    mean, std = scaled.mean(axis=(0, 1, 2)), scaled.std(axis=(0, 1, 2))
    want = (x_te.astype(np.float64) / 255 - mean) / std
    got = data.prepare(data.x_test).numpy().transpose(0, 2, 3, 1)
    assert np.abs(got - want).max() < 1e-5, f"max |diff| {np.abs(got - want).max():.2e}"


def test_without_standardization_pixels_are_scaled_to_unit_range(tmp_path):
    x_tr, *_ = make_course_folder(tmp_path)
    data = load_dataset(cfg(tmp_path, standardize=False))
    got = data.prepare(data.x_train).numpy().transpose(0, 2, 3, 1)
    assert np.abs(got - x_tr / 255).max() < 1e-6, f"max |diff| {np.abs(got - x_tr / 255).max():.2e}"
    assert 0.0 <= got.min() and got.max() <= 1.0


def test_mlp_gets_flat_inputs_and_cnn_gets_nchw(tmp_path):
    from bnexp.config import ModelConfig
    from bnexp.nn.models import build_model

    make_course_folder(tmp_path, size=8)
    data = load_dataset(cfg(tmp_path))
    xb = data.prepare(data.x_train[:4])
    mlp = build_model(
        ModelConfig(arch="mlp", hidden=[20, 7, 5]), data.input_shape, data.num_outputs
    )
    cnn = build_model(ModelConfig(arch="cnn", channels=[4]), data.input_shape, data.num_outputs)
    assert mlp.blocks[0].weight.in_features == 8 * 8 * 3
    assert mlp(xb).shape == (4, 1) and cnn(xb).shape == (4, 1)


# --------------------------------------------------------------------------- errors


def test_missing_folder_and_file_name_the_expected_files(tmp_path):
    with pytest.raises(
        DataError,
        match=r"folder .*nowhere not found .*train_catvnoncat\.h5 and test_catvnoncat\.h5",
    ):
        load_dataset(cfg(tmp_path / "nowhere"))
    make_course_folder(tmp_path)
    (tmp_path / "test_catvnoncat.h5").unlink()
    with pytest.raises(
        DataError, match=r"test_catvnoncat\.h5 not found \(dataset catvnoncat expects"
    ):
        load_dataset(cfg(tmp_path))


def test_truncated_file_is_a_one_line_data_error(tmp_path):
    make_course_folder(tmp_path, n_train=40, size=16)
    path = tmp_path / "train_catvnoncat.h5"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load_dataset(cfg(tmp_path))
    assert "\n" not in str(err.value)


def test_garbage_file_is_a_data_error(tmp_path):
    make_course_folder(tmp_path)
    (tmp_path / "test_catvnoncat.h5").write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(DataError, match="test_catvnoncat.h5: cannot read it as HDF5"):
        load_dataset(cfg(tmp_path))


def test_missing_key_lists_what_was_found(tmp_path):
    make_course_folder(tmp_path)
    with h5py.File(tmp_path / "train_catvnoncat.h5", "a") as f:
        del f["train_set_y"]
    with pytest.raises(
        DataError, match=r"missing key train_set_y \(found: list_classes, train_set_x; expected"
    ):
        load_dataset(cfg(tmp_path))


@pytest.mark.parametrize(
    "x_shape, y_len, match",
    [
        ((10, 8, 8, 3), 9, r"10 images but labels of shape \(9,\)"),
        ((10, 8, 8), 10, r"has shape \(10, 8, 8\); expected \(N, height, width, 3\)"),
        ((10, 8, 8, 4), 10, r"expected \(N, height, width, 3\)"),
    ],
)
def test_shapes_that_do_not_match(tmp_path, x_shape, y_len, match):
    make_course_folder(tmp_path)
    write_course_file(
        tmp_path / "train_catvnoncat.h5",
        "train",
        np.zeros(x_shape, np.uint8),
        np.zeros(y_len, np.int64),
    )
    with pytest.raises(DataError, match=match):
        load_dataset(cfg(tmp_path))


def test_train_and_test_image_sizes_must_agree(tmp_path):
    make_course_folder(tmp_path, size=8)
    write_course_file(
        tmp_path / "test_catvnoncat.h5",
        "test",
        np.zeros((4, 16, 16, 3), np.uint8),
        np.zeros(4, np.int64),
    )
    with pytest.raises(
        DataError, match=r"training examples have shape \(3, 8, 8\) but test examples \(3, 16, 16\)"
    ):
        load_dataset(cfg(tmp_path))


def test_labels_other_than_0_and_1_are_refused(tmp_path):
    make_course_folder(tmp_path)
    write_course_file(
        tmp_path / "train_catvnoncat.h5",
        "train",
        np.zeros((3, 8, 8, 3), np.uint8),
        np.array([0, 1, 2]),
    )
    with pytest.raises(DataError, match="holds label 2; expected 0 .non-cat. or 1 .cat."):
        load_dataset(cfg(tmp_path))


# --------------------------------------------------------------------------- the real files


def test_real_course_files_shapes_and_label_counts(shared_data):
    data = load_dataset(cfg(shared_data / "catvnoncat"))
    assert tuple(data.x_train.shape) == (209, 3, 64, 64) and data.x_train.dtype == torch.uint8
    assert tuple(data.x_test.shape) == (50, 3, 64, 64)
    assert data.classes == ("non-cat", "cat")
    train, test = data.class_counts()
    assert (train, test) == ([137, 72], [17, 33]), f"class counts train {train}, test {test}"
    # pixel means of the README (103.0 and 107.4 over all values, 0..255)
    mean_tr, mean_te = data.x_train.double().mean().item(), data.x_test.double().mean().item()
    assert abs(mean_tr - 103.0) < 0.05 and abs(mean_te - 107.4) < 0.05, (
        f"means {mean_tr:.3f}, {mean_te:.3f}"
    )

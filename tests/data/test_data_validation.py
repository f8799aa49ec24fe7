"""data.val_fraction: the validation split carved from the training set, for every dataset.

References: class counts computed by hand, the unsplit load of the same data (the split is a
partition of its training set), and statistics recomputed here from the training part left."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from bnexp.config import DataConfig
from bnexp.data import load_dataset
from bnexp.data.arrays import moments
from bnexp.data.validation import stratified_split
from bnexp.errors import DataError

pytestmark = pytest.mark.usefixtures("fresh_data_cache")


def _counts(y: torch.Tensor, k: int) -> list[int]:
    return torch.bincount(y.cpu(), minlength=k).tolist()


def _rows(x: torch.Tensor) -> list[bytes]:
    """Each example's bytes, sorted: a multiset of examples."""
    return sorted(r.numpy().tobytes() for r in x.reshape(len(x), -1))


def test_each_class_gives_its_share_and_keeps_a_training_example():
    # classes of 10, 20, 3 and 1 examples, interleaved; 0.25 of each, rounded half up:
    # 2.5 -> 3, 5 -> 5, 0.75 -> 1, 0.25 -> 0 (a class of one keeps its example for training)
    y = torch.tensor([0] * 10 + [1] * 20 + [2] * 3 + [3])[torch.randperm(34)]
    train, val = stratified_split(y, 0.25, seed=7)
    assert _counts(y[val], 4) == [3, 5, 1, 0]
    assert _counts(y[train], 4) == [7, 15, 2, 1]
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(34))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    # a fraction near 1 still leaves every class a training example
    train, val = stratified_split(y, 0.99, seed=7)
    assert _counts(y[train], 4) == [1, 1, 1, 1]


def test_the_split_is_fixed_by_its_seed_and_not_by_the_global_rng():
    y = torch.arange(200) % 4
    torch.manual_seed(0)  # what train.seed 0 sets (bnexp.training.step.set_determinism)
    a = stratified_split(y, 0.1, seed=3)
    torch.manual_seed(1)  # train.seed 1
    b = stratified_split(y, 0.1, seed=3)
    c = stratified_split(y, 0.1, seed=4)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])


def test_digits_split_is_a_stratified_partition_standardized_on_the_training_part():
    full = load_dataset(DataConfig(standardize=False))  # pixels / 16, the unsplit training set
    data = load_dataset(DataConfig(val_fraction=0.1))
    n_full = _counts(full.y_train, 10)
    assert _counts(data.y_val, 10) == [int(np.floor(0.1 * n + 0.5)) for n in n_full]
    assert [a + b for a, b in zip(_counts(data.y_train, 10), _counts(data.y_val, 10))] == n_full
    # the same examples (unscaled): the split partitions the training set; the test set is kept
    raw = load_dataset(DataConfig(val_fraction=0.1, standardize=False))
    assert _rows(torch.cat([raw.x_train, raw.x_val])) == _rows(full.x_train)
    assert torch.equal(raw.x_test, full.x_test)
    # per pixel, with the statistics of the training part left (digits' own convention)
    mean, std = raw.x_train.double().mean(0), raw.x_train.double().std(0, correction=0)
    std[std == 0] = 1
    for got, x in ((data.x_train, raw.x_train), (data.x_val, raw.x_val), (data.x_test, raw.x_test)):
        assert_close(got, ((x - mean) / std).float(), rtol=1e-5, atol=1e-5)
    again = load_dataset(DataConfig(val_fraction=0.1, seed=1))
    assert not torch.equal(again.y_val, data.y_val) or not torch.equal(again.x_val, data.x_val)


def test_catvnoncat_keeps_uint8_and_takes_statistics_from_the_training_part(shared_data):
    root = shared_data / "catvnoncat"
    full = load_dataset(DataConfig(dataset="catvnoncat", root=str(root)))
    data = load_dataset(DataConfig(dataset="catvnoncat", root=str(root), val_fraction=0.1))
    # 137 non-cats and 72 cats: round(13.7) = 14 and round(7.2) = 7 held out
    assert _counts(data.y_val, 2) == [14, 7] and _counts(data.y_train, 2) == [123, 65]
    assert data.x_val.dtype == torch.uint8 and data.binary
    assert _rows(torch.cat([data.x_train, data.x_val])) == _rows(full.x_train)
    assert not set(_rows(data.x_val)) & set(_rows(data.x_train))  # the course's images differ
    m, s = moments(data.x_train.numpy())
    assert_close(data.mean, torch.from_numpy(m / 255).float())
    assert_close(data.std, torch.from_numpy(s / 255).float())
    assert not torch.allclose(data.mean, full.mean, rtol=0, atol=1e-4)  # not the whole set's


def test_cifar_npz_subset_holds_out_a_tenth_of_each_class(shared_data):
    folder = shared_data / "cifar10-subset"
    cfg = {"dataset": "npz", "train": str(folder / "train.npz"), "test": str(folder / "test.npz")}
    cfg |= {"train_per_class": 500, "test_per_class": 200}
    full = load_dataset(DataConfig(**cfg))
    data = load_dataset(DataConfig(**cfg, val_fraction=0.1))
    assert _counts(data.y_train, 10) == [450] * 10 and _counts(data.y_val, 10) == [50] * 10
    assert _rows(torch.cat([data.x_train, data.x_val])) == _rows(full.x_train)
    assert not set(_rows(data.x_val)) & set(_rows(data.x_train))
    m, _ = moments(data.x_train.numpy())
    assert_close(data.mean, torch.from_numpy(m / 255).float())
    # ready() prepares the validation images as it does the others
    ready = data.ready(max_bytes=2**40)
    assert ready.x_val.dtype == torch.float32
    assert_close(ready.x_val[:5], data.prepare(data.x_val[:5]))


def test_float_vectors_are_standardized_per_feature_on_the_training_part(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(3, 2, (40, 5)).astype(np.float32), np.repeat([0, 1], 20)
    np.savez(tmp_path / "tr.npz", x=x, y=y)
    np.savez(tmp_path / "te.npz", x=x[:6], y=y[:6])
    cfg = {"dataset": "npz", "train": str(tmp_path / "tr.npz"), "test": str(tmp_path / "te.npz")}
    data = load_dataset(DataConfig(**cfg, val_fraction=0.25))
    assert _counts(data.y_val, 2) == [5, 5]
    train_idx, _ = stratified_split(torch.from_numpy(y), 0.25, seed=0)
    part = x[train_idx.numpy()].astype(np.float64)
    mean, std = part.mean(0), part.std(0)
    assert_close(data.x_test, torch.from_numpy((x[:6] - mean) / std).float())
    assert_close(data.x_train.mean(0), torch.zeros(5), rtol=0, atol=1e-5)


def test_a_fraction_that_holds_out_nothing_is_a_one_line_error():
    with pytest.raises(DataError, match=r"data.val_fraction: 0.001 of 1347 training examples"):
        load_dataset(DataConfig(val_fraction=0.001))

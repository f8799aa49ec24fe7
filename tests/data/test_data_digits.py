"""dataset: digits — scikit-learn's split, cached on disk so later loads skip scikit-learn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bnexp.config import DataConfig
from bnexp.data import digits

pytestmark = pytest.mark.usefixtures("fresh_data_cache")

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "cfg",
    [DataConfig(), DataConfig(seed=3, test_fraction=0.4, standardize=False)],
    ids=["default", "seed3-0.4-raw"],
)
def test_a_cached_load_is_the_split_scikit_learn_computes(tmp_path, monkeypatch, cfg):
    monkeypatch.setenv("BNEXP_CACHE_DIR", str(tmp_path))
    want = digits._split(cfg)  # the reference: computed with scikit-learn now
    first = digits.load_digits(cfg)  # computes and writes the cache
    assert digits.cache_path(cfg).is_file()
    second = digits.load_digits(cfg)  # reads it
    for data in (first, second):
        for key in ("x_train", "y_train", "x_test", "y_test"):
            got = getattr(data, key)
            assert torch.equal(got, torch.from_numpy(want[key])), key
    assert first.x_train.shape == (1347 if cfg.test_fraction == 0.25 else 1078, 1, 8, 8)


def test_configs_that_split_differently_get_their_own_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BNEXP_CACHE_DIR", str(tmp_path))
    paths = {digits.cache_path(c) for c in (DataConfig(), DataConfig(seed=1))}
    paths.add(digits.cache_path(DataConfig(standardize=False)))
    assert len(paths) == 3


def test_an_unreadable_cache_file_is_recomputed(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("BNEXP_CACHE_DIR", str(tmp_path))
    cfg = DataConfig()
    digits.cache_path(cfg).write_bytes(b"not an npz")
    data = digits.load_digits(cfg)
    assert torch.equal(data.y_test, torch.from_numpy(digits._split(cfg)["y_test"]))
    assert "unreadable" in caplog.text
    with np.load(digits.cache_path(cfg)) as f:  # rewritten whole
        assert f["x_train"].shape == (1347, 1, 8, 8)


def test_a_second_process_loads_digits_without_importing_scikit_learn(tmp_path):
    env = {**os.environ, "BNEXP_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    code = (
        "import sys; from bnexp.config import DataConfig; from bnexp.data import load_dataset; "
        "d = load_dataset(DataConfig()); print(len(d.x_train), 'sklearn' in sys.modules)"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert outs == [["1347", "True"], ["1347", "False"]]

"""Data config keys, loading once per process, `bnexp data info`, one-line errors from the CLI,
and one epoch of every shipped data config on the real files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_data_catvnoncat import make_course_folder  # tests/ is on sys.path (pytest rootdir)
from typer.testing import CliRunner

from bnexp.cli import app
from bnexp.config import ConfigError, DataConfig, experiment_from_dict, load_experiment
from bnexp.data import Dataset, load_dataset

pytestmark = pytest.mark.usefixtures("fresh_data_cache")  # each test loads its own files

REPO = Path(__file__).resolve().parents[2]
CIFAR_CONFIGS = ["cifar10_cat_vs_noncat", "cifar10_batch_sweep"]


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"dataset": "digits", "download": True},
            "data.download applies only to dataset cifar10, cifar100, mnist, fashion_mnist or svhn "
            "(dataset is digits)",
        ),
        (
            {"dataset": "catvnoncat"},
            "dataset catvnoncat needs data.root (the folder holding train_catvnoncat.h5 and "
            "test_catvnoncat.h5)",
        ),
        (
            {"dataset": "catvnoncat", "root": "d", "classes": ["cat", "dog"]},
            "data.classes applies only to dataset cifar10, npz, cifar100, mnist, fashion_mnist, "
            "svhn or imagefolder (dataset is catvnoncat)",
        ),
        ({"dataset": "npz", "train": "a.npz"}, "dataset npz needs data.test"),
        (
            {"dataset": "npz", "train": "a", "test": "b", "root": "r"},
            "data.root applies only to dataset catvnoncat, cifar10, cifar100, mnist, "
            "fashion_mnist, svhn or imagefolder (dataset is npz)",
        ),
        (
            {"dataset": "cifar10", "root": "r", "classes": ["cat", "cat", "dog"]},
            "data.classes lists cat more than once",
        ),
        (
            {"dataset": "cifar10", "root": "r", "classes": ["cat"]},
            "data.classes needs at least 2 classes",
        ),
        (
            {
                "dataset": "cifar10",
                "root": "r",
                "classes": ["dog", "bird"],
                "binary": {"positive": "cat"},
            },
            "data.binary.positive 'cat' is not in data.classes",
        ),
        (
            {
                "dataset": "cifar10",
                "root": "r",
                "binary": {"positive": "cat", "negatives_per_positive": 0},
            },
            "data.binary.negatives_per_positive: Input should be greater than 0",
        ),
        (
            {"dataset": "cifar10", "root": "r", "binary": {"positve": "cat"}},
            "data.binary.positve: unknown key; did you mean 'positive'?",
        ),
    ],
)
def test_data_keys_are_checked_against_the_dataset(data, message):
    with pytest.raises(ConfigError) as err:
        experiment_from_dict({"data": data})
    assert message in str(err.value), str(err.value)


def test_config_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ndata:\n  dataset: npz\n  train: a.npz\n")
    with pytest.raises(ConfigError, match=r"exp.yaml:2: data: dataset npz needs data.test"):
        load_experiment(path)


def test_every_shipped_data_config_validates():
    for name in ["catvnoncat_batch_sweep", *CIFAR_CONFIGS]:
        exp, _ = load_experiment(REPO / "configs" / f"{name}.yaml")
        assert exp.data.dataset in ("catvnoncat", "npz")
    exp, _ = load_experiment(REPO / "configs" / "catvnoncat_batch_sweep.yaml")
    assert exp.model.hidden == [20, 7, 5] and exp.sweep["train.batch_size"] == [16, 32, 64, 209]
    assert (
        exp.sweep["model.norm"] == ["none", "custom", "torch"] and len(exp.sweep["train.seed"]) == 5
    )


# --------------------------------------------------------------------------- loaded once


def test_loaded_once_per_config_and_once_per_device(tmp_path, monkeypatch):
    import bnexp.data.catvnoncat as module

    make_course_folder(tmp_path)
    calls = []
    real = module.load_catvnoncat
    monkeypatch.setattr(module, "load_catvnoncat", lambda cfg: calls.append(cfg) or real(cfg))
    cfg = DataConfig(dataset="catvnoncat", root=str(tmp_path))
    a, b, c = (
        load_dataset(cfg),
        load_dataset(DataConfig(dataset="catvnoncat", root=str(tmp_path))),
        load_dataset(cfg, "cpu"),
    )
    assert a is b is c and len(calls) == 1
    # another device: one copy, reused (the meta device stands in for a GPU here)
    m1, m2 = load_dataset(cfg, "meta"), load_dataset(cfg, "meta")
    assert m1 is m2 and m1.x_train.device.type == "meta" and len(calls) == 1
    load_dataset(DataConfig(dataset="catvnoncat", root=str(tmp_path), standardize=False))
    assert len(calls) == 2


def test_a_sweep_reads_its_data_once(tmp_path, monkeypatch):
    import bnexp.data.catvnoncat as module

    make_course_folder(tmp_path / "data")
    calls = []
    real = module.load_catvnoncat
    monkeypatch.setattr(module, "load_catvnoncat", lambda cfg: calls.append(cfg) or real(cfg))
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        yaml.safe_dump(
            {
                "name": "once",
                "data": {"dataset": "catvnoncat", "root": str(tmp_path / "data")},
                "model": {"hidden": [4]},
                "train": {"epochs": 1, "batch_size": 4, "device": "cpu"},
                "sweep": {"model.norm": ["none", "torch"], "train.seed": [0, 1]},
            }
        )
    )
    # one worker process: the data are cached per process (each pool worker loads once)
    result = cli("run", str(exp), "--out", str(tmp_path / "results"), "--workers", "1")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "results" / "once" / "summary.csv")) == 4 and len(calls) == 1


# --------------------------------------------------------------------------- CLI


def test_run_with_missing_data_prints_one_line_and_exits_2(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "name: nodata\ndata: {dataset: catvnoncat, root: "
        + str(tmp_path / "missing")
        + "}\ntrain: {epochs: 1}\n"
    )
    result = cli("run", str(exp), "--out", str(tmp_path / "results"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and re.search(
        r"data.root: folder .*missing not found \(dataset catvnoncat expects", lines[0]
    ), result.output
    assert not (tmp_path / "results" / "nodata" / "runs").exists() or not any(
        (tmp_path / "results" / "nodata" / "runs").iterdir()
    )


def test_run_with_a_truncated_file_prints_one_line_and_exits_2(tmp_path):
    make_course_folder(tmp_path / "data", n_train=40, size=16)
    path = tmp_path / "data" / "train_catvnoncat.h5"
    path.write_bytes(path.read_bytes()[:3000])
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"name: broken\ndata: {{dataset: catvnoncat, root: {tmp_path / 'data'}}}\n")
    result = cli("run", str(exp), "--out", str(tmp_path / "results"))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and "truncated or corrupt" in lines[0], result.output


def test_data_info_prints_shapes_counts_statistics_and_memory(tmp_path):
    x_tr, *_ = make_course_folder(tmp_path / "data")
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: info\ndata: {dataset: catvnoncat, root: data}\n")
    result = cli("data", "info", str(exp), "--set", f"data.root={tmp_path / 'data'}")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "catvnoncat: train (12, 3, 8, 8) torch.uint8, test (6, 3, 8, 8)" in out
    assert re.search(r"non-cat\s*│\s*8\s*│\s*3", out) and re.search(
        r"\bcat\s*│\s*4\s*│\s*3", out
    ), out
    red_mean = x_tr[..., 0].mean()
    assert re.search(rf"train\s*│\s*R\s*│\s*{red_mean:.2f}", out), (
        f"red mean {red_mean:.2f} not in\n{out}"
    )
    assert "memory:" in out and "MiB" in out


def test_data_info_bad_file_is_one_line_exit_2(tmp_path):
    make_course_folder(tmp_path)
    (tmp_path / "test_catvnoncat.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"data: {{dataset: catvnoncat, root: {tmp_path}}}\n")
    result = cli("data", "info", str(exp))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(error_lines(result.output)) == 1, result.output


# ------------------------------------------------------------------ shipped configs, real data


def run_config(name: str, out: Path, *overrides: str) -> pd.DataFrame:
    """`bnexp run configs/<name>.yaml` for one epoch on the CPU; its summary.csv."""
    result = cli(
        "run",
        str(REPO / "configs" / f"{name}.yaml"),
        "--out",
        str(out),
        "--set",
        "train.epochs=1",
        "--set",
        "train.device=cpu",
        *(a for o in overrides for a in ("--set", o)),
    )
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / Path(name).name / "summary.csv")


@pytest.mark.slow
def test_catvnoncat_config_one_epoch_on_the_course_files(shared_data, tmp_path):
    df = run_config(
        "catvnoncat_batch_sweep",
        tmp_path,
        f"data.root={shared_data / 'catvnoncat'}",
        "sweep.train.batch_size=[64, 209]",
        "sweep.train.seed=[0]",
    )
    assert len(df) == 6 and set(df["norm"]) == {"none", "custom", "torch"}
    assert df["steps"].tolist() == [4, 1] * 3, df["steps"].tolist()  # 209 = 3 x 64 + 17; full batch
    assert df["final_test_acc"].between(0, 1).all() and not df["diverged"].any()


@pytest.mark.slow
@pytest.mark.parametrize("name", CIFAR_CONFIGS)
def test_cifar_configs_one_epoch_on_the_shared_subset(shared_data, tmp_path, name):
    folder = shared_data / "cifar10-subset"
    df = run_config(
        name,
        tmp_path,
        f"data.train={folder / 'train.npz'}",
        f"data.test={folder / 'test.npz'}",
        "data.train_per_class=30",
        "data.test_per_class=20",
        "sweep.train.seed=[0]",
        *(["sweep.train.batch_size=[64]"] if name == "cifar10_batch_sweep" else []),
    )
    assert len(df) == 3 and set(df["norm"]) == {"none", "custom", "torch"}
    n_train = 60 if name == "cifar10_cat_vs_noncat" else 300  # binary: 30 cats + 30 others
    assert (df["steps"] == -(-n_train // 64)).all(), df["steps"].tolist()
    assert df["final_test_acc"].between(0, 1).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["catvnoncat_course", "catvnoncat_standardized"])
def test_catvnoncat_studies_one_epoch_on_the_course_files(shared_data, tmp_path, name):
    df = run_config(
        f"studies/{name}",
        tmp_path,
        f"data.root={shared_data / 'catvnoncat'}",
        "sweep.train.batch_size=[209]",
        "sweep.train.lr=[0.01]",
        "sweep.train.seed=[0]",
    )
    assert len(df) == 3 and set(df["norm"]) == {"none", "custom", "torch"}
    assert (df["steps"] == 1).all() and df["final_test_acc"].between(0, 1).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cifar10_batch", "cifar10_ghost"])
def test_cifar_studies_one_epoch_on_the_shared_subset(shared_data, tmp_path, name):
    folder = shared_data / "cifar10-subset"
    sweep = (
        ["sweep.train.batch_size=[64, 128]", "sweep.train.lr_scaling.rule=[none, linear]"]
        if name == "cifar10_batch"
        else ["sweep.model.ghost_batch_size=[16, 64]", "train.batch_size=64"]
    )
    df = run_config(
        f"studies/{name}",
        tmp_path,
        f"data.train={folder / 'train.npz'}",
        f"data.test={folder / 'test.npz'}",
        "data.train_per_class=13",
        "data.test_per_class=5",
        "sweep.train.seed=[0]",
        *sweep,
    )
    assert df["final_test_acc"].between(0, 1).all()
    if name == "cifar10_batch":  # 2 norms x 2 rules x 2 batch sizes; linear: lr 0.1 at 128
        assert len(df) == 8
        lr = pd.read_csv(tmp_path / name / "runs" / df.run_id.iloc[-1] / "metrics.csv")["lr"]
        assert df.iloc[-1]["batch_size"] == 128 and lr.iloc[-1] == pytest.approx(0.1)
    else:  # none (one run, planned in both ghost cells) + custom at 2 ghost sizes
        assert len(df) == 4 and df["run_id"].nunique() == 3


def test_npz_float_vectors_train_end_to_end(tmp_path):
    """The users'-own-data path: (N, D) float arrays through `bnexp run`."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "tr.npz", x=x, y=y)
    np.savez(tmp_path / "te.npz", x=x[:20], y=y[:20])
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        yaml.safe_dump(
            {
                "name": "vec",
                "data": {
                    "dataset": "npz",
                    "train": str(tmp_path / "tr.npz"),
                    "test": str(tmp_path / "te.npz"),
                },
                "model": {"hidden": [8], "norm": "custom"},
                "train": {"epochs": 30, "batch_size": 16, "lr": 0.2, "device": "cpu"},
            }
        )
    )
    result = cli("run", str(exp), "--out", str(tmp_path / "results"))
    assert result.exit_code == 0, result.output
    df = pd.read_csv(tmp_path / "results" / "vec" / "summary.csv")
    assert df["final_train_acc"].iloc[0] > 0.9, (
        f"a linearly separable problem learnt to only {df['final_train_acc'].iloc[0]:.2f}"
    )


@pytest.mark.slow
def test_ghost_bn_config_one_epoch_on_the_shared_subset(shared_data, tmp_path):
    folder = shared_data / "cifar10-subset"
    df = run_config(
        "ghost_bn_cifar10",
        tmp_path,
        f"data.train={folder / 'train.npz'}",
        f"data.test={folder / 'test.npz'}",
        "data.train_per_class=64",
        "data.test_per_class=10",
        "sweep.train.seed=[0]",
        "sweep.model.ghost_batch_size=[32, 512]",
        "measure.bn_noise.samples=5",
    )
    assert len(df) == 2 and set(df["model.ghost_batch_size"]) == {32, 512}
    assert (df["steps"] == 2).all(), df[
        "steps"
    ].tolist()  # 640 images: one batch of 512, one of 128
    assert (tmp_path / "ghost_bn_cifar10" / "tables" / "regularization.csv").exists()


def test_ready_prepares_small_image_sets_once_with_the_same_numbers():
    """Dataset.ready: the whole set prepared at once is bit for bit each batch prepared alone;
    a set whose float copy would exceed the limit stays uint8 (prepared per batch)."""
    g = torch.Generator().manual_seed(0)
    data = Dataset(
        name="pixels",
        x_train=torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8, generator=g),
        y_train=torch.arange(10) % 2,
        x_test=torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8, generator=g),
        y_test=torch.arange(6) % 2,
        classes=("a", "b"),
        mean=torch.tensor([0.4, 0.5, 0.6]),
        std=torch.tensor([0.2, 0.25, 0.3]),
    )
    ready = data.ready()
    assert ready.x_train.dtype == torch.float32 and ready.mean is None
    for i in range(0, 10, 3):  # batches of 3, as a training loop takes them
        batch = data.x_train[i : i + 3]
        assert torch.equal(ready.prepare(ready.x_train[i : i + 3]), data.prepare(batch))
    assert torch.equal(ready.x_test, data.prepare(data.x_test))
    assert ready.ready() is ready  # already float
    too_big = data.ready(max_bytes=4 * 16 * 48 - 1)  # one byte short of the float copy
    assert too_big is data and too_big.x_train.dtype == torch.uint8

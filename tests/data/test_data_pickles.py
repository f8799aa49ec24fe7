"""Issue 25: no CIFAR pickle runs code. Each pickled format (CIFAR-10 data_batch_i and
batches.meta, CIFAR-100 train and meta) with a payload that would write a marker file: loading
is a one-line DataError naming the file and the global, and the marker is never written."""

from __future__ import annotations

import codecs
import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from test_data_cifar10 import make_cifar_folder  # tests/data is on sys.path (pytest rootdir)
from test_data_cifar100 import make_cifar100_folder
from typer.testing import CliRunner

from bnexp.cli import app
from bnexp.config import DataConfig
from bnexp.data import load_dataset, pickles
from bnexp.errors import DataError

pytestmark = pytest.mark.usefixtures("fresh_data_cache")

# (dataset, file under root, the key the payload replaces)
FORMATS = [
    ("cifar10", "cifar-10-batches-py/data_batch_1", "labels"),
    ("cifar10", "cifar-10-batches-py/batches.meta", "label_names"),
    ("cifar100", "cifar-100-python/train", "fine_labels"),
    ("cifar100", "cifar-100-python/meta", "fine_label_names"),
]


class System:
    """Unpickled, runs `touch marker` through os.system (named posix.system in the file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class Exec:
    """Unpickled, writes the marker through builtins.exec."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def plant(tmp_path: Path, dataset: str, file: str, key: str, payload, protocol: int) -> Path:
    """A complete folder of `dataset` whose `file` holds `payload` under `key`; its path."""
    (make_cifar_folder if dataset == "cifar10" else make_cifar100_folder)(tmp_path)
    path = tmp_path / file
    obj = pickle.loads(path.read_bytes(), encoding="latin1")  # our own fixture: safe
    obj[key] = payload
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("payload", [System, Exec])
@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("dataset, file, key", FORMATS)
def test_a_pickle_that_calls_code_is_refused_and_runs_nothing(
    tmp_path, dataset, file, key, payload, protocol
):
    marker = tmp_path / "marker"
    path = plant(tmp_path, dataset, file, key, payload(marker), protocol)
    glob = r"posix\.system" if payload is System else r"(builtins|__builtin__)\.exec"
    with pytest.raises(
        DataError, match=rf"^{path}: refused to unpickle it: it names the global {glob}, which "
    ) as err:
        load_dataset(DataConfig(dataset=dataset, root=str(tmp_path)))
    assert "\n" not in str(err.value) and not marker.exists()
    # the test's payload is real: plain pickle runs it
    with path.open("rb") as f:
        pickle.load(f, encoding="latin1")
    assert marker.exists()


@pytest.mark.parametrize("dataset, file, key", [FORMATS[0], FORMATS[3]])
@pytest.mark.parametrize("command", ["data info", "run"])
def test_cli_on_a_crafted_folder_is_one_line_exit_2_and_runs_nothing(
    tmp_path, dataset, file, key, command
):
    marker = tmp_path / "marker"
    plant(tmp_path, dataset, file, key, System(marker), 2)
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"name: x\ndata: {{dataset: {dataset}, root: '{tmp_path}'}}\n")
    args = [*command.split(), str(exp)]
    if command == "run":
        args += ["--out", str(tmp_path / "results"), "--set", "train.device=cpu"]
    result = CliRunner().invoke(app, args)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(errors) == 1 and "refused to unpickle it" in errors[0], result.output
    assert file.split("/")[-1] in errors[0] and "posix.system" in errors[0]
    assert not marker.exists()


def test_only_the_allowed_globals_resolve(tmp_path):
    """The allowlist is what the official files and faithful copies need, nothing else: a
    harmless global is refused as well, and a codec other than latin1 too."""
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"labels": collections.OrderedDict()}, protocol=2))
    with pytest.raises(DataError, match=r"names the global collections.OrderedDict"):
        pickles.load(path, "a CIFAR-10 batch")

    class Rot13:
        def __reduce__(self):
            return codecs.encode, ("uryyb", "rot13")

    path.write_bytes(pickle.dumps({"labels": Rot13()}, protocol=2))
    with pytest.raises(DataError, match=r"cannot unpickle it.*only latin1 is allowed"):
        pickles.load(path, "a CIFAR-10 batch")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_faithful_copies_in_every_protocol_load_as_plain_pickle_reads_them(tmp_path, protocol):
    rng = np.random.default_rng(0)
    batch = {
        "data": rng.integers(0, 256, (5, 3072), dtype=np.uint8),
        "labels": [1, 2, 3, 4, 300],
        "batch_label": "training batch 1 of 5",
        "filenames": [b"a.png", "b.png", b""],
        "empty": b"",
        "n": None,
    }
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    got = pickles.load(path, "a CIFAR-10 batch")
    with path.open("rb") as f:
        want = pickle.load(f, encoding="latin1")
    assert got.keys() == want.keys() and np.array_equal(got["data"], want["data"])
    assert got["data"].dtype == np.uint8 and got["data"].shape == (5, 3072)
    assert {k: v for k, v in got.items() if k != "data"} == {
        k: v for k, v in want.items() if k != "data"
    }


# ----------------------------------------------------- every other reader (issue 25, item 2)


def test_npz_with_a_pickled_object_array_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    x = np.array([System(marker)], dtype=object)
    np.savez(tmp_path / "train.npz", x=x, y=np.zeros(1, np.int64))  # object arrays: pickled
    np.savez(tmp_path / "test.npz", x=np.zeros((1, 2)), y=np.zeros(1, np.int64))
    cfg = DataConfig(
        dataset="npz", train=str(tmp_path / "train.npz"), test=str(tmp_path / "test.npz")
    )
    with pytest.raises(DataError, match=r"data.train: cannot read .*train.npz.*allow_pickle"):
        load_dataset(cfg)
    assert not marker.exists()
    np.load(tmp_path / "train.npz", allow_pickle=True)["x"]  # the payload is real
    assert marker.exists()


def test_a_planted_digits_cache_runs_nothing_and_is_recomputed(tmp_path):
    from bnexp.data.digits import cache_path

    cfg = DataConfig(dataset="digits")
    marker = tmp_path / "marker"
    path = cache_path(cfg)  # in this session's BNEXP_CACHE_DIR (conftest)
    path.parent.mkdir(parents=True, exist_ok=True)
    evil = np.array([System(marker)], dtype=object)
    np.savez(path, x_train=evil, y_train=evil, x_test=evil, y_test=evil)
    data = load_dataset(cfg)
    assert not marker.exists() and data.x_train[0].numel() == 64  # recomputed: 8x8 digits
    np.savez(path, x_train=evil)
    np.load(path, allow_pickle=True)["x_train"]  # the payload is real
    assert marker.exists()
    path.unlink()


def test_a_checkpoint_that_would_run_code_is_discarded(tmp_path, caplog):
    """Checkpoints are read with torch.load(weights_only=True): a pickle naming os.system, even
    with a header whose SHA-256 matches, is discarded (the run starts over) and runs nothing."""
    import hashlib
    import json

    import torch

    from bnexp.training.checkpoint import FORMAT, load_checkpoint

    marker = tmp_path / "marker"
    blob = pickle.dumps({"model": System(marker)}, protocol=2)
    header = {"format": FORMAT, "run_id": "r1", "sha256": hashlib.sha256(blob).hexdigest()}
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(json.dumps(header | {"bytes": len(blob)}).encode() + b"\n" + blob)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    got = load_checkpoint(path, "r1", model, opt, torch.Generator(), torch.device("cpu"))
    assert got is None and "discarding checkpoint" in caplog.text and not marker.exists()


def test_a_results_folders_config_yaml_runs_nothing_when_a_tracker_reads_it(tmp_path):
    import yaml

    from bnexp.track import RunFiles

    marker = tmp_path / "marker"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"x: !!python/object/apply:os.system [\"touch '{marker}'\"]\n")
    with pytest.raises(yaml.YAMLError, match="could not determine a constructor"):
        RunFiles(run).config  # noqa: B018 - the read is the test
    assert not marker.exists()

"""TensorBoard event files, read back with TensorBoard's own EventAccumulator and multiplexer:
scalars per evaluation step, final metrics, the hparams session per run and the experiment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.plugin_event_multiplexer import (  # noqa: E402
    EventMultiplexer,
)
from tensorboard.plugins.hparams import metadata as hp_metadata  # noqa: E402

from bnexp.config import TrackConfig  # noqa: E402
from bnexp.track import Trackers  # noqa: E402

pytestmark = pytest.mark.slow  # the shared sweep trains first (seconds)

TAGS = {"train/loss": "train_loss", "train/acc": "train_acc", "test/loss": "test_loss"}
TAGS |= {"test/acc": "test_acc", "lr": "lr", "epoch": "epoch"}


def _log(results: Path) -> Trackers:
    t = Trackers(results, TrackConfig(tensorboard=True), "tiny")
    assert [x.name for x in t.active] == ["tensorboard"]
    t.close()
    return t


def _accumulator(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _events(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and "tfevents" in p.name)


def test_each_run_has_its_scalars_per_step_and_final_metrics(sweep):
    _log(sweep)
    ids = sorted(p.name for p in (sweep / "runs").iterdir())
    assert sorted(p.name for p in (sweep / "tensorboard").iterdir() if p.is_dir()) == ids
    for rid in ids:
        acc = _accumulator(sweep / "tensorboard" / rid)
        metrics = pd.read_csv(sweep / "runs" / rid / "metrics.csv")
        for tag, col in TAGS.items():
            events = acc.Scalars(tag)
            assert [e.step for e in events] == metrics["step"].tolist(), tag
            # simple_value is float32 in the event proto: compare at its precision
            got = [e.value for e in events]
            want = metrics[col].astype(float).tolist()
            assert got == pytest.approx(want, rel=1e-6, abs=1e-7), f"{rid} {tag}: {got} vs {want}"
        summary = json.loads((sweep / "runs" / rid / "summary.json").read_text())
        for key, tag in [("final_test_acc", "final/test_acc"), ("gen_gap", "final/gen_gap")]:
            (event,) = acc.Scalars(tag)
            assert event.step == summary["steps"]
            assert event.value == pytest.approx(summary[key], rel=1e-6, abs=1e-7), key


def test_the_hparams_table_holds_the_swept_keys_and_the_final_metrics(sweep):
    _log(sweep)
    mux = EventMultiplexer().AddRunsFromDirectory(str(sweep))  # what `tensorboard --logdir` reads
    mux.Reload()
    content = mux.PluginRunToTagToContent(hp_metadata.PLUGIN_NAME)
    sessions = {
        run: hp_metadata.parse_session_start_info_plugin_data(
            tags[hp_metadata.SESSION_START_INFO_TAG]
        )
        for run, tags in content.items()
        if hp_metadata.SESSION_START_INFO_TAG in tags
    }
    assert len(sessions) == 4, sorted(content)
    for run, info in sessions.items():
        rid = Path(run).name
        params = json.loads((sweep / "runs" / rid / "summary.json").read_text())["params"]
        hparams = {k: v.string_value or v.number_value for k, v in info.hparams.items()}
        assert hparams["model.norm"] == params["model.norm"]
        assert hparams["train.seed"] == float(params["train.seed"])
        assert {"train.batch_size", "train.lr"} <= set(hparams)
    (root,) = [run for run, tags in content.items() if hp_metadata.EXPERIMENT_TAG in tags]
    assert root == "tensorboard"
    experiment = hp_metadata.parse_experiment_plugin_data(content[root][hp_metadata.EXPERIMENT_TAG])
    keys = {h.name: h for h in experiment.hparam_infos}
    assert {"model.norm", "train.seed"} <= set(keys)
    norms = sorted(v.string_value for v in keys["model.norm"].domain_discrete.values)
    assert norms == ["none", "torch"]
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"final/test_acc", "final/gen_gap", "final/steps_to_target"} <= metrics


def test_logging_again_writes_nothing_twice(sweep):
    _log(sweep)
    before = {p: p.stat().st_mtime_ns for p in (sweep / "tensorboard").rglob("*tfevents*")}
    _log(sweep)
    for rid in (sweep / "runs").iterdir():
        assert len(_events(sweep / "tensorboard" / rid.name)) == 1
    after = {p: p.stat().st_mtime_ns for p in (sweep / "tensorboard").rglob("*tfevents*")}
    runs_before = {p: t for p, t in before.items() if p.parent.name != "tensorboard"}
    assert {p: after[p] for p in runs_before} == runs_before  # run files untouched
    assert len(_events(sweep / "tensorboard")) == 1  # the experiment, rewritten in place
    assert not list(sweep.glob(".tb-*")), "a temporary folder was left behind"


def test_writing_event_files_imports_neither_torch_nor_tensorflow(sweep):
    code = (
        "import sys\nfrom bnexp.config import TrackConfig\nfrom bnexp.track import Trackers\n"
        f"Trackers({str(sweep)!r}, TrackConfig(tensorboard=True), 'tiny').close()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'tensorflow'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    assert len(list((sweep / "tensorboard").glob("*/*tfevents*"))) == 4

"""MLflow tracking against a real SQLite store, read back with mlflow's own search and client:
params, metric histories, final metrics, artifacts, parent/child, and no duplicates when a
sweep is logged again, interrupted and resumed, or its logging is cut off half-way."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sweep_helpers import tiny_experiment

pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
from mlflow.tracking import MlflowClient  # noqa: E402

import bnexp  # noqa: E402
from bnexp.config import TrackConfig  # noqa: E402
from bnexp.track import Trackers, flatten  # noqa: E402
from bnexp.track.mlflow import default_uri  # noqa: E402

pytestmark = pytest.mark.slow  # each test opens a SQLite store (schema migrations: seconds)


def _log(results: Path, **mlflow_cfg) -> Trackers:
    t = Trackers(results, TrackConfig(mlflow=mlflow_cfg), "tiny")
    assert [x.name for x in t.active] == ["mlflow"], "the tracker did not open"
    t.close()
    return t


def _runs(results: Path, uri: str | None = None, experiment: str = "tiny") -> pd.DataFrame:
    """Every run of the experiment, as mlflow.search_runs lays them out (tags.x, params.x,
    metrics.x columns), read with a client on this store (no global tracking URI)."""
    client = MlflowClient(uri or default_uri(results))
    exp = client.get_experiment_by_name(experiment)
    rows = [
        {
            "run_id": r.info.run_id,
            "status": r.info.status,
            **{f"tags.{k}": v for k, v in r.data.tags.items()},
            **{f"params.{k}": v for k, v in r.data.params.items()},
            **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
        }
        for r in client.search_runs([exp.experiment_id], max_results=1000)
    ]
    return pd.DataFrame(rows)


def _children(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["tags.bnexp.run_id"].notna()]


def test_a_sweep_is_one_parent_run_with_one_child_per_bnexp_run(sweep):
    _log(sweep)
    df = _runs(sweep)
    plan = pd.read_csv(sweep / "plan.csv", dtype={"run_id": str})
    parents = df[df["tags.bnexp.role"] == "sweep"]
    kids = _children(df)
    assert len(parents) == 1, df[["run_id", "tags.mlflow.runName"]]
    assert sorted(kids["tags.bnexp.run_id"]) == sorted(plan["run_id"])
    assert set(kids["tags.mlflow.parentRunId"]) == {parents["run_id"].iloc[0]}
    assert set(df["status"]) == {"FINISHED"}
    assert parents["tags.bnexp.results_dir"].iloc[0] == str(sweep.resolve())
    names = set(kids["tags.mlflow.runName"])
    assert names == {
        "norm=none seed=0",
        "norm=none seed=1",
        "norm=torch seed=0",
        "norm=torch seed=1",
    }


def test_params_metric_histories_final_metrics_and_artifacts_match_the_files(sweep, tmp_path):
    _log(sweep)
    client = MlflowClient(default_uri(sweep))
    kids = _children(_runs(sweep))
    assert len(kids) == 4
    for _, row in kids.iterrows():
        folder = sweep / "runs" / row["tags.bnexp.run_id"]
        run = client.get_run(row["run_id"])
        # params: the resolved config.yaml, flattened to dotted keys, as MLflow's strings
        want = {
            k: "null" if v is None else str(v)
            for k, v in flatten(yaml.safe_load((folder / "config.yaml").read_text())).items()
        }
        assert run.data.params == want, set(run.data.params.items()) ^ set(want.items())
        # every metrics.csv row, indexed by optimizer step, once
        metrics = pd.read_csv(folder / "metrics.csv")
        for col in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch"):
            hist = sorted(
                (m.step, m.value) for m in client.get_metric_history(run.info.run_id, col)
            )
            assert [s for s, _ in hist] == metrics["step"].tolist(), f"{col}: steps {hist}"
            got = [v for _, v in hist]
            want_v = metrics[col].astype(float).tolist()
            assert got == pytest.approx(want_v, rel=1e-12, abs=0), f"{col}: {got} vs {want_v}"
        # the summary's numbers as final metrics (one value each)
        summary = json.loads((folder / "summary.json").read_text())
        for key in ("final_test_acc", "final_train_loss", "gen_gap", "best_test_acc", "steps"):
            assert run.data.metrics[key] == pytest.approx(summary[key], rel=1e-12), key
        assert run.data.metrics["diverged"] == 0.0
        assert "batch_size" not in run.data.metrics  # config, not a result: it is a param
        # the run's files as artifacts, byte for byte
        names = sorted(a.path for a in client.list_artifacts(run.info.run_id))
        assert names == ["config.yaml", "metrics.csv", "summary.json", "timing.csv"], names
        got = Path(client.download_artifacts(run.info.run_id, "metrics.csv", str(tmp_path)))
        assert got.read_bytes() == (folder / "metrics.csv").read_bytes()


def test_the_parent_holds_the_report_tables_and_plots(sweep):
    from bnexp.report import build_report

    build_report(sweep)
    _log(sweep)
    client = MlflowClient(default_uri(sweep))
    df = _runs(sweep)
    parent = df[df["tags.bnexp.role"] == "sweep"]["run_id"].iloc[0]
    top = {a.path for a in client.list_artifacts(parent)}
    assert {"experiment.yaml", "plan.csv", "summary.csv", "report.md", "tables", "plots"} <= top
    plots = {a.path for a in client.list_artifacts(parent, "plots")}
    assert plots == {f"plots/{p.name}" for p in (sweep / "plots").glob("*.png")} and plots


def test_logging_again_duplicates_nothing(sweep):
    _log(sweep)
    first = _runs(sweep)
    _log(sweep)  # e.g. `bnexp run` again on a finished sweep
    again = _runs(sweep)
    assert sorted(again["run_id"]) == sorted(first["run_id"])
    client = MlflowClient(default_uri(sweep))
    for rid in _children(again)["run_id"]:
        assert len(client.get_metric_history(rid, "test_acc")) == 3  # 2 epochs + step 0


def test_two_processes_on_one_folder_log_each_run_once(sweep):
    """Two `bnexp run` sharing a sweep: both open before either logs; each logs what it finished,
    then each syncs the folder. Nothing is logged twice."""
    a = Trackers(sweep, TrackConfig(mlflow={}), "tiny")
    b = Trackers(sweep, TrackConfig(mlflow={}), "tiny")
    ids = sorted(p.name for p in (sweep / "runs").iterdir())
    for rid in ids[:2]:
        a.log_run(rid)
    for rid in ids[2:]:
        b.log_run(rid)
    a.close()
    b.close()
    df = _runs(sweep)
    assert len(df) == 5, df[["run_id", "tags.mlflow.runName"]]
    assert sorted(_children(df)["tags.bnexp.run_id"]) == ids


def test_logging_cut_off_half_way_is_completed_in_place(sweep, monkeypatch):
    """A child left RUNNING (params and metrics logged, the artifacts not) is finished on the next
    call, as the same MLflow run, and the metrics logged twice stay one point per step."""
    real = MlflowClient.log_artifact
    calls = {"n": 0}

    def cut_off(self, run_id, local_path, artifact_path=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("server went away")
        return real(self, run_id, local_path, artifact_path)

    monkeypatch.setattr(MlflowClient, "log_artifact", cut_off)
    t = Trackers(sweep, TrackConfig(mlflow={}), "tiny")
    t.close()
    assert t.active == [], "the failure should switch the tracker off"
    half = _children(_runs(sweep))
    assert list(half["status"]) == ["RUNNING"], half[["status", "tags.bnexp.run_id"]]
    monkeypatch.setattr(MlflowClient, "log_artifact", real)
    _log(sweep)
    df = _children(_runs(sweep))
    assert len(df) == 4 and set(df["status"]) == {"FINISHED"}
    assert half["run_id"].iloc[0] in set(df["run_id"])  # the same MLflow run, continued
    client = MlflowClient(default_uri(sweep))
    rid = half["run_id"].iloc[0]
    steps = [m.step for m in client.get_metric_history(rid, "train_loss")]
    assert sorted(steps) == sorted(set(steps)) and len(steps) == 3, steps


def test_interrupted_sweep_resumed_with_tracking_has_each_run_once(tmp_path, monkeypatch):
    """The API, end to end: Ctrl-C after two runs (finished runs logged, the parent KILLED), then
    the same call resumes: one parent, four children, every metric point once."""
    import bnexp.sweep.worker as execute

    real, trained = execute.train_run, []

    def stop_at_third(cfg, run_dir, *a, **kw):
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(run_dir.name)
        return real(cfg, run_dir, *a, **kw)

    raw = tiny_experiment(epochs=2)
    raw["track"] = {"mlflow": True}
    monkeypatch.setattr(execute, "train_run", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        bnexp.run(raw, out=tmp_path, workers=1)
    results = tmp_path / "tiny"
    df = _runs(results)
    assert sorted(_children(df)["tags.bnexp.run_id"]) == sorted(trained)
    assert df[df["tags.bnexp.role"] == "sweep"]["status"].tolist() == ["KILLED"]

    monkeypatch.setattr(execute, "train_run", real)
    res = bnexp.run(raw, out=tmp_path, workers=1)
    df = _runs(results)
    kids = _children(df)
    assert len(df) == 5 and len(kids) == 4, df[["run_id", "tags.mlflow.runName", "status"]]
    assert sorted(kids["tags.bnexp.run_id"]) == sorted(res.summary["run_id"])
    assert set(df["status"]) == {"FINISHED"}
    client = MlflowClient(default_uri(results))
    for _, row in kids.iterrows():
        rows = len(pd.read_csv(results / "runs" / row["tags.bnexp.run_id"] / "metrics.csv"))
        assert len(client.get_metric_history(row["run_id"], "test_acc")) == rows


def test_a_named_experiment_and_tracking_uri_are_used(sweep, tmp_path):
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    t = _log(sweep, tracking_uri=uri, experiment="bn-study")
    assert t.where() == [f"mlflow ui --backend-store-uri {uri}"]
    df = _runs(sweep, uri, "bn-study")
    assert len(df) == 5
    assert not (sweep / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("uri", "expect"),
    [
        ("http://127.0.0.1:9", "127.0.0.1:9"),  # nothing listens on port 9: server down
        ("bogus://nowhere", "bogus://nowhere"),  # no such store
    ],
)
def test_a_tracker_that_fails_is_one_warning_and_nothing_else(sweep, caplog, uri, expect):
    caplog.set_level(logging.WARNING, logger="bnexp.track")
    t = Trackers(sweep, TrackConfig(mlflow={"tracking_uri": uri}), "tiny")
    t.log_run(next((sweep / "runs").iterdir()).name)
    t.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "bnexp.track"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("tracking: mlflow is off") and expect in warnings[0]
    assert "rerun the same command" in warnings[0]


def test_mlflow_missing_names_the_extra(sweep, caplog, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    monkeypatch.delitem(sys.modules, "mlflow.tracking", raising=False)
    caplog.set_level(logging.WARNING, logger="bnexp.track")
    t = Trackers(sweep, TrackConfig(mlflow={}), "tiny")
    t.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "bnexp.track"]
    assert len(warnings) == 1 and "pip install 'bnexp[mlflow]'" in warnings[0], warnings

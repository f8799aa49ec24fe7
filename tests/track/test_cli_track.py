"""`bnexp run --track ...`: the command line logs to MLflow and TensorBoard and says where."""

from __future__ import annotations

import pytest
from sweep_helpers import run_cli, tiny_experiment, write_yaml

from bnexp.track.mlflow import default_uri


def test_an_unknown_tracker_is_one_line_and_exit_2(tmp_path):
    from typer.testing import CliRunner

    from bnexp.cli import app

    cfg = write_yaml(tmp_path / "exp.yaml", tiny_experiment(epochs=1, sweep={}))
    args = ["run", str(cfg), "--out", str(tmp_path / "out"), "--track", "wandb"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        "error: --track wandb: unknown tracker (expected one of: mlflow, tensorboard)"
    )
    assert not (tmp_path / "out" / "tiny" / "runs").exists()


@pytest.mark.slow
def test_track_both_logs_every_run_and_prints_the_viewer_commands(tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from mlflow.tracking import MlflowClient

    cfg = write_yaml(tmp_path / "exp.yaml", tiny_experiment(epochs=2))
    out = tmp_path / "out"
    args = ["run", str(cfg), "--out", str(out), "--track", "mlflow", "--track", "tensorboard"]
    p = run_cli(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    results = out / "tiny"
    uri = default_uri(results)
    text = " ".join(p.stdout.split())  # rich wraps long lines
    assert f"tracked: mlflow ui --backend-store-uri {uri}" in text, p.stdout
    assert f"tracked: tensorboard --logdir {results}" in text, p.stdout
    assert "tracking:" not in p.stderr, p.stderr  # no warning
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    assert len(list((results / "tensorboard").glob("*/*tfevents*"))) == 4

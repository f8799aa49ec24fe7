"""The public Python API: bnexp.validate, bnexp.run, bnexp.load and Results."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml
from sweep_helpers import REPO, assert_same_results, bnexp_env, tiny_experiment, write_yaml

import bnexp
from bnexp.config import ConfigError, expand, experiment_from_dict
from bnexp.errors import BnexpError, Problem

# --------------------------------------------------------------------------- validate

BAD_YAML = textwrap.dedent(
    """\
    name: bad
    data: {dataset: digits}
    model:
      hiden: [16]
    train:
      lr: -1
      epochs: 2
    track:
      mlflow: {tracking_url: here}
    """
)


def test_validate_returns_the_plan_from_a_dict_yaml_text_or_a_file(tmp_path):
    raw = tiny_experiment(epochs=2)
    want = [r.run_id for r in expand(experiment_from_dict(raw))]
    assert len(want) == 4
    path = write_yaml(tmp_path / "exp.yaml", raw)
    for config in (raw, yaml.safe_dump(raw), path, str(path)):
        plan = bnexp.validate(config)
        assert [r.run_id for r in plan] == want, type(config)
        assert [r.params for r in plan][1] == {"model.norm": "none", "train.seed": 1}


def test_validate_applies_overrides_as_set_does(tmp_path):
    raw = tiny_experiment(epochs=2)
    plan = bnexp.validate(raw, overrides=["train.lr=0.5", "sweep.train.seed=[0,1,2]"])
    assert len(plan) == 6 and {r.config.train.lr for r in plan} == {0.5}
    assert raw["train"]["lr"] == 0.1, "the caller's dict must not change"


def test_every_problem_comes_as_data_in_one_error():
    with pytest.raises(ConfigError) as info:
        bnexp.validate(BAD_YAML, overrides=["train.momentum=[oops"])
    got = {(p.file, p.line, p.key) for p in info.value.details}
    # lines of BAD_YAML, counted by hand: hiden 4, lr 6, tracking_url 9
    assert (None, None, "train.momentum") in got, got  # the bad --set
    assert ("<yaml>", 4, "model.hiden") in got, got
    assert ("<yaml>", 6, "train.lr") in got, got
    assert ("<yaml>", 9, "track.mlflow.tracking_url") in got, got
    assert all(isinstance(p, Problem) and p.message for p in info.value.details)
    assert [p.text for p in info.value.details] == str(info.value).splitlines()
    hiden = next(p for p in info.value.details if p.key == "model.hiden")
    assert "did you mean 'hidden'" in hiden.message


def test_a_missing_file_is_a_config_error_with_the_file():
    with pytest.raises(ConfigError) as info:
        bnexp.validate("no/such/exp.yaml")
    (problem,) = info.value.details
    assert problem.file == "no/such/exp.yaml" and problem.line is None
    assert "file not found" in problem.message


def test_track_is_not_part_of_any_run_id():
    raw = tiny_experiment(epochs=2)
    tracked = {**raw, "track": {"mlflow": {"experiment": "x"}, "tensorboard": True}}
    assert [r.run_id for r in bnexp.validate(tracked)] == [r.run_id for r in bnexp.validate(raw)]
    exp = experiment_from_dict(tracked)
    assert exp.track.tensorboard and exp.track.mlflow.experiment == "x"
    assert experiment_from_dict({**raw, "track": {"mlflow": True}}).track.mlflow is not None


def test_sweep_values_are_still_checked_with_a_track_section():
    raw = tiny_experiment(epochs=2, sweep={"train.lr": [0.1, -1.0]})
    raw["track"] = {"tensorboard": True}
    with pytest.raises(ConfigError) as info:
        bnexp.validate(raw)
    assert [p.key for p in info.value.details] == ["sweep.train.lr[1]"], info.value.problems


# --------------------------------------------------------------------------- load / Results


def _fake_results(tmp_path):
    """A results folder in the real layout, written by hand: two runs, one with metrics."""
    root = tmp_path / "fake"
    (root / "runs" / "0123e45678").mkdir(parents=True)
    (root / "plan.csv").write_text("run_id,model.norm\n0123e45678,none\n0000000171,torch\n")
    (root / "runs" / "0123e45678" / "metrics.csv").write_text(
        "epoch,step,lr,train_loss,train_acc,test_loss,test_acc\n0,0,0.1,2.3,0.1,2.3,0.1\n"
    )
    return root


def test_load_reads_run_ids_as_text_and_none_as_a_name(tmp_path):
    res = bnexp.load(_fake_results(tmp_path))
    assert res.plan["run_id"].tolist() == ["0123e45678", "0000000171"]  # not 1.23e+53, not 171
    assert res.plan["model.norm"].tolist() == ["none", "torch"]
    m = res.metrics()
    assert m["run_id"].tolist() == ["0123e45678"] and m["model.norm"].tolist() == ["none"]
    assert list(m.columns[:2]) == ["run_id", "model.norm"] and m["train_loss"].iloc[0] == 2.3
    assert res.metrics(run_id="0123").equals(m)  # a unique prefix, as `bnexp repro` takes
    assert res.summary.empty and res.tables == {} and res.report_path is None


def test_claims_are_read_from_claims_json_and_empty_before_a_report(tmp_path):
    res = bnexp.load(_fake_results(tmp_path))
    assert res.claims.empty
    assert list(res.claims.columns) == [
        "claim",
        "verdict",
        "text",
        "norm",
        "cell",
        "estimate",
        "ci_low",
        "ci_high",
        "n",
    ]
    claims = [
        {
            "claim": "speedup",
            "verdict": "supported",
            "text": "BN reaches the target in fewer steps",
            "norm": "torch",
            "cell": {"train.batch_size": 64},
            "estimate": 2.5,
            "ci_low": 1.8,
            "ci_high": 3.1,
            "n": 3,
        }
    ]
    (res.path / "claims.json").write_text(json.dumps(claims))
    row = res.claims.iloc[0]
    assert row["verdict"] == "supported" and row["cell"] == {"train.batch_size": 64}
    assert (row["estimate"], row["ci_low"], row["ci_high"], row["n"]) == (2.5, 1.8, 3.1, 3)


def test_load_and_metrics_reject_what_is_not_there(tmp_path):
    with pytest.raises(BnexpError, match="no plan.csv"):
        bnexp.load(tmp_path)
    res = bnexp.load(_fake_results(tmp_path))
    with pytest.raises(BnexpError, match="'0'.*2 runs"):
        res.metrics(run_id="0")  # 0123e45678 and 0000000171
    with pytest.raises(BnexpError, match="'ff'.*no run"):
        res.metrics(run_id="ff")


@pytest.mark.slow
def test_import_bnexp_is_light_and_run_stays_callable():
    """`import bnexp.sweep.store` imports no torch; bnexp.run is the API's run, also once the
    training loop (bnexp.training) is imported."""
    code = (
        "import sys, bnexp, bnexp.sweep.store\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "bnexp.load  # the API without training: still no torch\n"
        "assert 'torch' not in sys.modules, 'torch imported by bnexp.load'\n"
        "import bnexp.training.train\n"
        "assert callable(bnexp.run) and bnexp.training.train.train_run\n"
        "import inspect\n"
        "print(list(inspect.signature(bnexp.run).parameters)[:3])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=bnexp_env(), timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['config', 'overrides', 'out']"


# --------------------------------------------------------------------------- run, end to end


@pytest.mark.slow
def test_run_end_to_end_matches_the_cli_and_resumes(tmp_path):
    raw = tiny_experiment(epochs=2)
    res = bnexp.run(raw, out=tmp_path / "api", workers=1)
    assert isinstance(res, bnexp.Results) and res.path == tmp_path / "api" / "tiny"

    # the same experiment through `bnexp run`: the same runs, byte for byte
    cfg = write_yaml(tmp_path / "exp.yaml", raw)
    cli = subprocess.run(
        [sys.executable, "-m", "bnexp", "run", str(cfg), "--out", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        env=bnexp_env(),
        cwd=REPO,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert_same_results(res.path, tmp_path / "cli" / "tiny")

    # Results reads what the files hold
    plan = pd.read_csv(res.path / "plan.csv", dtype=str)
    assert sorted(res.summary["run_id"]) == sorted(plan["run_id"])
    for _, row in res.summary.iterrows():
        last = pd.read_csv(res.path / "runs" / row["run_id"] / "metrics.csv").iloc[-1]
        assert row["final_test_acc"] == pytest.approx(last["test_acc"], rel=1e-12)
    m = res.metrics()
    assert len(m) == sum(len(pd.read_csv(p)) for p in (res.path / "runs").glob("*/metrics.csv"))
    assert {"run_id", "model.norm", "train.seed", "step", "test_acc"} <= set(m.columns)
    one = m[m["run_id"] == plan["run_id"][3]]
    assert (one["model.norm"] == "torch").all() and (one["train.seed"] == 1).all()
    assert set(res.tables) == {p.stem for p in (res.path / "tables").glob("*.csv")}
    assert set(res.tables) >= {"speedup", "regularization"}
    assert res.tables["speedup"].equals(pd.read_csv(res.path / "tables" / "speedup.csv"))
    assert res.report_path == res.path / "report.md"
    assert res.failed == {}
    assert bnexp.load(res.path).summary.equals(res.summary)

    # a rerun trains nothing: every summary.json is left as it was
    stamps = {p: p.stat().st_mtime_ns for p in res.path.glob("runs/*/summary.json")}
    bnexp.run(raw, out=tmp_path / "api", workers=1)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.slow
def test_run_with_a_bad_tracker_still_trains_every_run(tmp_path, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="bnexp.track")
    raw = tiny_experiment(epochs=2, sweep={"train.seed": [0, 1]})
    raw["track"] = {"mlflow": {"tracking_uri": "bogus://nowhere"}}
    res = bnexp.run(raw, out=tmp_path, workers=1)
    assert len(res.summary) == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "bnexp.track"]
    assert len(warnings) == 1 and "bogus://nowhere" in warnings[0], warnings

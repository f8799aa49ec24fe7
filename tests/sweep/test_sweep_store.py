"""The run store in-process: checkpoint resume, determinism, divergence, failures, skip/retry/force,
sweep edits, claims (busy, stale after SIGKILL) and atomic writes under SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import bnexp_env, tiny_experiment

import bnexp.errors
import bnexp.sweep.runner
import bnexp.sweep.worker
from bnexp.config import RunConfig, expand, experiment_from_dict
from bnexp.errors import BnexpError
from bnexp.report import comparison
from bnexp.results import CHECKPOINT
from bnexp.sweep.runner import run_experiment
from bnexp.sweep.store import RunStore
from bnexp.sweep.worker import execute_run
from bnexp.training.train import train_run


def _run_cfg(**train) -> RunConfig:
    raw = tiny_experiment(epochs=6, sweep={}, **train)
    raw["model"]["norm"] = "torch"
    return RunConfig.model_validate({k: v for k, v in raw.items() if k != "sweep"})


def _sweep(tmp_path: Path, raw: dict, **kw):
    return run_experiment(experiment_from_dict(raw), raw, tmp_path, workers=1, **kw)


class Crash(Exception):
    pass


def test_same_config_gives_identical_metrics_csv(tmp_path):
    cfg = _run_cfg(seed=3)
    a = train_run(cfg, tmp_path / "a")
    b = train_run(cfg, tmp_path / "b")
    ma, mb = (
        (tmp_path / "a" / "metrics.csv").read_bytes(),
        (tmp_path / "b" / "metrics.csv").read_bytes(),
    )
    assert ma == mb, f"metrics.csv differs:\n{ma.decode()}\nvs\n{mb.decode()}"
    assert len(ma.splitlines()) == 1 + 1 + cfg.train.epochs  # header, epoch 0, one row per epoch
    assert (
        b"wall_s" not in ma
    )  # wall times live in timing.csv, so metrics.csv can be compared byte for byte
    assert pd.read_csv(tmp_path / "a" / "timing.csv").columns.tolist() == [
        "epoch",
        "step",
        "wall_s",
        "train_s",
        "eval_s",
    ]
    assert a.final_test_loss == b.final_test_loss


def test_killed_run_resumes_from_checkpoint_to_the_same_metrics(tmp_path):
    cfg = _run_cfg(seed=1, checkpoint_every=2)
    ref = train_run(cfg, tmp_path / "ref")
    assert not (tmp_path / "ref" / CHECKPOINT).exists(), "a complete run keeps no checkpoint"

    def crash_after_epoch_5(done: int, total: int) -> None:
        if done == 5:
            raise Crash

    run_dir = tmp_path / "run"
    with pytest.raises(Crash):
        train_run(cfg, run_dir, on_progress=crash_after_epoch_5)
    assert (run_dir / CHECKPOINT).exists() and not (run_dir / "summary.json").exists()
    with (run_dir / "metrics.csv").open("a") as f:  # a row cut short by the crash
        f.write("5,1")
    again = train_run(cfg, run_dir)
    assert again.resumed_from_epoch == 4, "checkpoint_every=2: the last checkpoint is after epoch 4"
    got, want = (
        (run_dir / "metrics.csv").read_bytes(),
        (tmp_path / "ref" / "metrics.csv").read_bytes(),
    )
    assert got == want, f"resumed metrics.csv differs:\n{got.decode()}\nvs\n{want.decode()}"
    for key in (
        "final_train_loss",
        "final_test_loss",
        "final_test_acc",
        "steps",
        "steps_to_target",
    ):
        assert getattr(again, key) == getattr(ref, key), (
            f"{key}: {getattr(again, key)} vs {getattr(ref, key)}"
        )
    assert not (run_dir / CHECKPOINT).exists()


def test_huge_lr_diverges_is_recorded_and_the_sweep_finishes(tmp_path):
    raw = tiny_experiment(epochs=3, sweep={"train.lr": [0.1, 1.0e6]})
    result = _sweep(tmp_path, raw)
    df = result.summary.set_index("lr")
    assert len(df) == 2, df
    assert not df.loc[0.1, "diverged"]
    assert df.loc[1.0e6, "diverged"], df.loc[1.0e6].to_dict()
    step = int(df.loc[1.0e6, "diverged_step"])
    assert 1 <= step < int(df.loc[0.1, "steps"]), (
        f"diverged at step {step}, full run {df.loc[0.1, 'steps']} steps"
    )
    assert int(df.loc[1.0e6, "steps"]) == step
    assert result.diverged == [df.loc[1.0e6, "run_id"]]
    assert pd.read_csv(result.results_dir / "summary.csv")["diverged"].tolist() == [False, True]
    table = comparison(result.summary).set_index("train.lr")
    assert table["diverged"].to_dict() == {0.1: "0/1", 1.0e6: "1/1"}, (
        "the table marks the diverged cell"
    )


def test_diverge_loss_threshold_stops_early(tmp_path):
    cfg = _run_cfg(diverge_loss=0.5)  # the loss starts near ln(10) = 2.3
    s = train_run(cfg, tmp_path / "run")
    assert s.diverged and s.diverged_step == 1, (s.diverged, s.diverged_step)


def _fail_seed_1(monkeypatch):
    real = bnexp.sweep.worker.train_run

    def flaky(cfg, *a, **kw):
        if cfg.train.seed == 1:
            raise RuntimeError("boom: injected by the test")
        return real(cfg, *a, **kw)

    monkeypatch.setattr(bnexp.sweep.worker, "train_run", flaky)


def test_failing_run_is_recorded_skipped_then_retried(tmp_path, monkeypatch):
    raw = tiny_experiment(epochs=2)
    _fail_seed_1(monkeypatch)
    first = _sweep(tmp_path, raw)
    failed = first.failed
    assert len(failed) == 2 and all("RuntimeError: boom" in e for e in failed.values()), failed
    for rid in failed:
        s = json.loads((first.results_dir / "runs" / rid / "summary.json").read_text())
        assert s["status"] == "failed" and s["error"] == "RuntimeError: boom: injected by the test"
        assert "Traceback" in s["traceback"]
    assert len(first.summary) == 2 and set(first.summary["run_id"]).isdisjoint(failed)

    monkeypatch.undo()
    second = _sweep(tmp_path, raw)
    assert sorted(second.skipped) == sorted(r.run_id for r in first.plan) and not second.outcomes
    assert second.failed == failed

    third = _sweep(tmp_path, raw, retry_failed=True)
    assert sorted(third.ran) == sorted(failed) and not third.failed
    assert len(third.summary) == 4

    forced = _sweep(tmp_path, raw, force=True)
    assert sorted(forced.ran) == sorted(r.run_id for r in first.plan)


def test_editing_the_sweep_reuses_run_ids(tmp_path):
    """Adding sweep values resumes; dropping one would hide its runs, so it needs --extend (the
    folder then lists both plans) or another name."""
    raw = tiny_experiment(epochs=2, sweep={"train.seed": [0, 1]})
    first = _sweep(tmp_path, raw)
    raw["sweep"] = {"train.seed": [1, 2]}
    with pytest.raises(BnexpError, match=r"1 run\(s\) this plan does not include .* --extend"):
        _sweep(tmp_path, raw)
    second = run_experiment(experiment_from_dict(raw), raw, tmp_path, workers=1, extend=True)
    kept = [r.run_id for r in first.plan if r.params["train.seed"] == 1]
    assert second.skipped == kept, f"skipped {second.skipped}, expected the seed-1 run {kept}"
    assert len(second.ran) == 1
    assert sorted(second.summary["train.seed"]) == [0, 1, 2], "summary.csv keeps the seed-0 run"
    plan = pd.read_csv(second.results_dir / "plan.csv", dtype={"run_id": str})
    assert sorted(plan["train.seed"]) == [0, 1, 2]
    raw["sweep"] = {"train.seed": [0, 1, 2, 3]}  # only adds a value: resumes, no flag needed
    third = _sweep(tmp_path, raw)
    assert len(third.ran) == 1 and len(third.skipped) == 3


def test_a_run_claimed_elsewhere_is_waited_for_not_trained_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(bnexp.sweep.runner, "POLL_S", 0.1)
    raw = tiny_experiment(epochs=2, sweep={"train.seed": [0, 1]})
    exp = experiment_from_dict(raw)
    plan = expand(exp)
    results = tmp_path / exp.name
    other = plan[0]
    claimed, release = threading.Event(), threading.Event()

    def other_process():  # holds the claim, finishes the run, then lets go
        with RunStore(results).claim(other.run_id) as ok:
            assert ok
            claimed.set()
            release.wait(30)
            train_run(other.config, results / "runs" / other.run_id, params=other.params)

    t = threading.Thread(target=other_process)
    t.start()
    claimed.wait(30)
    waits = []
    threading.Timer(1.0, release.set).start()
    result = run_experiment(exp, raw, tmp_path, workers=1, on_wait=waits.append)
    t.join()
    assert waits and waits[0] == [other.run_id], waits
    assert result.ran == [plan[1].run_id], f"trained here: {result.ran}"
    assert result.skipped == [other.run_id]
    assert len(result.summary) == 2


def test_claim_of_a_killed_process_does_not_block(tmp_path):
    store = RunStore(tmp_path)
    code = (
        "import sys, time\nfrom bnexp.sweep.store import RunStore\n"
        f"with RunStore({str(tmp_path)!r}).claim('abc') as ok:\n"
        "    print(ok, flush=True)\n    time.sleep(60)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], env=bnexp_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "True"
        assert store.state("abc") == "running"
        with store.claim("abc") as ok:
            assert not ok, "the claim of a live process must hold"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert store.state("abc") == "missing", "claim.json of a dead process is not 'running'"
    with store.claim("abc") as ok:
        assert ok, "the kernel released the dead process's lock"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_claim_whose_process_holds_no_lock_is_not_running(tmp_path):
    """A killed worker can linger as a zombie (its parent died too, nobody reaps it) or its pid
    be reused: the pid is alive, but the kernel dropped its lock, so the run is not running."""
    store = RunStore(tmp_path)
    with store.claim("abc") as ok:
        assert ok and store.state("abc") == "running"  # this live process holds the lock
    run_dir = store.run_dir("abc")
    (run_dir / "claim.json").write_text(json.dumps({"host": os.uname().nodename, "pid": 1}))
    assert os.path.exists(run_dir / ".lock")  # pid 1 lives, but holds no lock on it
    assert store.state("abc") == "missing"
    # a zombie: a child that exited and is not reaped yet
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{child.pid}/stat")
    deadline = time.monotonic() + 30
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    (run_dir / "claim.json").write_text(json.dumps({"host": os.uname().nodename, "pid": child.pid}))
    assert store.state("abc") == "missing"
    child.wait()


def test_atomic_write_killed_before_rename_keeps_the_old_file(tmp_path):
    target = tmp_path / "runs" / "abc" / "summary.json"
    target.parent.mkdir(parents=True)
    target.write_text('{"old": true}\n')
    code = (
        "import os, signal\nimport bnexp.io as io\n"
        "def killed(src, dst):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
        "io.os.replace = killed\n"
        f"io.atomic_write_json({str(target)!r}, {{'new': True, 'pad': 'x' * 100000}})\n"
    )
    p = subprocess.run([sys.executable, "-c", code], env=bnexp_env())
    assert p.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"old": True}
    leftovers = list(target.parent.glob(".*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 100000
    RunStore(tmp_path).remove_temp_files("abc")
    assert not list(target.parent.glob(".*.tmp"))


def test_execute_run_skips_a_run_finished_meanwhile(tmp_path):
    raw = tiny_experiment(epochs=1, sweep={})
    run = expand(experiment_from_dict(raw))[0]
    first = execute_run(tmp_path, run)
    again = execute_run(tmp_path, run)
    assert (first.status, again.status) == ("complete", "skipped")
    assert not (tmp_path / "runs" / run.run_id / "claim.json").exists()
    assert os.listdir(tmp_path / "runs" / run.run_id)  # the folder and its files stay


def test_workers_option_validated(tmp_path):
    raw = tiny_experiment(epochs=1, sweep={})
    with pytest.raises(bnexp.errors.BnexpError, match="--workers 0"):
        run_experiment(experiment_from_dict(raw), raw, tmp_path, workers=0)
    with pytest.raises(bnexp.errors.BnexpError, match="--executor dask"):
        run_experiment(experiment_from_dict(raw), raw, tmp_path, executor="dask")

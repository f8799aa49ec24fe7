"""`bnexp run` as a user runs it: killed (SIGKILL) at several points and rerun, two at once on one
folder, Ctrl-C, a failing run, --workers 2 against --workers 1; and `status` / `repro`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import (
    REPO,
    assert_same_results,
    bnexp_cmd,
    bnexp_env,
    patched_cmd,
    plan_ids,
    run_cli,
    summaries,
    tiny_experiment,
    write_yaml,
)
from typer.testing import CliRunner

from bnexp.cli import app
from bnexp.config import experiment_from_dict
from bnexp.sweep.runner import run_experiment
from bnexp.sweep.status import sweep_status

FAIL_SEED_1 = """
import bnexp.sweep.worker as _st
_real = _st.train_run
def _flaky(cfg, *a, **kw):
    if cfg.train.seed == 1:
        raise RuntimeError("boom: injected by the test")
    return _real(cfg, *a, **kw)
_st.train_run = _flaky
"""

KILL_WHILE_WRITING_SUMMARY = """
import os, signal
_real_replace = os.replace
def _replace(src, dst):
    if str(dst).endswith("summary.json"):  # the temporary file is written and fsynced, not renamed
        os.kill(os.getpid(), signal.SIGKILL)
    _real_replace(src, dst)
os.replace = _replace
"""


def log_trainings(log: Path) -> str:
    return f"""
import os
import bnexp.sweep.worker as _st
_real = _st.train_run
def _logged(cfg, run_dir, *a, **kw):
    with open({str(log)!r}, "a") as f:
        f.write(f"{{os.getpid()}} {{run_dir.name}}\\n")
    return _real(cfg, run_dir, *a, **kw)
_st.train_run = _logged
"""


def _reference(tmp_path: Path, raw: dict) -> Path:
    """The same sweep, uninterrupted, in this process with one worker."""
    return run_experiment(
        experiment_from_dict(raw), raw, tmp_path / "reference", workers=1
    ).results_dir


def _data_rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def _kill_when(args: list[str], condition, what: str, timeout: float = 240) -> None:
    """Start `bnexp ARGS` in its own process group; SIGKILL the whole group once `condition()`."""
    p = subprocess.Popen(
        bnexp_cmd(*args),
        env=bnexp_env(),
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            assert p.poll() is None, (
                f"the sweep ended (rc {p.returncode}) before the kill point '{what}': "
                f"{p.stderr.read()[-2000:]}"
            )
            assert time.monotonic() < deadline, f"kill point '{what}' not reached in {timeout} s"
            time.sleep(0.02)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        p.stderr.close()


def _no_leftovers(results: Path) -> None:
    for pattern in (".*.tmp", "checkpoint.pt", "claim.json"):
        found = sorted(str(p.relative_to(results)) for p in results.glob(f"runs/*/{pattern}"))
        assert not found, f"left behind: {found}"
    for path in results.glob("runs/*/*.json"):
        json.loads(path.read_text())
    for path in [results / "summary.csv", results / "plan.csv", *results.glob("runs/*/*.csv")]:
        pd.read_csv(path)


@pytest.mark.slow
def test_failing_run_is_recorded_and_the_command_exits_nonzero(tmp_path):
    raw = tiny_experiment(epochs=2, sweep={"train.seed": [0, 1, 2]})
    cfg = write_yaml(tmp_path / "exp.yaml", raw)
    p = run_cli(
        cmd=patched_cmd(
            FAIL_SEED_1, "run", str(cfg), "--out", str(tmp_path / "out"), "--workers", "1"
        )
    )
    assert p.returncode == 1, p.stderr
    results = tmp_path / "out" / "tiny"
    s = summaries(results)
    failed = [rid for rid, v in s.items() if v["status"] == "failed"]
    assert len(s) == 3 and len(failed) == 1, {k: v["status"] for k, v in s.items()}
    assert s[failed[0]]["error"] == "RuntimeError: boom: injected by the test"
    assert "1 run(s) failed" in p.stderr and f"{failed[0]}: RuntimeError: boom" in p.stderr, (
        p.stderr
    )
    assert "--retry-failed" in p.stderr
    table = pd.read_csv(results / "summary.csv", dtype={"run_id": str})
    assert len(table) == 2 and failed[0] not in set(table["run_id"])

    status = CliRunner().invoke(app, ["status", str(results)])
    assert status.exit_code == 0, status.output
    assert "2 done, 1 failed" in status.output, status.output


def test_repro_reports_identical_and_then_a_difference(tmp_path):
    raw = tiny_experiment(epochs=2, sweep={})
    result = run_experiment(experiment_from_dict(raw), raw, tmp_path, workers=1)
    rid = result.plan[0].run_id
    ok = CliRunner().invoke(app, ["repro", str(result.results_dir), rid[:6]])
    assert ok.exit_code == 0, ok.output
    assert f"reproduced: run {rid}: metrics.csv identical (3 rows)" in " ".join(ok.output.split())

    metrics = result.results_dir / "runs" / rid / "metrics.csv"
    frame = pd.read_csv(metrics)
    frame.loc[2, "test_loss"] += 0.001  # as if the recorded run had come out differently
    metrics.write_text(frame.to_csv(index=False))
    bad = CliRunner().invoke(app, ["repro", str(result.results_dir), rid])
    assert bad.exit_code == 1, bad.output
    assert "test_loss: 1 of 3 rows differ, max |diff| 0.001" in " ".join(bad.output.split()), (
        bad.output
    )

    missing = CliRunner().invoke(app, ["repro", str(result.results_dir), "zzz"])
    assert missing.exit_code == 2 and "no run with that id" in " ".join(missing.output.split())


@pytest.mark.slow
def test_sigkill_at_several_points_then_rerun(tmp_path):
    raw = tiny_experiment(
        epochs=8, sweep={"model.norm": ["none", "torch"], "train.seed": [0, 1, 2]}
    )
    cfg = write_yaml(tmp_path / "exp.yaml", raw)
    reference = _reference(tmp_path, raw)
    out = tmp_path / "out"
    results = out / "tiny"
    args = ["run", str(cfg), "--out", str(out), "--workers", "2"]

    def n_complete() -> int:
        return len(list(results.glob("runs/*/summary.json")))

    # 1. during training: a run is past its epoch-3 evaluation (checkpoints after epochs 1, 2, 3)
    _kill_when(
        args,
        lambda: any(_data_rows(m) >= 5 for m in results.glob("runs/*/metrics.csv")),
        "during training",
    )
    after_first = n_complete()
    # 2. between runs: once three more runs are complete
    _kill_when(args, lambda: n_complete() >= after_first + 3 and n_complete() >= 3, "between runs")
    assert n_complete() < 6
    # 3. while writing: killed inside the atomic write of a summary.json (temp file written, not
    # renamed)
    p = run_cli(cmd=patched_cmd(KILL_WHILE_WRITING_SUMMARY, *args[:-1], "1"))
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    assert list(results.glob("runs/*/.summary.json.*.tmp")), (
        "the kill did not happen inside the write"
    )
    # 4. rerun to the end
    p = run_cli(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_results(results, reference)
    _no_leftovers(results)
    resumed = {
        rid: s["resumed_from_epoch"]
        for rid, s in summaries(results).items()
        if s["resumed_from_epoch"]
    }
    assert resumed, "no run resumed from a checkpoint: the kills did not hit a run in progress"


@pytest.mark.slow
def test_two_concurrent_runs_on_one_folder_train_each_run_once(tmp_path):
    raw = tiny_experiment(
        epochs=6, sweep={"model.norm": ["none", "torch"], "train.seed": [0, 1, 2]}
    )
    cfg = write_yaml(tmp_path / "exp.yaml", raw)
    log = tmp_path / "trainings.log"
    cmd = patched_cmd(
        log_trainings(log), "run", str(cfg), "--out", str(tmp_path / "out"), "--workers", "1"
    )
    procs = [
        subprocess.Popen(
            cmd,
            env=bnexp_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = tmp_path / "out" / "tiny"
    lines = [line.split() for line in log.read_text().splitlines()]
    trained = sorted(rid for _, rid in lines)
    assert trained == sorted(plan_ids(results)), (
        f"trainings per run: {pd.Series(trained).value_counts().to_dict()}"
    )
    by_process = pd.Series([pid for pid, _ in lines]).value_counts().to_dict()
    print("runs trained per process:", by_process)
    assert all(s["status"] == "complete" for s in summaries(results).values())
    assert len(pd.read_csv(results / "summary.csv")) == 6
    _no_leftovers(results)


@pytest.mark.slow
def test_workers_2_equals_workers_1(tmp_path):
    raw = tiny_experiment(
        epochs=4, sweep={"model.norm": ["none", "torch", "custom"], "train.seed": [0, 1]}
    )
    cfg = write_yaml(tmp_path / "exp.yaml", raw)
    reference = _reference(tmp_path, raw)
    p = run_cli("run", str(cfg), "--out", str(tmp_path / "out"), "--workers", "2")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "runs (2 worker(s))" in p.stderr
    assert_same_results(tmp_path / "out" / "tiny", reference)


@pytest.mark.slow
def test_ctrl_c_stops_keeps_finished_runs_and_prints_the_resume_command(tmp_path):
    # 200 epochs (~1.5 s a run here): the sweep is still training, seconds from its end, when
    # the poll below sees the first finished run, however loaded the machine
    raw = tiny_experiment(
        epochs=200, sweep={"model.norm": ["none", "torch"], "train.seed": [0, 1, 2]}
    )
    cfg = write_yaml(tmp_path / "exp.yaml", raw)
    out = tmp_path / "out"
    results = out / "tiny"
    args = ["run", str(cfg), "--out", str(out), "--workers", "2"]
    p = subprocess.Popen(
        bnexp_cmd(*args),
        env=bnexp_env(),
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not list(results.glob("runs/*/summary.json")):
        assert p.poll() is None and time.monotonic() < deadline, (
            p.stderr.read()[-2000:] if p.poll() is not None else "timeout"
        )
        time.sleep(0.05)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C delivers to the sweep process
    _, err = p.communicate(timeout=60)
    stop_s = time.monotonic() - t0
    print(f"stopped {stop_s:.1f} s after SIGINT")
    assert p.returncode == 130, err[-3000:]
    assert stop_s < 15, f"took {stop_s:.1f} s to stop"
    assert "Resume with:" in err and f"bnexp run {cfg} --out {out} --workers 2" in " ".join(
        err.split()
    ), err[-2000:]
    kept = [rid for rid, s in summaries(results).items() if s["status"] == "complete"]
    assert kept and len(pd.read_csv(results / "summary.csv")) == len(kept)
    # the message counts what `bnexp status` shows; the report covers every finished run
    done = sweep_status(results).totals["done"]
    assert f"interrupted (Ctrl-C): {done} of 6 run(s) done and kept" in " ".join(err.split())
    assert done == len(kept), (done, kept)
    speedup = pd.read_csv(results / "tables" / "speedup.csv")
    assert speedup["runs"].sum() == len(kept), speedup
    status = CliRunner().invoke(app, ["status", str(results)])
    assert "running" not in status.output.split("—")[1].split("\n")[0], (
        status.output
    )  # nothing left claimed
    p = run_cli(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"skipped {len(kept)} run(s) already finished" in p.stdout
    assert len(pd.read_csv(results / "summary.csv")) == 6
    _no_leftovers(results)

"""Signals to a `--workers 2` sweep: SIGTERM (timeout, systemd, Slurm, docker stop)
behaves like Ctrl-C and exits 143; SIGKILL of the sweep process alone leaves no worker behind.
Real subprocesses; each test checks that no process of the sweep's session survives it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import (
    REPO,
    bnexp_cmd,
    bnexp_env,
    run_cli,
    summaries,
    tiny_experiment,
    write_yaml,
)

pytestmark = pytest.mark.slow


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`: the sweep and its fork server and workers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


def start_sweep(tmp_path: Path, epochs: int) -> tuple[subprocess.Popen, Path, list[str]]:
    raw = tiny_experiment(
        epochs=epochs, sweep={"model.norm": ["none", "torch"], "train.seed": [0, 1, 2]}
    )
    cfg = write_yaml(tmp_path / "exp.yaml", raw)
    out = tmp_path / "out"
    args = ["run", str(cfg), "--out", str(out), "--workers", "2"]
    p = subprocess.Popen(
        bnexp_cmd(*args),
        env=bnexp_env(),
        cwd=REPO,
        start_new_session=True,  # its own session: every process it starts can be found
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return p, out / "tiny", args


def wait_for(p: subprocess.Popen, condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if p.poll() is not None:
            raise AssertionError(f"the sweep ended (rc {p.returncode}) before {what}")
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout} s"
        time.sleep(0.05)


def assert_gone(sid: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (left := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes of the sweep still alive {within} s after it ended: {left}"


def test_sigterm_stops_like_ctrl_c_and_exits_143(tmp_path):
    # 200 epochs (~1.5 s a run here): the sweep is still training when the first run is seen done
    p, results, args = start_sweep(tmp_path, epochs=200)
    try:
        wait_for(p, lambda: list(results.glob("runs/*/summary.json")), "a finished run")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)  # to the sweep process only, as `kill PID` or systemd do
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    stop_s = time.monotonic() - t0
    assert p.returncode == 143, err[-3000:]
    assert stop_s < 15, f"took {stop_s:.1f} s to stop"
    assert "interrupted (SIGTERM)" in err and "Resume with:" in err, err[-2000:]
    assert_gone(p.pid, within=5)
    kept = [rid for rid, s in summaries(results).items() if s["status"] == "complete"]
    assert kept and len(pd.read_csv(results / "summary.csv")) == len(kept)
    assert not list(results.glob("runs/*/claim.json")), "a claim was left behind"
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"skipped {len(kept)} run(s) already finished" in again.stdout
    assert len(pd.read_csv(results / "summary.csv")) == 6


def test_sigkill_of_the_sweep_process_leaves_no_worker(tmp_path):
    p, results, args = start_sweep(tmp_path, epochs=200)
    try:
        # both workers are training (a claim each), and more runs are queued behind them
        wait_for(p, lambda: len(list(results.glob("runs/*/claim.json"))) >= 2, "two runs training")
        workers = [pid for pid in session_pids(p.pid) if pid != p.pid]
        assert len(workers) >= 2, f"expected a fork server and 2 workers, found {workers}"
        p.kill()  # the sweep process only: its workers are left to notice
        p.wait()
        assert_gone(p.pid, within=5)
    finally:
        os.killpg(p.pid, signal.SIGKILL) if session_pids(p.pid) else None
        p.communicate()
    # nothing trains after the kill: no run finishes later, and the folder resumes at once
    done = len(list(results.glob("runs/*/summary.json")))
    time.sleep(1)
    assert len(list(results.glob("runs/*/summary.json"))) == done
    status = run_cli("status", str(results))
    assert status.returncode == 0 and "running" not in status.stdout.split("—")[1].split("\n")[0]

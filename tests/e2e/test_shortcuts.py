"""The Makefile's sweep shortcuts compose: `make sweep-batch` then `make sweep-lr` (the README's
order) write to their own results folders; `--dry-run` refuses a conflicting plan as `run` does."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

import pytest
from sweep_helpers import REPO, bnexp_env, run_cli, tiny_experiment, write_yaml


def make_commands(*targets: str, **variables: str) -> list[list[str]]:
    """The bnexp commands `make TARGETS` runs, read with `make -n` (the venv stamp taken as made),
    each as `python -m bnexp ...`."""
    args = [f"{k}={v}" for k, v in variables.items()]
    out = subprocess.run(
        # --no-print-directory: under `make -C DIR test` the inherited MAKEFLAGS would add
        # "make[1]: Entering directory" lines to the commands read
        ["make", "-s", "-n", "--no-print-directory", "-o", ".venv/.installed", *targets, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    commands = []
    for line in out.splitlines():
        words = shlex.split(line)
        assert words[0].endswith("/bnexp"), line
        commands.append([sys.executable, "-m", "bnexp", *words[1:]])
    return commands


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_sweep_batch_then_sweep_lr_write_to_their_own_folders(tmp_path):
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny_experiment(epochs=1, sweep={}))
    batch, lr = make_commands(
        "sweep-batch",
        "sweep-lr",
        CONFIG=str(cfg),
        BATCH_SIZES="32 64",
        LRS="0.05 0.1",
        SEEDS="0",
        RUN_ARGS=f"--out {tmp_path / 'results'} --workers 1",
    )
    for cmd in (batch, lr):
        p = subprocess.run(
            cmd, cwd=tmp_path, env=bnexp_env(), capture_output=True, text=True, timeout=600
        )
        assert p.returncode == 0, p.stderr[-3000:]
    for name in ("tiny-batch", "tiny-lr"):
        status = run_cli("status", str(tmp_path / "results" / name))
        assert status.returncode == 0 and "2 done" in status.stdout, status.stdout


@pytest.mark.slow
def test_dry_run_refuses_a_conflicting_plan_as_run_does(tmp_path):
    out = tmp_path / "results"
    first = write_yaml(tmp_path / "a.yaml", tiny_experiment(epochs=1, sweep={"train.seed": [0]}))
    other = write_yaml(tmp_path / "b.yaml", tiny_experiment(epochs=1, sweep={"train.lr": [0.3]}))
    ran = run_cli("run", str(first), "--out", str(out), "--workers", "1")
    assert ran.returncode == 0, ran.stderr[-2000:]
    dry = run_cli("run", str(other), "--out", str(out), "--dry-run")
    run = run_cli("run", str(other), "--out", str(out))
    assert dry.returncode == run.returncode == 2, dry.stdout + dry.stderr
    assert "Refusing to replace its plan" in dry.stderr and "missing" not in dry.stdout
    assert dry.stderr.strip() == run.stderr.strip()  # the same one line
    extended = run_cli("run", str(other), "--out", str(out), "--dry-run", "--extend")
    assert extended.returncode == 0, extended.stderr

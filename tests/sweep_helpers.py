"""Tiny sweeps for the sweep tests: digits, one hidden layer of 16, a few epochs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_experiment(
    name: str = "tiny", epochs: int = 4, sweep: dict | None = None, **train
) -> dict:
    return {
        "name": name,
        "data": {"dataset": "digits"},
        "model": {"arch": "mlp", "hidden": [16], "activation": "relu", "norm": "none"},
        "train": {
            "lr": 0.1,
            "batch_size": 64,
            "epochs": epochs,
            "seed": 0,
            "device": "cpu",
            **train,
        },
        "measure": {"target": {"metric": "train_acc", "value": 0.9}},
        "sweep": sweep
        if sweep is not None
        else {"model.norm": ["none", "torch"], "train.seed": [0, 1]},
    }


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def bnexp_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def bnexp_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bnexp", *args]


def patched_cmd(patch: str, *args: str) -> list[str]:
    """`bnexp ARGS` in a Python that first runs `patch` (test-side fault injection, in-process
    runs)."""
    code = (
        f"import sys\n{patch}\nfrom bnexp.cli import main\n"
        "sys.argv = ['bnexp', *sys.argv[1:]]\nmain()\n"
    )
    return [sys.executable, "-c", code, *args]


def run_cli(
    *args: str, timeout: float = 300, cmd: list[str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd or bnexp_cmd(*args),
        env=bnexp_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def plan_ids(results: Path) -> list[str]:
    return list(pd.read_csv(results / "plan.csv", dtype={"run_id": str})["run_id"])


def summaries(results: Path) -> dict[str, dict]:
    return {
        p.parent.name: json.loads(p.read_text()) for p in (results / "runs").glob("*/summary.json")
    }


METRIC_KEYS = [
    "final_train_acc",
    "final_test_acc",
    "final_train_loss",
    "final_test_loss",
    "best_test_acc",
    "steps_to_target",
    "diverged",
    "diverged_step",
    "steps",
]


def assert_same_results(got: Path, want: Path) -> None:
    """Every run of `want` is in `got` once, complete, with identical metrics.csv bytes and final
    metrics."""
    ids = plan_ids(want)
    assert sorted(plan_ids(got)) == sorted(ids)
    got_s, want_s = summaries(got), summaries(want)
    assert sorted(got_s) == sorted(want_s) == sorted(ids), (
        f"runs with summary.json: {sorted(got_s)} vs {sorted(want_s)}"
    )
    for rid in ids:
        assert got_s[rid]["status"] == "complete", (
            f"{rid}: {got_s[rid].get('status')} {got_s[rid].get('error')}"
        )
        a = (got / "runs" / rid / "metrics.csv").read_bytes()
        b = (want / "runs" / rid / "metrics.csv").read_bytes()
        assert a == b, (
            f"{rid}: metrics.csv differs ({len(a)} vs {len(b)} bytes)\n"
            f"{a.decode()}\nvs\n{b.decode()}"
        )
        for key in METRIC_KEYS:
            assert got_s[rid][key] == want_s[rid][key], (
                f"{rid}: {key} {got_s[rid][key]!r} vs {want_s[rid][key]!r}"
            )
    table = pd.read_csv(got / "summary.csv", dtype={"run_id": str})
    assert sorted(table["run_id"]) == sorted(ids), f"summary.csv rows: {sorted(table['run_id'])}"

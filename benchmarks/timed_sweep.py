"""`python -m benchmarks.timed_sweep SWEEP.yaml OUT WORKERS`: the workers section's child process.

Runs the sweep as `bnexp run` does (the runs, then the report) and prints one JSON line: the
sweep's seconds timed inside this process (no interpreter start, imports or report) and the sum
of its runs' `wall_s` (summary.csv). Only the standard library is imported at the top: the
parent times this process from launch to exit, as it would time `bnexp run`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def timed_sweep(config: Path, out: Path, workers: int) -> dict:
    from bnexp.config import load_experiment
    from bnexp.report import build_report
    from bnexp.sweep.runner import run_experiment

    exp, raw = load_experiment(config)
    t0 = time.perf_counter()
    result = run_experiment(exp, raw, out, workers=workers)
    sweep_s = time.perf_counter() - t0
    if len(result.summary) != len(result.plan):
        raise SystemExit(f"{len(result.plan) - len(result.summary)} run(s) did not finish")
    build_report(result.results_dir)  # as `bnexp run` does after its runs
    return {"sweep_s": sweep_s, "runs_wall_s": float(result.summary.wall_s.sum())}


if __name__ == "__main__":  # guarded: the sweep's pool workers import this module too
    print(json.dumps(timed_sweep(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))))

"""The real-run check of the speed-up interval (issue 21): how often does the report's 95%
interval from 3 or 5 seeds cover the estimate from 24 real seeds?

Runs the quickstart (configs/quickstart.yaml: none vs torch's BN, 24 seeds, about 30 s on a
quiet 2-core machine) into a temporary folder (or reads --results), then draws random 3- and
5-seed subsets and computes the report's speed-up with its own functions
(bnexp.report.tables.censored_steps and paired_ratio: the geometric mean of the per-seed step
ratios with exp of the t-interval of their logs). For reference it also shows the percentile
bootstrap of the ratio of means the report used before (10,000 resamples), against the
24-seed ratio of means.

  python benchmarks/coverage_real.py                  # train, then check (prints the table)
  python benchmarks/coverage_real.py --results DIR    # an existing results/<name> folder
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bnexp.report import load_summary
from bnexp.report.tables import censored_steps, paired_ratio

REPO = Path(__file__).resolve().parents[1]


def train(out: Path, seeds: int, workers: int) -> Path:
    """The quickstart with norms none and torch over `seeds` seeds, into out/quickstart."""
    seed_list = ",".join(map(str, range(seeds)))
    cmd = [sys.executable, "-m", "bnexp", "run", str(REPO / "configs" / "quickstart.yaml"),
           "--out", str(out), "--workers", str(workers), "--set",
           "sweep.model.norm=[none,torch]", "--set", f"sweep.train.seed=[{seed_list}]"]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out / "quickstart"


def old_bootstrap(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """The former interval: percentile bootstrap of mean(a) / mean(b), pairs resampled."""
    idx = rng.integers(0, len(a), size=(10_000, len(a)))
    lo, hi = np.quantile(a[idx].mean(1) / b[idx].mean(1), [0.025, 0.975])
    return float(lo), float(hi)


def coverage(results: Path, subsets: int, sizes: tuple[int, ...], seed: int = 0) -> pd.DataFrame:
    """Per subset size: how often the 95% interval of a random subset covers the full estimate."""
    df = censored_steps(load_summary(results), [])
    none, bn = df[df["norm"] == "none"], df[df["norm"] != "none"]
    full = paired_ratio(none, bn, "steps_c")
    pairs = none[["seed", "steps_c"]].merge(bn[["seed", "steps_c"]], on="seed")
    a, b = pairs["steps_c_x"].to_numpy(float), pairs["steps_c_y"].to_numpy(float)
    full_means = a.mean() / b.mean()
    rng = np.random.default_rng(seed)
    rows = []
    for k in sizes:
        new = old = 0
        for _ in range(subsets):
            pick = rng.choice(len(a), size=k, replace=False)
            seeds = set(pairs["seed"].iloc[pick])
            r = paired_ratio(none[none["seed"].isin(seeds)], bn[bn["seed"].isin(seeds)], "steps_c")
            new += r.low <= full.ratio <= r.high
            lo, hi = old_bootstrap(a[pick], b[pick], rng)
            old += lo <= full_means <= hi
        rows.append({"seeds": k, "subsets": subsets, "t_interval_covers": new / subsets,
                     "old_bootstrap_covers": old / subsets})  # fmt: skip
    print(
        f"{len(a)} paired seeds ({int(df['censored'].sum())} censored runs): speed-up "
        f"{full.ratio:.2f}× [{full.low:.2f}, {full.high:.2f}] (geometric mean, 95% t-CI); "
        f"ratio of means {full_means:.2f}×"
    )
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, help="an existing results folder (skips training)")
    p.add_argument("--seeds", type=int, default=24)
    p.add_argument("--subsets", type=int, default=400)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results or train(Path(tmp), args.seeds, args.workers)
        print(coverage(results, args.subsets, (3, 5)).to_string(index=False))


if __name__ == "__main__":
    main()

"""`make bench`: the training-loop benchmark (benchmarks.sections: every row of issue 14's goal
table, each beside its goal) and the BN layer benchmark (bnexp.bench.bn), as one table on the
terminal and in benchmarks/results.csv (git-ignored). Ratios are measured side by side in this
one process.

  python -m benchmarks.run                  # everything, full sizes (several minutes)
  python -m benchmarks.run --tiny           # seconds: the code paths, not the figures
  python -m benchmarks.run --section loops --section vectorize --repeats 7
  python -m benchmarks.run --device cuda    # `make bench-gpu`: the gpu section and the BN
                                            # layer on the GPU (benchmarks.gpu)

Run it from the checkout's root (`benchmarks` is a folder of it, not part of the bnexp package).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console

from benchmarks.common import TABLE_WIDTH, row
from benchmarks.gpu import bench_gpu
from benchmarks.sections import COLUMNS, SECTIONS, STUDY, bench_train, rich_table
from bnexp.bench.bn import STEP_RATIO_GOAL, bench_bn
from bnexp.io import atomic_write_csv

REPO = Path(__file__).resolve().parents[1]
# the real data beside the checkout (the team's layout), unless BNEXP_SHARED_DATA says elsewhere
DATA = Path(os.environ.get("BNEXP_SHARED_DATA", REPO.parent / "shared" / "data"))


BN_REPEATS = 30  # `bnexp bench bn --repeats 30 --layer-only`: more than its quick default


def bn_rows(repeats: int, log, device: str = "cpu") -> pd.DataFrame:
    """bnexp.bench.bn's table (every shape, the layer alone too) in the long format."""
    log(f"bn: custom BN vs torch BN, one training step, {device}")
    df = bench_bn(repeats=repeats, device=device, layer_only=True)
    rows = []
    for r in df.to_dict("records"):
        case = f"{r.get('shape', '')} {r.get('scope', '')}".strip()
        # the goal (STEP_RATIO_GOAL) is for a whole training step; the layer alone is shown
        # for insight (a harder comparison: the layers around it are shared cost)
        step = r.get("scope") == "step"
        note = f"median of {r.get('repeats', '?')}; {r.get('custom_path', '')}"
        rows += [
            row("bn", case, "custom step", r["custom_ms"], "ms"),
            row("bn", case, "torch step", r["torch_ms"], "ms"),
            row(
                "bn",
                case,
                "custom / torch",
                r["ratio"],
                "x",
                f"<= {STEP_RATIO_GOAL}" if step else None,
                note + ("" if step else "; the layer alone, no goal"),
            ),
        ]
    return pd.DataFrame(rows, columns=COLUMNS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="tiny sizes and 1 repeat: checks the code, not the speed",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repeats per measurement (default 5; 1 with --tiny)",
    )
    ap.add_argument(
        "--section",
        action="append",
        choices=[*SECTIONS, "gpu", "bn"],
        help="only these sections (repeatable)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in this process (default 1: on shared cores, intra-op threads make "
        "small-model timings swing 10-100x; 0 = torch's default)",
    )
    ap.add_argument(
        "--device",
        default="cpu",
        help="cpu (default: every section) or cuda / cuda:N: the gpu section and the BN layer "
        "benchmark on that device (the CPU sections are the CPU's)",
    )
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results.csv", help="CSV to write"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    log = lambda msg: console.print(f"[dim]{msg}[/]")  # noqa: E731
    on_cpu = torch.device(args.device).type == "cpu"
    sections = tuple(args.section or ((*SECTIONS, "bn") if on_cpu else ("gpu", "bn")))
    if args.threads:  # for every section in this process, as the title says
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data_root = DATA if DATA.is_dir() else None
    repeats = args.repeats or (1 if args.tiny else 5)
    parts = [
        bench_train(
            tiny=args.tiny,
            repeats=args.repeats,
            sections=tuple(s for s in sections if s not in ("bn", "gpu")),
            data_root=data_root,
            log=log,
            study_config=REPO / "configs" / STUDY,
        )
    ]
    if "gpu" in sections:
        parts.append(bench_gpu(args.device, args.tiny, repeats, data_root, log))
    if "bn" in sections:
        bn_repeats = args.repeats or (1 if args.tiny else BN_REPEATS)
        parts.append(bn_rows(bn_repeats, log, args.device))
    parts = [p for p in parts if p is not None and not p.empty]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    atomic_write_csv(args.out, df)
    title = (
        f"bnexp benchmarks — {args.device}, "
        f"{args.threads or torch.get_num_threads()} torch thread(s), "
        f"{'tiny sizes' if args.tiny else 'full sizes'}, {time.perf_counter() - t0:.0f} s"
    )
    Console(width=TABLE_WIDTH).print(rich_table(df, title))
    console.print(f"written: {args.out} (with a note per row)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

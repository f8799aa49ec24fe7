"""A synthetic results folder in the layout `bnexp run` writes, with hand-chosen numbers: the
report's tests compare its tables and claims with numbers computed by hand from STEPS and GAP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from bnexp.results import SUMMARY_COLUMNS
from bnexp.training.probes import NOISE_COLUMNS, PROBE_COLUMNS

# steps_to_target by (norm, batch_size, lr) -> per seed; None = never reached (censored)
STEPS = {
    ("none", 64, 0.1): [100, 120, None],
    ("torch", 64, 0.1): [10, 20, 20],
    ("none", 64, 0.5): [80, 90, 100],
    ("torch", 64, 0.5): [8, 9, 10],
    ("none", 32, 0.1): [150, 160, 170],
    ("torch", 32, 0.1): [30, 30, 30],
    ("none", 32, 0.5): [None, None, None],  # diverged
    ("torch", 32, 0.5): [15, 16, 17],
}
GAP = {"none": [0.05, 0.06, 0.07], "torch": [0.03, 0.03, 0.05]}


def make_results(root, ghost: bool = False, numeric_ids: bool = False):
    """A results folder in the layout bnexp run writes, with hand-chosen numbers.

    numeric_ids: run ids that look like numbers (`0353662000`, `4980e71001`, ...), as about 0.8%
    of real run ids (short hex hashes) do; read as numbers they lose their folder.
    """
    root.mkdir(parents=True)
    rows = []
    for (norm, bs, lr), steps in STEPS.items():
        for ghost_size in [16, 32] if ghost else [None]:
            for seed, s in enumerate(steps):
                diverged = norm == "none" and lr == 0.5 and bs == 32
                rid = f"{norm}-{bs}-{lr}-{seed}-{ghost_size}"
                if numeric_ids:  # half with a leading zero, half an exponent
                    rid = f"0353662{len(rows):03d}" if len(rows) % 2 else f"4980e71{len(rows):03d}"
                gap = GAP[norm][seed] + (0.01 if ghost_size == 16 else 0.0)
                row = {
                    "run_id": rid,
                    "norm": norm,
                    "batch_size": bs,
                    "lr": lr,
                    "seed": seed,
                    "final_train_acc": 0.99,
                    "final_test_acc": 0.99 - gap,
                    "final_train_loss": 0.05,
                    "final_test_loss": 0.05 + 2 * gap,
                    "gen_gap": gap,
                    "loss_gap": 2 * gap,
                    "best_test_acc": 0.99 - gap,
                    "steps_to_target": s,
                    "epochs_to_target": None if s is None else s / 10,
                    "time_to_target_s": None if s is None else s / 100,
                    "diverged": diverged,
                    "diverged_step": 7 if diverged else None,
                    "steps": 7 if diverged else 200,
                    "epochs": 20,
                    "wall_s": 3.0,
                    "train_s": 2.0,
                    "eval_s": 1.0,
                    "device": "cpu",
                    "model.norm": norm,
                    "train.batch_size": bs,
                    "train.lr": lr,
                    "train.seed": seed,
                }
                if ghost:
                    row["model.ghost_batch_size"] = ghost_size
                rows.append(row)
                run = root / "runs" / rid
                run.mkdir(parents=True)
                (run / "config.yaml").write_text(
                    yaml.safe_dump({"measure": {"target": {"metric": "train_acc", "value": 0.95}}})
                )
                steps_axis = np.arange(0, 201, 50)
                pd.DataFrame(
                    {
                        "epoch": steps_axis / 10,
                        "step": steps_axis,
                        "lr": lr,
                        "train_loss": 1 / (1 + steps_axis),
                        "train_acc": steps_axis / 200,
                        "test_acc": steps_axis / 210,
                        "test_loss": 1.0,
                    }
                ).to_csv(run / "metrics.csv", index=False)
                probes = []
                sites = ["z", "z_tilde"] if norm != "none" else ["z"]
                for step in (0, 10, 20):
                    for site in sites:
                        for unit in ("0", "all"):
                            r = {
                                "step": step,
                                "layer": 3,
                                "site": site,
                                "unit": unit,
                                "p15": -1 + step / 100,
                                "p50": step / 100,
                                "p85": 1 + step / 100,
                                "mean": step / 100,
                                "std": 0.5,
                            }
                            if unit == "all" and step:
                                r.update(drift_p50=0.1 if site == "z" else 0.01, drift_std=0.02)
                            probes.append(r)
                    if step:
                        probes.append(
                            {
                                "step": step,
                                "layer": 3,
                                "site": "ics",
                                "unit": "all",
                                "ics_l2": 0.1,
                                "ics_cos": 0.9,
                                "grad_norm": 1.0,
                            }
                        )
                pd.DataFrame(probes, columns=PROBE_COLUMNS).to_csv(run / "probes.csv", index=False)
                if norm != "none":
                    noise = [
                        {
                            "layer": layer,
                            "batch_size": m,
                            "samples": 10,
                            "channels": 4,
                            "n_train": 1000,
                            "mean_noise": m**-0.5,
                            "var_noise": (2 / m) ** 0.5,
                            "expected_mean_noise": m**-0.5,
                        }
                        for layer in (1, 2)
                        for m in (4, 16, 64)
                    ]
                    pd.DataFrame(noise, columns=NOISE_COLUMNS).to_csv(
                        run / "bn_noise.csv", index=False
                    )
    columns = SUMMARY_COLUMNS + [c for c in rows[0] if c not in SUMMARY_COLUMNS]
    pd.DataFrame(rows, columns=columns).to_csv(root / "summary.csv", index=False)
    return root


def write_results(root, runs: list[dict], target=None, swept=("norm", "batch_size", "seed")):
    """A results folder from hand-written runs: each a dict with norm, batch_size, seed, gen_gap
    (final), steps_to_target (None: never reached), optionally run_id (shared: one run planned
    in several cells), lr, ghost (model.ghost_batch_size), test_acc (final), val_acc
    (final_val_acc: a validation split), diverged, and `metrics`: rows (step, train_acc,
    test_acc, train_loss, test_loss) of its metrics.csv. `swept`: the dotted columns
    summary.csv gets (as a sweep over them writes)."""
    target = target or {"metric": "train_acc", "value": 0.95}
    dotted = {"norm": "model.norm", "batch_size": "train.batch_size", "seed": "train.seed",
              "lr": "train.lr", "ghost": "model.ghost_batch_size"}  # fmt: skip
    rows = []
    for i, r in enumerate(runs):
        rid = r.get("run_id", f"run{i:03d}")  # a shared id: one run planned in several cells
        test_acc = r.get("test_acc", 0.9)
        row = {
            "run_id": rid,
            "norm": r["norm"],
            "batch_size": r["batch_size"],
            "lr": r.get("lr", 0.1),
            "seed": r["seed"],
            "final_train_acc": test_acc + r["gen_gap"],
            "final_test_acc": test_acc,
            "final_train_loss": 0.1,
            "final_test_loss": 0.1 + r["gen_gap"],
            "gen_gap": r["gen_gap"],
            "loss_gap": r["gen_gap"],
            "best_test_acc": test_acc,
            "steps_to_target": r.get("steps_to_target"),
            "diverged": r.get("diverged", False),
            "steps": r.get("steps", 100),
            "epochs": 10,
            "train_s": 1.0,
        }
        if "val_acc" in r:
            row["final_val_acc"] = r["val_acc"]
        for key in swept:
            row[dotted[key]] = r.get(key, 0.1 if key == "lr" else None)
        rows.append(row)
        run = root / "runs" / rid
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"measure": {"target": target}}))
        cols = ["step", "train_acc", "test_acc", "train_loss", "test_loss"]
        metrics = pd.DataFrame(r.get("metrics", [(0, 0.1, 0.1, 2.0, 2.0)]), columns=cols)
        metrics.insert(0, "epoch", range(len(metrics)))
        metrics.to_csv(run / "metrics.csv", index=False)
    columns = SUMMARY_COLUMNS + [c for c in rows[0] if c not in SUMMARY_COLUMNS]
    pd.DataFrame(rows, columns=columns).to_csv(root / "summary.csv", index=False)
    return root

"""TensorBoard event files: results/<name>/tensorboard/<run_id>/ per run, so that
`tensorboard --logdir results/<name>` lists the runs side by side.

Per run: scalars per evaluation step (train/loss, train/acc, test/loss, test/acc, lr; x = optimizer
step), the summary's numbers as final/<name> (final/test_acc, final/gen_gap, ...) at the last
step, and the hparams plugin's session (the swept keys plus norm, batch size, lr and seed).
tensorboard/ itself holds the hparams experiment (those keys and the final metrics), rewritten at
the end of every sweep, so the HParams tab shows one row per run with the final metrics as columns.

Written with the tensorboard package alone (its event writer and hparams protos): no TensorFlow,
no torch. A run's folder is written whole under a temporary name and renamed into place, so a run
is logged once: a folder that exists is never written again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bnexp.results import ResultsFolder

SCALARS = {  # metrics.csv column -> tag
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "test_loss": "test/loss",
    "test_acc": "test/acc",
    "lr": "lr",
    "epoch": "epoch",
}
# always in the hparams table, swept or not (the columns every comparison splits on)
BASE_HPARAMS = ("model.norm", "train.batch_size", "train.lr", "train.seed")
FINAL = ("final_train_acc", "final_test_acc", "final_train_loss", "final_test_loss", "gen_gap")
FINAL += ("loss_gap", "best_test_acc", "steps_to_target", "diverged", "wall_s")


def final_tag(key: str) -> str:
    """final_test_acc -> final/test_acc, gen_gap -> final/gen_gap."""
    return f"final/{key.removeprefix('final_')}"


def _hparam_value(value: Any) -> bool | float | str:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return str(value)  # lists (hidden: [16]), None


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, results_dir: Path):
        import tensorboard  # noqa: F401 - ImportError here: the caller's warning names the extra

        self.root = ResultsFolder(results_dir).tensorboard
        self.root.mkdir(parents=True, exist_ok=True)

    def hparams(self, run: Any) -> dict[str, bool | float | str]:
        keys = list(BASE_HPARAMS) + [k for k in run.params if k not in BASE_HPARAMS]
        return {k: _hparam_value(run.config.get(k, run.params.get(k))) for k in keys}

    def log_run(self, run: Any) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import summary_v2 as hp
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        final = self.root / run.run_id
        if final.exists():
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".tb-{run.run_id}-", dir=self.root.parent))
        try:
            writer = EventFileWriter(str(tmp))
            times = [t / 1000 for t in run.timestamps_ms()]
            start = times[0] if times else time.time()
            writer.add_event(
                Event(wall_time=start, step=0, summary=hp.hparams_pb(self.hparams(run), run.run_id))
            )
            for i, (_, row) in enumerate(run.metrics.iterrows()):
                values = [
                    Summary.Value(tag=tag, simple_value=float(row[col]))
                    for col, tag in SCALARS.items()
                    if col in row.index
                ]
                writer.add_event(
                    Event(wall_time=times[i], step=int(row["step"]), summary=Summary(value=values))
                )
            last = run.final_metrics()
            steps = int(run.summary.get("steps") or 0)
            values = [
                Summary.Value(tag=final_tag(k), simple_value=last[k]) for k in FINAL if k in last
            ]
            writer.add_event(
                Event(
                    wall_time=times[-1] if times else start,
                    step=steps,
                    summary=Summary(value=values),
                )
            )
            writer.close()
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def finish(self, interrupted: bool, runs: list[Any]) -> None:
        """The hparams experiment over the complete runs: their keys, values and final metrics."""
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.plugins.hparams import summary_v2 as hp
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        values: dict[str, set] = {}
        for run in runs:
            for k, v in self.hparams(run).items():
                values.setdefault(k, set()).add(v)
        if not values:
            return
        hparams = []
        for key, seen in values.items():
            same_type = len({type(v) for v in seen}) == 1
            hparams.append(hp.HParam(key, hp.Discrete(sorted(seen)) if same_type else None))
        metrics = [hp.Metric(final_tag(k)) for k in FINAL]
        old = [p for p in self.root.iterdir() if p.is_file() and "tfevents" in p.name]
        writer = EventFileWriter(str(self.root))
        writer.add_event(
            Event(wall_time=time.time(), summary=hp.hparams_config_pb(hparams, metrics))
        )
        writer.close()
        for p in old:  # the new file is complete: the older experiments can go
            p.unlink(missing_ok=True)

    def where(self) -> str:
        return f"tensorboard --logdir {self.root.parent}"

"""The run store: one folder per run id, and the rules for who trains which run.

results/<name>/runs/<run_id>/ holds what `train.train_run` writes, plus:
  .lock        the claim: an OS file lock (flock) held while a process trains the run. The kernel
               drops it when that process dies, even by SIGKILL, so a killed sweep never blocks
               a rerun; two `bnexp run` on one folder never train the same run at once.
  claim.json   who holds the claim (host, pid, since), for `bnexp status`; removed on release.
  summary.json status "complete" (diverged runs included) or "failed" (+ error, traceback).

A run's state, read from these files:
  done      summary.json, status complete
  failed    summary.json, status failed
  running   claim.json of a live process (other hosts: taken at its word)
  partial   checkpoint.pt and nobody running it: the next run resumes from there
  missing   nothing usable yet

Executors call `bnexp.sweep.execute.execute_run` in whatever process trains the run; it claims,
re-checks the state under the claim, trains or skips, and records failures. So resume, skip and
claims behave the same in-process, in a process pool or as a Ray task. This module imports no
torch: `bnexp status` reads a folder in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from bnexp.config import PlannedRun
from bnexp.io import atomic_write_json
from bnexp.results import CHECKPOINT

STATES = ("done", "failed", "running", "partial", "missing")


@dataclass(frozen=True)
class Outcome:
    """What happened to one run in this call."""

    run_id: str
    status: str  # complete | diverged | failed | skipped (already done) | busy (claimed elsewhere) | interrupted
    error: str | None = None  # failed: "ExceptionType: message"
    seconds: float = 0.0


class RunStore:
    def __init__(self, results_dir: str | Path):
        self.root = Path(results_dir)

    def run_dir(self, rid: str) -> Path:
        return self.root / "runs" / rid

    def summary(self, rid: str) -> dict | None:
        path = self.run_dir(rid) / "summary.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def state(self, rid: str) -> str:
        summary = self.summary(rid)
        if summary is not None:
            return "failed" if summary.get("status") == "failed" else "done"
        if self._claimed_by_live_process(rid):
            return "running"
        return "partial" if (self.run_dir(rid) / CHECKPOINT).exists() else "missing"

    def _claimed_by_live_process(self, rid: str) -> bool:
        try:
            claim = json.loads((self.run_dir(rid) / "claim.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        if claim.get("host") != socket.gethostname():
            return True
        try:
            os.kill(int(claim["pid"]), 0)
        except ProcessLookupError:
            return False  # left behind by a killed process
        except PermissionError:
            return True
        return True

    @contextmanager
    def claim(self, rid: str) -> Iterator[bool]:
        """Yields True while this process holds the run's lock, False if another process does."""
        run_dir = self.run_dir(rid)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(run_dir / ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            atomic_write_json(
                run_dir / "claim.json",
                {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
            yield True
        finally:
            (run_dir / "claim.json").unlink(missing_ok=True)
            lock.release()

    def tidy(self, rid: str) -> None:
        """For a finished run: drop what a process killed between writing summary.json and
        cleaning up left behind (claim.json, checkpoint.pt, temporary files)."""
        run_dir = self.run_dir(rid)
        leftovers = [run_dir / "claim.json", run_dir / CHECKPOINT, *run_dir.glob(".*.tmp")]
        if not any(p.exists() for p in leftovers) or self._claimed_by_live_process(rid):
            return
        with self.claim(rid) as ok:  # claim.json is rewritten, and removed on release
            if ok and self.summary(rid) is not None:
                (run_dir / CHECKPOINT).unlink(missing_ok=True)
                self.remove_temp_files(rid)

    def clear(self, rid: str) -> None:
        """Remove a run's results (for --force and --retry-failed); call it holding the claim."""
        run_dir = self.run_dir(rid)
        for name in ("summary.json", CHECKPOINT, "metrics.csv", "timing.csv"):
            (run_dir / name).unlink(missing_ok=True)

    def ready_to_train(self, rid: str, redo: frozenset[str]) -> bool:
        """Call it holding the claim. False: the run is done or failed and `redo` does not name
        that state (skip it). True: train it, after clearing the results a redo replaces and
        any temporary files a kill left behind."""
        state = self.state(rid)  # again, under the claim: another process may have finished it
        if state in ("done", "failed"):
            if state not in redo:
                return False
            self.clear(rid)
        self.remove_temp_files(rid)
        return True

    def remove_temp_files(self, rid: str) -> None:
        """Temporary files of atomic writes cut short by a kill; call it holding the claim."""
        for tmp in self.run_dir(rid).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def record_failure(self, run: PlannedRun, exc: BaseException) -> str:
        error = f"{type(exc).__name__}: {exc}"
        cfg = run.config
        atomic_write_json(
            self.run_dir(run.run_id) / "summary.json",
            {
                "run_id": run.run_id,
                "status": "failed",
                "error": error,
                "traceback": "".join(traceback.format_exception(exc)),
                "norm": cfg.model.norm,
                "batch_size": cfg.train.batch_size,
                "lr": cfg.train.lr,
                "seed": cfg.train.seed,
                "params": run.params,
            },
        )
        return error

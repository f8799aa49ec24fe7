"""The run store: one folder per run id, and the rules for who trains which run.

results/<name>/runs/<run_id>/ holds what `train.train_run` writes, plus:
  .lock        the claim: an OS file lock (flock) held while a process trains the run. The kernel
               drops it when that process dies, even by SIGKILL, so a killed sweep never blocks
               a rerun; two `bnexp run` on one folder never train the same run at once.
  claim.json   who holds the claim (host, pid, since), for `bnexp status`; removed on release.
  summary.json status "complete" (diverged runs included) or "failed" (+ error, traceback).

A run's state, read from these files:
  done      summary.json, status complete, and the files a complete run leaves (config.yaml,
            metrics.csv, timing.csv) all there
  failed    summary.json, status failed
  damaged   summary.json unreadable (cut short, not a record) or a complete run missing one of
            its files: reported (a warning, and in `bnexp status`), and trained again
  running   claim.json of a live process (other hosts: taken at its word)
  partial   checkpoint.pt and nobody running it: the next run resumes from there
  missing   nothing usable yet

Executors call `bnexp.sweep.worker.execute_run` in whatever process trains the run; it claims,
re-checks the state under the claim, trains or skips, and records failures. So resume, skip and
claims behave the same in-process, in a process pool or as a Ray task. This module imports no
torch: `bnexp status` reads a folder in a fraction of a second.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from bnexp.config import PlannedRun
from bnexp.io import atomic_write_json
from bnexp.results import (
    CHECKPOINT,
    CLAIM,
    CONFIG,
    METRICS,
    RUN_LOCK,
    SUMMARY,
    TIMING,
    ResultsFolder,
)

log = logging.getLogger("bnexp")

_WARNED: set[tuple] = set()

# errnos that mean "the results folder cannot be written" (bnexp.sweep.folder says it to users)
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}
)

STATES = ("done", "failed", "damaged", "running", "partial", "missing")
# the files a complete run leaves besides summary.json; "done" needs them all, not empty
COMPLETE_FILES = (CONFIG, METRICS, TIMING)


class WorkerDied(RuntimeError):
    """The process training a run died before the run saved anything to resume from."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one run in this call."""

    run_id: str
    # complete | diverged | failed | skipped (already done) | busy (claimed elsewhere) |
    # interrupted | lost (its worker died) | storage (its files could not be written: the
    # sweep stops, nothing is recorded, a rerun resumes it)
    status: str
    error: str | None = None  # failed: "ExceptionType: message"
    seconds: float = 0.0
    exception: OSError | None = field(default=None, compare=False)  # storage: the OSError
    resumed_from_epoch: int | None = None  # complete: the checkpoint's epoch it resumed from


class RunStore:
    def __init__(self, results_dir: str | Path):
        self.root = Path(results_dir)

    def run_dir(self, rid: str) -> Path:
        return ResultsFolder(self.root).run(rid)

    def read_summary(self, rid: str) -> tuple[dict | None, str | None]:
        """(summary.json as a dict, None), (None, None) when there is none, or (None, what is
        wrong) when it is damaged: unreadable, or a complete run missing one of its files."""
        run_dir = self.run_dir(rid)
        try:
            summary = json.loads((run_dir / SUMMARY).read_bytes())
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError included
            return None, f"{SUMMARY} unreadable ({type(e).__name__}: {str(e)[:80]})"
        if not isinstance(summary, dict) or summary.get("status") not in ("complete", "failed"):
            return None, f"{SUMMARY} is not a run record (found {str(summary)[:40]!r})"
        if summary["status"] == "complete":
            for name in COMPLETE_FILES:
                try:
                    if (run_dir / name).stat().st_size == 0:
                        return None, f"{name} is empty although {SUMMARY} says complete"
                except OSError:
                    return None, f"{name} is missing although {SUMMARY} says complete"
        return summary, None

    def summary(self, rid: str) -> dict | None:
        """summary.json of a done or failed run; None when there is none or it is damaged
        (with a warning, once per run and process)."""
        summary, problem = self.read_summary(rid)
        if problem is not None:
            self._warn(rid, problem)
        return summary

    def _warn(self, rid: str, problem: str) -> None:
        key = (str(self.root), rid, problem)
        if key not in _WARNED:
            _WARNED.add(key)
            log.warning("run %s: %s: it counts as not done and is trained again", rid, problem)

    def state(self, rid: str, warn: bool = True) -> str:
        """One of STATES. `warn`: log a warning for a damaged run (once per run and process)."""
        summary, problem = self.read_summary(rid)
        if summary is not None:
            return "failed" if summary["status"] == "failed" else "done"
        if self._claimed_by_live_process(rid):
            return "running"
        if problem is not None:
            if warn:
                self._warn(rid, problem)
            return "damaged"
        return "partial" if (self.run_dir(rid) / CHECKPOINT).exists() else "missing"

    def _claimed_by_live_process(self, rid: str) -> bool:
        try:
            claim = json.loads((self.run_dir(rid) / CLAIM).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        if claim.get("host") != socket.gethostname():
            return True
        if not _alive(int(claim["pid"])):
            return False  # left behind by a killed process
        # a live pid may be a reused one, or a process that no longer holds the run's lock:
        # the lock itself says (the kernel drops it when its holder exits)
        return _locked(self.run_dir(rid) / RUN_LOCK)

    @contextmanager
    def claim(self, rid: str) -> Iterator[bool]:
        """Yields True while this process holds the run's lock, False if another process does."""
        run_dir = self.run_dir(rid)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(run_dir / RUN_LOCK)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            atomic_write_json(
                run_dir / CLAIM,
                {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
            yield True
        finally:
            (run_dir / CLAIM).unlink(missing_ok=True)
            lock.release()

    def tidy(self, rid: str) -> None:
        """For a finished run: drop what a process killed between writing summary.json and
        cleaning up left behind (claim.json, checkpoint.pt, temporary files)."""
        run_dir = self.run_dir(rid)
        leftovers = [run_dir / CLAIM, run_dir / CHECKPOINT, *run_dir.glob(".*.tmp")]
        if not any(p.exists() for p in leftovers) or self._claimed_by_live_process(rid):
            return
        with self.claim(rid) as ok:  # claim.json is rewritten, and removed on release
            if ok and self.summary(rid) is not None:
                (run_dir / CHECKPOINT).unlink(missing_ok=True)
                self.remove_temp_files(rid)

    def clear(self, rid: str) -> None:
        """Remove a run's results (for --force, --retry-failed and damaged runs); call it holding
        the claim."""
        run_dir = self.run_dir(rid)
        for name in (SUMMARY, CHECKPOINT, METRICS, TIMING):
            (run_dir / name).unlink(missing_ok=True)

    def ready_to_train(self, rid: str, redo: frozenset[str]) -> bool:
        """Call it holding the claim. False: the run is done or failed and `redo` does not name
        that state (skip it). True: train it, after clearing the results a redo replaces and
        any temporary files a kill left behind."""
        # again, under the claim: another process may have finished it
        summary, problem = self.read_summary(rid)
        if summary is not None:
            if ("failed" if summary["status"] == "failed" else "done") not in redo:
                return False
            self.clear(rid)
        elif problem is not None:  # what is left of it cannot be trusted: from the start
            self._warn(rid, problem)
            self.clear(rid)
        self.remove_temp_files(rid)
        return True

    def remove_temp_files(self, rid: str) -> None:
        """Temporary files of atomic writes cut short by a kill; call it holding the claim."""
        for tmp in self.run_dir(rid).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def failure_outcome(self, run: PlannedRun, exc: Exception, seconds: float) -> Outcome:
        """The outcome of a run that raised `exc`: "failed", recorded in its summary.json; or
        "storage" when the results folder cannot be written (full disk, read-only), recorded
        nowhere: that is no fault of the run, and the sweep stops."""
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return Outcome(run.run_id, "storage", f"OSError: {exc}", seconds, exc)
        try:
            return Outcome(run.run_id, "failed", self.record_failure(run, exc), seconds)
        except OSError as e:  # recording it failed too
            if e.errno not in STORAGE_ERRNOS:
                raise
            return Outcome(run.run_id, "storage", f"OSError: {e}", seconds, e)

    def record_failure(self, run: PlannedRun, exc: BaseException) -> str:
        error = f"{type(exc).__name__}: {exc}"
        cfg = run.config
        atomic_write_json(
            self.run_dir(run.run_id) / SUMMARY,
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

    def record_lost(self, run: PlannedRun, outcome: Outcome) -> Outcome:
        """A run whose worker died ("lost"): recorded as failed when it left nothing to resume
        (no checkpoint, no summary), so `status` and a rerun see a failure, not a missing run;
        one with a checkpoint stays partial and a rerun resumes it."""
        rid = run.run_id
        with self.claim(rid) as claimed:
            if (
                not claimed
                or (self.run_dir(rid) / CHECKPOINT).exists()
                or self.state(rid)
                in (
                    "done",
                    "failed",
                )
            ):
                return outcome
            try:
                error = self.record_failure(run, WorkerDied(outcome.error or "its worker died"))
            except OSError:
                return outcome
        return Outcome(rid, "failed", error, outcome.seconds)


def _alive(pid: int) -> bool:
    """A process with this pid exists and has not exited (a zombie, killed but not yet reaped
    by its parent, has: it holds no lock and trains nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): trust the pid
    return state != "Z"


def _locked(lock: Path) -> bool:
    """Whether some process holds the flock on `lock` (probed without waiting; where it cannot
    be probed, assume it is held)."""
    try:
        import fcntl

        fd = os.open(lock, os.O_RDONLY)
    except (ImportError, OSError):
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)

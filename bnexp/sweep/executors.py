"""Executors: where `execute_task` is called. In this process (one worker), in a local process
pool (each worker max(1, cores // workers) torch threads), or as Ray tasks. Resume, skip and
claims live in the run store, so every executor behaves the same.

Pool workers never outlive their sweep: the kernel kills them when their parent (the fork
server) dies, and a watchdog thread in each ends it within WATCHDOG_S of the sweep process's
death (even by SIGKILL), so an orphan never trains queued runs nor holds memory and claims.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from bnexp.config import PlannedRun
from bnexp.errors import BnexpError
from bnexp.sweep.store import Outcome
from bnexp.sweep.worker import execute_task

# runs trained by one call: one run, or the seeds of a cell trained together
Task = list[PlannedRun]
GRACE_S = 10.0  # after Ctrl-C, how long runs in progress get to stop before their workers end
WATCHDOG_S = 0.5  # how often a pool worker checks that its sweep process is alive
RAY_RETRIES = 3  # a Ray task whose worker or node died is run again (it resumes from the store)


def cpu_cores() -> int:
    """Cores this process may use (the affinity mask, e.g. under taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main_not_reimportable() -> str | None:
    """Why pool workers cannot start from this process's `__main__`, or None when they can.

    A worker (spawned, or forked from the fork server) first runs the caller's script again as
    `__mp_main__`. A script that calls bnexp outside an `if __name__ == "__main__":` block would
    start the sweep again in every worker; `python -` gives workers no file to run. A notebook,
    `python -c`, `python -m bnexp` and a guarded script are fine.
    """
    import inspect

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        return None  # python -c, a notebook, the interactive prompt: nothing is run again
    if not os.path.isfile(path):
        return f"{path}: the script has no file the workers could import (python -)"
    for frame_info in inspect.stack(context=0):
        frame = frame_info.frame
        if frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>":
            if not _under_main_guard(path, frame.f_lineno):
                name = os.path.basename(path)
                return f'{name} calls bnexp outside an `if __name__ == "__main__":` block'
            return None
    return None


def _under_main_guard(path: str, line: int) -> bool:
    """Whether `line` of the script at `path` lies in an `if __name__ == "__main__":` block."""
    import ast

    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return False
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and node.lineno <= line <= (node.end_lineno or node.lineno)
            and "__name__" in ast.unparse(node.test)
            and "__main__" in ast.unparse(node.test)
        ):
            return True
    return False


class SerialExecutor:
    """Runs in this process, one after another; the only one that reports epochs as they pass."""

    def __init__(
        self,
        results_dir: Path,
        on_run_start: Callable[[PlannedRun], None] | None,
        on_epoch: Callable[[int, int], None] | None,
    ):
        self.results_dir, self.on_run_start, self.on_epoch = results_dir, on_run_start, on_epoch

    def outcomes(self, tasks: list[Task], redo: frozenset[str]) -> Iterator[Outcome]:
        for task in tasks:
            if self.on_run_start:
                self.on_run_start(task[0])
            yield from execute_task(self.results_dir, task, redo, on_epoch=self.on_epoch)

    def stop(self) -> None:
        pass  # Ctrl-C has already interrupted the run in this process

    def close(self) -> None:
        pass


_STOP = None  # in a pool worker: the pool's stop Event
_TERMINATED = threading.Event()  # in a pool worker: SIGTERM arrived (its run stops at a step)


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when its parent dies (even by SIGKILL): the sweep
    process where workers are spawned; the fork server, which exits with the sweep, where they
    are forked from one (the watchdog covers the gap in between)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _sweep_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def _watch_sweep(pid: int) -> None:
    """End this worker as soon as the sweep process `pid` is gone. Its run's claim is a file lock,
    released by the kernel; its last checkpoint stays for a resume."""
    while _sweep_alive(pid):
        time.sleep(WATCHDOG_S)
    os._exit(1)


def _init_worker(stop_event, threads: int, sweep_pid: int) -> None:
    global _STOP
    _STOP = stop_event
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and sets the event
    # SIGTERM to the whole process group (`timeout`, Slurm): stop this run at its next step, as
    # the sweep process (which gets it too) stops the others; no half-written files
    signal.signal(signal.SIGTERM, lambda signum, frame: _TERMINATED.set())
    _die_with_parent()
    threading.Thread(target=_watch_sweep, args=(sweep_pid,), daemon=True).start()
    import torch

    torch.set_num_threads(threads)


def _should_stop() -> bool:
    return _TERMINATED.is_set() or (_STOP is not None and _STOP.is_set())


def _pool_execute(results_dir: str, task: Task, redo: frozenset[str]) -> list[Outcome]:
    return execute_task(results_dir, task, redo, should_stop=_should_stop)


class PoolExecutor:
    """A local process pool; each worker gets max(1, cores // workers) torch threads.

    Workers come from a fork server that has imported bnexp and torch once (or are spawned
    where there is none); never forked from this process, whose torch threads could deadlock them.
    """

    def __init__(self, results_dir: Path, workers: int):
        if "forkserver" in mp.get_all_start_methods():
            ctx = mp.get_context("forkserver")
            # what a run imports, once for every worker (torch._dynamo is not: bnexp's SGD
            # never imports it; Adam runs import it at their first step)
            ctx.set_forkserver_preload(["bnexp.sweep.worker", "bnexp.data.digits"])
        else:
            ctx = mp.get_context("spawn")
        self.results_dir = str(results_dir)
        self.stop_event = ctx.Event()
        self.stopping = False  # stop() was called: close() ends the workers within GRACE_S
        self.threads = max(1, cpu_cores() // workers)
        self.pool = ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(self.stop_event, self.threads, os.getpid()),
        )
        # start the workers now, from a thread: starting them waits for the fork server to import
        # torch, which can overlap this process's own work until the first run is handed out
        threading.Thread(target=self._start_workers, args=(workers,), daemon=True).start()

    def _start_workers(self, n: int) -> None:
        try:
            for _ in range(n):
                self.pool.submit(int)
        except (
            RuntimeError
        ):  # the pool was shut down meanwhile (e.g. a data error): nothing to start
            pass

    def outcomes(self, tasks: list[Task], redo: frozenset[str]) -> Iterator[Outcome]:
        futures = {
            self.pool.submit(_pool_execute, self.results_dir, task, redo): task for task in tasks
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    yield from f.result()
                except BrokenProcessPool:
                    for run in futures[f]:
                        yield Outcome(
                            run.run_id,
                            "lost",
                            "a worker process died (killed, or out of memory?)",
                        )

    def stop(self) -> None:
        self.stop_event.set()  # running runs stop at their next step; queued ones are cancelled
        self.stopping = True

    def close(self) -> None:
        if self.stopping:
            # Workers drop their run at the next step; one stuck elsewhere (a long evaluation, a
            # slow data load) is terminated after GRACE_S. Its run resumes from its checkpoint.
            # (`_processes` is private, but the pool offers no shutdown with a timeout.)
            procs = list((self.pool._processes or {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            deadline = time.monotonic() + GRACE_S
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
            for p in procs:
                if p.is_alive():
                    p.kill()  # SIGTERM only asks a worker to stop its run: it did not in time
                    p.join(5)
        self.pool.shutdown(wait=True, cancel_futures=True)


def _ray_execute(results_dir: str, task: Task, redo: frozenset[str], threads: int) -> list[Outcome]:
    import torch

    torch.set_num_threads(threads)
    return execute_task(results_dir, task, redo)


class RayExecutor:
    """Each run is a Ray task needing max(1, cluster CPUs // workers) CPUs (and 1 GPU when the run
    may use CUDA and the cluster has GPUs). Every node must see the results folder at the same
    path (a shared file system); claims are file locks there, as locally."""

    def __init__(self, results_dir: Path, workers: int | None, address: str | None):
        try:
            import ray
        except ImportError:
            raise BnexpError(
                "--executor ray: Ray is not installed "
                "(pip install 'ray>=2.9', or bnexp's extra named ray)"
            ) from None
        self.ray = ray
        self.results_dir = str(Path(results_dir).resolve())
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        resources = ray.cluster_resources()
        self.cpus = max(1, int(resources.get("CPU", 1)) // workers) if workers else 1
        self.has_gpu = resources.get("GPU", 0) > 0
        self.refs: dict = {}

    def outcomes(self, tasks: list[Task], redo: frozenset[str]) -> Iterator[Outcome]:
        ray = self.ray
        remote = ray.remote(_ray_execute)
        for task in tasks:
            gpus = 1 if self.has_gpu and task[0].config.train.device != "cpu" else 0
            # max_retries: system failures only (a worker or node died); a run's own exception
            # is recorded by execute_task and not retried. A retried task claims its runs again
            # and resumes them from their checkpoints (a run done meanwhile is skipped).
            ref = remote.options(num_cpus=self.cpus, num_gpus=gpus, max_retries=RAY_RETRIES).remote(
                self.results_dir, task, redo, self.cpus
            )
            self.refs[ref] = task
        while self.refs:
            done, _ = ray.wait(list(self.refs), num_returns=1, timeout=0.5)
            for ref in done:
                task = self.refs.pop(ref)
                try:
                    yield from ray.get(ref)
                except ray.exceptions.RayError as e:
                    for run in task:
                        yield Outcome(
                            run.run_id,
                            "lost",
                            f"Ray task failed: {type(e).__name__}: {str(e).splitlines()[0]}",
                        )

    def stop(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref)  # KeyboardInterrupt inside the task: its claim is released

    def close(self) -> None:
        if self.refs:
            self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=10)
            for ref in self.refs:
                self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()

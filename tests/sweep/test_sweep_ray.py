"""The Ray executor: a local `ray.init(num_cpus=2)`, a small sweep through the same run store."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from sweep_helpers import assert_same_results, tiny_experiment

from bnexp.config import experiment_from_dict
from bnexp.sweep.runner import run_experiment

ray = pytest.importorskip(
    "ray", reason="Ray is not installed (pip install 'bnexp[ray]'; CI installs it)"
)


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_sweep_matches_local_and_resumes_through_the_same_store(tmp_path, local_ray):
    raw = tiny_experiment(epochs=3, sweep={"model.norm": ["none", "torch"], "train.seed": [0, 1]})
    exp = experiment_from_dict(raw)
    reference = run_experiment(exp, raw, tmp_path / "local", workers=1).results_dir

    first = run_experiment(exp, raw, tmp_path / "ray", executor="ray", workers=2)
    assert sorted(first.ran) == sorted(r.run_id for r in first.plan), first.outcomes
    assert_same_results(first.results_dir, reference)

    again = run_experiment(exp, raw, tmp_path / "ray", executor="ray", workers=2)
    assert not again.outcomes and sorted(again.skipped) == sorted(first.ran)
    assert ray.is_initialized(), "a Ray the caller started is left running"


def _parent_pid(pid: int) -> int | None:
    """Linux: /proc/<pid>/stat reads "pid (comm) state ppid ..."; None once the process is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _claimed_by_children_of(results: Path, parent: int) -> bool:
    """Whether a run of `results` is claimed (being trained) by a child process of `parent`."""
    for claim in results.glob("runs/*/claim.json"):
        try:
            pid = int(json.loads(claim.read_text())["pid"])
        except (OSError, ValueError, KeyError):  # released meanwhile
            continue
        if _parent_pid(pid) == parent:
            return True
    return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_ray_cluster_losing_a_worker_node_mid_sweep_completes_the_sweep(tmp_path):
    """Two Ray nodes on this machine sharing the results folder; the worker node is removed while
    it trains a run. Its task is retried on the head node (resuming through the run store): every
    run completes once, none is lost, and the results equal a serial sweep's.

    The removal waits for the fact, not for a time: a run whose claim.json names a process of the
    worker node (Ray starts a node's worker processes as children of its raylet). Runs last ~1.5 s
    here, long enough to be seen by a 50 ms poll however late the worker node's process starts."""
    from ray.cluster_utils import Cluster

    raw = tiny_experiment(epochs=200, sweep={"train.seed": [0, 1, 2]})
    exp = experiment_from_dict(raw)
    reference = run_experiment(exp, raw, tmp_path / "local", workers=1).results_dir
    results = tmp_path / "ray" / "tiny"

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    removed: list[float] = []
    try:
        worker = cluster.add_node(num_cpus=1)
        raylet = worker.all_processes["raylet"][0].process.pid
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        cluster.wait_for_nodes()
        sweeping = threading.Event()

        def remove_the_worker_node_while_it_trains():
            while sweeping.is_set():
                if _claimed_by_children_of(results, raylet):
                    cluster.remove_node(worker, allow_graceful=False)
                    removed.append(time.monotonic())
                    return
                time.sleep(0.05)

        sweeping.set()
        killer = threading.Thread(target=remove_the_worker_node_while_it_trains)
        killer.start()
        try:
            result = run_experiment(exp, raw, tmp_path / "ray", executor="ray", workers=2)
        finally:
            sweeping.clear()
            killer.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert removed, "the worker node never trained a run (the head node trained all three)"
    statuses = {rid: o.status for rid, o in result.outcomes.items()}
    assert sorted(statuses.values()) == ["complete"] * 3, statuses
    assert_same_results(results, reference)

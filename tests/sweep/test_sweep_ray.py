"""The Ray executor: a local `ray.init(num_cpus=2)`, a small sweep through the same run store."""

from __future__ import annotations

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


@pytest.mark.slow
def test_ray_cluster_losing_a_worker_node_mid_sweep_completes_the_sweep(tmp_path):
    """Two Ray nodes on this machine sharing the results folder; the worker node is removed while
    it trains a run. Its task is retried on the head node (resuming through the run store): every
    run completes once, none is lost, and the results equal a serial sweep's."""
    import time

    from ray.cluster_utils import Cluster

    raw = tiny_experiment(epochs=30, sweep={"train.seed": [0, 1, 2]})
    exp = experiment_from_dict(raw)
    reference = run_experiment(exp, raw, tmp_path / "local", workers=1).results_dir
    results = tmp_path / "ray" / "tiny"

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        worker = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        cluster.wait_for_nodes()
        import threading

        def remove_worker_node_while_two_runs_train():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if len(list(results.glob("runs/*/claim.json"))) >= 2:  # one run on each node
                    cluster.remove_node(worker, allow_graceful=False)
                    removed.append(time.monotonic())
                    return
                time.sleep(0.05)

        removed: list[float] = []
        killer = threading.Thread(target=remove_worker_node_while_two_runs_train)
        killer.start()
        result = run_experiment(exp, raw, tmp_path / "ray", executor="ray", workers=2)
        killer.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert removed, "the worker node was never removed while two runs trained"
    statuses = {rid: o.status for rid, o in result.outcomes.items()}
    assert sorted(statuses.values()) == ["complete"] * 3, statuses
    assert_same_results(results, reference)

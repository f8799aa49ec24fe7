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

"""A sweep of our BN's controls with its baselines in one file: the none (and torch) runs ignore
the swept control, so each is one run, planned in every cell it is the baseline of."""

from __future__ import annotations

import pytest
from sweep_helpers import tiny_experiment

from bnexp.config import ConfigError, expand, experiment_from_dict
from bnexp.sweep.runner import run_experiment

SWEEP = {
    "model.norm": ["none", "custom"],
    "model.ghost_batch_size": [16, 32, None],
    "train.seed": [0, 1],
}


def test_baseline_cells_share_one_run_per_seed():
    plan = expand(experiment_from_dict(tiny_experiment(sweep=SWEEP)))
    assert len(plan) == 12  # every cell is planned
    none = [r for r in plan if r.params["model.norm"] == "none"]
    custom = [r for r in plan if r.params["model.norm"] == "custom"]
    # none: the ghost value does not apply, so the 3 cells of one seed are one run
    assert len({r.run_id for r in none}) == 2, [(r.run_id, r.params) for r in none]
    assert all(r.config.model.ghost_batch_size is None for r in none)
    # custom: every ghost value is its own run, and it is applied
    assert len({r.run_id for r in custom}) == 6
    assert {r.config.model.ghost_batch_size for r in custom} == {16, 32, None}


def test_a_control_set_outside_the_sweep_still_needs_custom():
    raw = tiny_experiment(sweep={"train.seed": [0]})
    raw["model"]["ghost_batch_size"] = 16
    with pytest.raises(ConfigError, match="needs? norm: custom"):
        experiment_from_dict(raw)


@pytest.mark.slow
def test_a_shared_baseline_is_trained_once_and_reported_in_every_cell(tmp_path):
    exp = experiment_from_dict(tiny_experiment(epochs=1, sweep=SWEEP))
    result = run_experiment(exp, {}, tmp_path, workers=1)
    runs = [p for p in (result.results_dir / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 8  # 2 none + 6 custom, not 12
    df = result.summary
    assert len(df) == 12  # one summary row per planned cell
    none = df[df["norm"] == "none"]
    # the none run of seed 0 stands in each ghost cell with that cell's swept value
    seed0 = none[none["seed"] == 0]
    assert seed0["run_id"].nunique() == 1 and len(seed0) == 3
    assert sorted(seed0["model.ghost_batch_size"].fillna(0)) == [0, 16, 32]

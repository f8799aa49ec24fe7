"""Keys issue 21 added: data.val_fraction (part of the run id when set) and measure.fit (read by
the report only: never part of the run id), with one-line errors for bad values; and one run
for the cells of a swept ghost size under population statistics."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from bnexp.cli import app
from bnexp.config import ConfigError, RunConfig, expand, experiment_from_dict, run_id
from bnexp.nn.norm import BatchNorm1d


def _id(**sections) -> str:
    return run_id(RunConfig.model_validate({"train": {"lr": 0.1}, **sections}))


def test_val_fraction_enters_the_run_id_only_when_set():
    plain = _id()
    assert _id(data={"val_fraction": None}) == plain
    assert _id(data={"val_fraction": 0.1}) != plain != _id(data={"val_fraction": 0.2})


def test_fit_is_not_part_of_the_run_id():
    assert _id(measure={"fit": 0.9}) == _id(measure={"fit": 1.0}) == _id()
    assert RunConfig().measure.fit == 0.97


@pytest.mark.parametrize("value", [0, -0.5, 1.01, 97])
def test_a_fit_outside_0_1_is_one_line_naming_the_key(value):
    with pytest.raises(ConfigError) as info:
        experiment_from_dict({"name": "x", "measure": {"fit": value}})
    (line,) = info.value.problems
    bound = "greater than 0" if value <= 0 else "less than or equal to 1"
    assert f"measure.fit: Input should be {bound} (found {value})" in line, line


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1])
def test_a_val_fraction_outside_0_1_is_an_error(value):
    with pytest.raises(ConfigError) as info:
        experiment_from_dict({"name": "x", "data": {"val_fraction": value}})
    (line,) = info.value.problems
    assert "data.val_fraction" in line and str(value) in line, line


def test_bad_fit_from_the_cli_exits_2_without_a_traceback(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\nmeasure:\n  fit: 1.5\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "exp.yaml:3: measure.fit: Input should be less than or equal to 1" in errors[0]
    assert "Traceback" not in result.output


def test_a_swept_ghost_size_under_population_statistics_is_one_run():
    raw = {
        "name": "x",
        "model": {"norm": "custom"},
        "sweep": {
            "model.norm": ["none", "custom"],
            "model.bn_stats": ["batch", "population"],
            "model.ghost_batch_size": [16, 32],
        },
    }
    ids: dict[tuple, str] = {}
    for r in expand(experiment_from_dict(raw)):
        p = r.params
        ids[p["model.norm"], p["model.bn_stats"], p["model.ghost_batch_size"]] = r.run_id
    assert ids["custom", "population", 16] == ids["custom", "population", 32]
    assert ids["custom", "batch", 16] != ids["custom", "batch", 32]
    assert len(set(ids.values())) == 1 + 2 + 1  # none; batch at 16 and 32; population


@pytest.mark.slow
def test_population_statistics_ignore_the_ghost_size():
    """The reason for the rule above: our layer with population statistics gives the same
    outputs and running estimates whatever ghost_batch_size says."""
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)) * 3 + 1
    layers = [BatchNorm1d(5, stats="population", ghost_batch_size=g) for g in (None, 16)]
    outs = [layer(x) for layer in layers for _ in range(3)][2::3]  # after 3 training batches
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    torch.testing.assert_close(layers[1].running_var, layers[0].running_var, rtol=0, atol=0)

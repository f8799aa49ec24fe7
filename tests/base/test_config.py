"""Config loading: errors a user can act on, YAML quirks, overrides, sweep expansion, run ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnexp.config import (
    ConfigError,
    RunConfig,
    expand,
    experiment_from_dict,
    load_experiment,
    run_id,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, overrides=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    return info.value.problems


def test_misspelt_key_names_file_line_key_and_suggestion(tmp_path):
    path = write(tmp_path, "name: x\ntrain:\n  lr: 0.1\n  epocs: 3\n")
    [line] = problems(path)
    assert line.startswith(f"{path}:4: train.epocs: unknown key; did you mean 'epochs'?"), line


def test_unknown_section_lists_valid_keys(tmp_path):
    [line] = problems(write(tmp_path, "name: x\noptim: {lr: 1}\n"))
    assert ":2: optim: unknown key" in line and "expected one of: name, data, model" in line, line


def test_wrong_type_shows_value_found_and_expected(tmp_path):
    [line] = problems(write(tmp_path, "name: x\ntrain:\n  batch_size: many\n"))
    assert ":3: train.batch_size:" in line and "valid integer" in line and "'many'" in line, line


def test_bad_choice_lists_the_choices(tmp_path):
    [line] = problems(write(tmp_path, "model: {norm: batch}\n"))
    assert "model.norm" in line and "'none', 'torch' or 'custom'" in line and "'batch'" in line, (
        line
    )


def test_all_errors_at_once(tmp_path):
    path = write(
        tmp_path, "model:\n  hiden: [3]\ntrain:\n  lr: -1\n  epochs: 0\nsweep:\n  train.sed: [0]\n"
    )
    lines = problems(path)
    assert len(lines) == 4, lines
    assert any("did you mean 'hidden'" in x for x in lines)
    assert any("did you mean 'train.seed'" in x for x in lines)


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    [line] = problems(write(tmp_path, "name: x\ntrain: {lr: 0.1\nmodel: {}\n"))
    assert line.startswith(f"{tmp_path / 'exp.yaml'}:") and "YAML syntax error" in line, line


def test_missing_and_empty_files(tmp_path):
    [line] = problems(tmp_path / "nope.yaml")
    assert "nope.yaml: file not found" in line
    [line] = problems(write(tmp_path, "", "empty.yaml"))
    assert "empty.yaml: the file is empty" in line
    [line] = problems(write(tmp_path, "- a\n- b\n", "list.yaml"))
    assert "expected a mapping" in line


def test_scientific_notation_loads_as_float(tmp_path):
    exp, _ = load_experiment(
        write(tmp_path, "train: {lr: 1e-3, weight_decay: 5E-4}\nsweep:\n  train.lr: [1e-2, 3e-1]\n")
    )
    assert exp.train.lr == 1e-3 and exp.train.weight_decay == 5e-4
    assert [r.config.train.lr for r in expand(exp)] == [1e-2, 0.3]


def test_overrides_are_parsed_as_yaml_and_reach_the_sweep(tmp_path):
    path = write(tmp_path, "name: x\nsweep:\n  train.seed: [0, 1, 2]\n")
    exp, raw = load_experiment(
        path, ["train.lr=2e-2", "model.hidden=[8, 4]", "sweep.train.seed=[5]"]
    )
    assert exp.train.lr == 0.02 and exp.model.hidden == [8, 4]
    assert [r.params for r in expand(exp)] == [{"train.seed": 5}]
    assert raw["sweep"] == {"train.seed": [5]}


def test_bad_override_is_reported_as_such(tmp_path):
    path = write(tmp_path, "name: x\n")
    lines = problems(path, ["train.lr=abc", "oops"])
    assert any(x.startswith("--set train.lr: train.lr:") and "'abc'" in x for x in lines), lines
    assert any("--set 'oops': expected dotted.key=value" in x for x in lines), lines


def test_sweep_value_errors_point_at_the_sweep(tmp_path):
    path = write(
        tmp_path, "name: x\nsweep:\n  train.batch_size:\n    - 32\n    - -1\n  model.norm: []\n"
    )
    lines = problems(path)
    assert f"{path}:6: sweep.model.norm: empty list" in "\n".join(lines), lines
    assert any(x.startswith(f"{path}:5: sweep.train.batch_size[1]:") for x in lines), lines


def test_invalid_combination_in_sweep_is_named(tmp_path):
    path = write(tmp_path, "train: {nesterov: true}\nsweep:\n  train.momentum: [0.9, 0.0]\n")
    [line] = problems(path)
    assert "train.momentum" in line and "nesterov" in line, line


def test_sweep_is_cartesian_in_written_order_last_key_fastest():
    exp = experiment_from_dict(
        {"sweep": {"model.norm": ["none", "torch"], "train.seed": [0, 1, 2]}}
    )
    runs = expand(exp)
    assert [tuple(r.params.values()) for r in runs] == [
        ("none", 0),
        ("none", 1),
        ("none", 2),
        ("torch", 0),
        ("torch", 1),
        ("torch", 2),
    ]
    assert runs[4].config.model.norm == "torch" and runs[4].config.train.seed == 1


def test_run_ids_are_stable_short_and_ignore_the_name():
    a = RunConfig.model_validate({"name": "a", "train": {"lr": 0.5}})
    b = RunConfig.model_validate({"name": "b", "train": {"lr": 0.5}})
    c = RunConfig.model_validate({"name": "a", "train": {"lr": 0.25}})
    assert run_id(a) == run_id(b) != run_id(c)
    assert len(run_id(a)) == 10
    # the same config always hashes the same, whatever order the dict was written in
    d = RunConfig.model_validate({"train": {"lr": 0.5}, "name": "z"})
    assert run_id(d) == run_id(a)


def test_duplicate_sweep_values_give_one_run():
    exp = experiment_from_dict({"sweep": {"train.seed": [0, 0, 1]}})
    assert len(expand(exp)) == 2


@pytest.mark.parametrize(
    "path",
    sorted((REPO / "configs").glob("**/*.yaml")),
    ids=lambda p: p.relative_to(REPO).as_posix(),
)
def test_every_shipped_config_validates(path):
    exp, _ = load_experiment(path)
    assert expand(exp), f"{path.name} plans no run"


# --------------------------------------------------------------------------- batch-size designs


def test_lr_scaling_rules_scale_the_lr_with_the_batch_size():
    """linear: lr * m / base (Goyal et al. 2017); sqrt: lr * sqrt(m / base) (Hoffer et al. 2017)."""
    used = {}
    for rule in ("none", "linear", "sqrt"):
        raw = {
            "name": "x",
            "train": {"lr": 0.1, "lr_scaling": {"rule": rule, "base_batch_size": 64}},
            "sweep": {"train.batch_size": [16, 64, 256]},
        }
        used[rule] = [r.config.train.lr_used for r in expand(experiment_from_dict(raw))]
    assert used["none"] == [0.1, 0.1, 0.1]
    assert used["linear"] == pytest.approx([0.025, 0.1, 0.4])
    assert used["sqrt"] == pytest.approx([0.05, 0.1, 0.2])


def test_steps_is_a_budget_instead_of_epochs_not_beside_them():
    exp = experiment_from_dict({"name": "x", "train": {"steps": 500}})
    assert expand(exp)[0].config.train.steps == 500
    with pytest.raises(ConfigError, match="two budgets; give one"):
        experiment_from_dict({"name": "x", "train": {"steps": 500, "epochs": 3}})


def test_keys_added_later_change_the_run_id_only_when_set():
    """Runs of a config written before train.steps / train.lr_scaling existed keep their ids."""
    base = {"name": "x", "train": {"lr": 0.1}}
    plain = run_id(expand(experiment_from_dict(base))[0].config)
    assert plain == run_id(RunConfig.model_validate({"train": {"lr": 0.1}}))
    with_steps = {"name": "x", "train": {"lr": 0.1, "steps": 100}}
    assert run_id(expand(experiment_from_dict(with_steps))[0].config) != plain
    scaled = {"name": "x", "train": {"lr": 0.1, "lr_scaling": {"rule": "linear"}}}
    scaled["train"]["batch_size"] = 128
    with_batch = run_id(RunConfig.model_validate({"train": {"lr": 0.1, "batch_size": 128}}))
    assert run_id(expand(experiment_from_dict(scaled))[0].config) != with_batch


def test_an_lr_scaling_that_keeps_the_lr_is_the_same_run():
    """Rule none, and any rule at its base batch size, train with train.lr as written: one run
    (planned in each cell it serves), not a duplicate trained twice."""
    raw = {
        "name": "x",
        "train": {"lr": 0.1, "lr_scaling": {"rule": "none", "base_batch_size": 64}},
        "sweep": {"train.lr_scaling.rule": ["none", "linear"], "train.batch_size": [64, 128]},
    }
    runs = expand(experiment_from_dict(raw))
    ids = {
        (r.params["train.lr_scaling.rule"], r.params["train.batch_size"]): r.run_id for r in runs
    }
    assert len(runs) == 4  # a plan row per cell
    assert ids["none", 64] == ids["linear", 64]  # lr 0.1 both
    assert ids["none", 128] != ids["linear", 128]  # lr 0.1 vs 0.2
    plain = {"name": "x", "train": {"lr": 0.1, "batch_size": 128}}
    assert ids["none", 128] == run_id(expand(experiment_from_dict(plain))[0].config)


def test_set_on_a_swept_key_is_refused_naming_the_sweep(tmp_path):
    """`--set model.norm=torch` while model.norm is swept would be silently overridden by every
    run: it is one problem that names the sweep and the override that does what was meant."""
    from bnexp.config import ConfigError, load_experiment

    path = tmp_path / "exp.yaml"
    path.write_text(
        "name: x\ndata: {dataset: digits}\nmodel: {arch: mlp, hidden: [4]}\n"
        "train: {lr: 0.1, batch_size: 8, epochs: 1}\n"
        "sweep: {model.norm: [none, torch], train.seed: [0, 1]}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_experiment(path, ["model.norm=torch", "train.lr=0.2"])
    assert err.value.problems == [
        "--set model.norm: model.norm is swept (sweep.model.norm: ['none', 'torch']), so every "
        "run would take the sweep's value instead; to run only this value, use "
        "--set 'sweep.model.norm=[torch]'"
    ]
    exp, _ = load_experiment(path, ["sweep.model.norm=[torch]", "train.lr=0.2"])
    assert exp.sweep["model.norm"] == ["torch"] and exp.train.lr == 0.2

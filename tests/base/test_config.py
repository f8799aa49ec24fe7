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


# --------------------------------------------------------------------------- the training regime


def _id(**sections) -> str:
    return run_id(RunConfig.model_validate(sections))


def test_regime_keys_at_their_defaults_keep_the_run_id():
    """data.augment, train.lr_schedule and train.weight_decay_norm enter the hash only where they
    change what a run computes."""
    plain = _id(train={"lr": 0.1})
    assert _id(train={"lr": 0.1, "lr_schedule": None}) == plain
    assert _id(train={"lr": 0.1, "lr_schedule": {"rule": "constant"}}) == plain
    assert _id(data={"augment": {"crop_padding": 0, "hflip": False}}, train={"lr": 0.1}) == plain
    assert _id(train={"lr": 0.1, "weight_decay_norm": True}) == plain  # no weight decay
    cosine = {"lr": 0.1, "lr_schedule": {"rule": "cosine"}}
    assert _id(train=cosine) != plain
    assert _id(data={"augment": {}}, train={"lr": 0.1}) != plain
    # weight decay with BN: the key changes the numbers, so it is hashed, false too
    wd = {"lr": 0.1, "weight_decay": 5e-4}
    assert _id(train=wd) == _id(train={**wd, "weight_decay_norm": True})  # norm: none
    bn = {"norm": "torch"}
    assert _id(model=bn, train=wd) != _id(model=bn, train={**wd, "weight_decay_norm": True})
    assert _id(model=bn, train={"lr": 0.1}) == _id(model=bn, train={"lr": 0.1, "weight_decay": 0})


@pytest.mark.parametrize(
    "train, message",
    [
        ({"lr_schedule": {"rule": "step"}}, "rule: step needs milestones"),
        ({"lr_schedule": {"rule": "cosine", "milestones": [3]}}, "apply only to rule: step"),
        ({"lr_schedule": {"rule": "step", "milestones": [5, 2]}}, "must be strictly increasing"),
        ({"epochs": 3, "lr_schedule": {"rule": "cosine", "warmup_epochs": 3}}, "expected < epochs"),
        ({"lr_schedule": {"rule": "linear"}}, "train.lr_schedule.rule"),
        ({"lr_schedule": {"rule": "step", "milestones": [2], "gamma": 0}}, "gamma"),
        ({"weight_decay_norm": "sometimes"}, "train.weight_decay_norm"),
    ],
)
def test_bad_lr_schedules_are_one_line_errors(tmp_path, train, message):
    import yaml

    path = write(tmp_path, yaml.safe_dump({"name": "x", "train": train}))
    [line] = problems(path)
    assert message in line and "\n" not in line, line


def test_bad_augment_settings_are_one_line_errors(tmp_path):
    [line] = problems(write(tmp_path, "name: x\ndata:\n  augment: {crop_padding: -1}\n"))
    assert "data.augment.crop_padding" in line, line
    [line] = problems(write(tmp_path, "name: x\ndata:\n  augment: {flip: true}\n"))
    assert "data.augment.flip: unknown key; did you mean 'hflip'?" in line, line

# ---------------------------------------------------------- torchvision's datasets (issue 24)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"dataset": "mnist"}, "dataset mnist needs data.root (the folder holding MNIST/raw/)"),
        (
            {"dataset": "fashion_mnist"},
            "dataset fashion_mnist needs data.root (the folder holding FashionMNIST/raw/)",
        ),
        ({"dataset": "cifar100"}, "needs data.root (the folder holding cifar-100-python/)"),
        ({"dataset": "svhn"}, "(the folder holding train_32x32.mat and test_32x32.mat)"),
        (
            {"dataset": "imagefolder"},
            "(the folder holding train/<class>/ and test/<class>/ image folders)",
        ),
        (
            {"dataset": "imagefolder", "root": "r", "download": True},
            "data.download applies only to dataset cifar10, cifar100, mnist, fashion_mnist or svhn "
            "(dataset is imagefolder)",
        ),
        (
            {"dataset": "mnist", "root": "r", "class_names": ["a"]},
            "data.class_names applies only to dataset npz (dataset is mnist)",
        ),
        ({"dataset": "mnist", "root": "r", "classes": [3]}, "data.classes needs at least 2"),
        ({"dataset": "emnist", "root": "r"}, "data.dataset: Input should be 'digits', "),
    ],
)
def test_new_datasets_keys_are_checked(data, message):
    with pytest.raises(ConfigError) as err:
        experiment_from_dict({"data": data})
    assert message in str(err.value) and len(err.value.problems) == 1, str(err.value)


def test_new_datasets_take_the_subset_keys_and_leave_old_run_ids_alone():
    for dataset in ("mnist", "fashion_mnist", "cifar100", "svhn", "imagefolder"):
        data = {
            "dataset": dataset,
            "root": "r",
            "classes": [1, 2, 3],
            "binary": {"positive": 2},
            "train_per_class": 5,
            "test_per_class": 2,
        }
        cfg = RunConfig.model_validate({"data": data}).data
        assert cfg.classes == ["1", "2", "3"] and cfg.binary.positive == "2"
    # existing configs keep their ids (computed with the code before these datasets existed)
    before = {
        "4cefceea1f": {"train": {"lr": 0.5}},
        "bf7f28e772": {
            "data": {"dataset": "cifar10", "root": "r", "classes": ["cat", "dog"]}
            | {"train_per_class": 5}
        },
        "2186ab1321": {"data": {"dataset": "npz", "train": "a", "test": "b"}},
    }
    for rid, config in before.items():
        assert run_id(RunConfig.model_validate(config)) == rid, config


def test_memory_bound_takes_each_datasets_input_shape():
    from bnexp.config.schema import memory_lower_bound

    def bound(dataset: str) -> int:
        return memory_lower_bound(
            RunConfig.model_validate(
                {"data": {"dataset": dataset, "root": "r"}, "model": {"hidden": [10]}}
            )
        )

    for dataset, inputs in (
        ("mnist", 784),
        ("fashion_mnist", 784),
        ("svhn", 3072),
        ("cifar100", 3072),
    ):
        params = inputs * 10 + 10 + 10 + 1  # MLP inputs -> 10 -> 1, plain SGD: x2 (grad)
        assert bound(dataset) == 4 * (params * 2 + 4096 * 10), dataset


def test_a_python_tag_in_a_config_runs_nothing(tmp_path):
    """Configs are read by a SafeLoader: a tag that would call os.system is a config error."""
    marker = tmp_path / "marker"
    path = write(tmp_path, f"name: !!python/object/apply:os.system [\"touch '{marker}'\"]\n")
    found = problems(path)
    assert len(found) == 1 and found[0].startswith(f"{path}:1"), found
    assert "python/object/apply:os.system" in found[0] and not marker.exists()

# --------------------------------------------------------------------------- model keys


def test_model_keys_enter_the_run_id_only_when_set():
    """model.depth / factory / factory_args are hashed only when set: older configs keep their
    ids; a resnet's depth and a factory's arguments make different runs."""
    plain = run_id(RunConfig.model_validate({"model": {"arch": "cnn", "norm": "torch"}}))
    dump = RunConfig.model_validate({"model": {"arch": "cnn"}}).model_dump(mode="json")
    assert dump["model"]["depth"] is None and dump["model"]["factory"] is None
    again = RunConfig.model_validate(
        {"model": {"arch": "cnn", "norm": "torch", "depth": None, "factory_args": None}}
    )
    assert run_id(again) == plain
    ids = {
        run_id(RunConfig.model_validate({"model": m}))
        for m in [
            {"arch": "resnet", "depth": 20},
            {"arch": "resnet", "depth": 32},
            {"factory": "m:f"},
            {"factory": "m:f", "factory_args": {"width": 2}},
            {"factory": "m:f", "factory_args": {"width": 3}},
        ]
    }
    assert len(ids) == 5 and plain not in ids


def test_a_relative_factory_file_is_made_absolute_from_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "exp.yaml"
    path.write_text(
        "model: {factory: nets/a.py:make}\n"
        "sweep: {model.factory: [nets/a.py:make, /abs/b.py:make, pkg.mod:make]}\n"
    )
    monkeypatch.chdir(tmp_path)
    exp, raw = load_experiment(path)
    want = f"{tmp_path / 'sub' / 'nets' / 'a.py'}:make"
    assert exp.model.factory == want
    assert [r.config.model.factory for r in expand(exp)] == [want, "/abs/b.py:make",
                                                                "pkg.mod:make"]


@pytest.mark.parametrize(
    "model, at_least",
    [
        # the conv weights (counted from the built models) + a 64 -> 1 head; 16 x 32 x 32 values
        # per example after the first conv
        ({"arch": "resnet", "depth": 20}, (267_696 + 64, 16 * 32 * 32)),
        ({"arch": "resnet", "depth": 110}, (1_719_216 + 64, 16 * 32 * 32)),
        ({"factory": "m:f"}, (0, 3 * 32 * 32)),  # unknown until built: its input alone
    ],
)
def test_memory_bound_of_resnets_and_factories(model, at_least):
    from bnexp.config.schema import memory_lower_bound

    cfg = RunConfig.model_validate(
        {"data": {"dataset": "cifar10", "root": "x"}, "model": model,
         "train": {"batch_size": 8, "eval_batch_size": 100}}
    )
    params, widest = at_least
    assert memory_lower_bound(cfg) == 4 * (params * 2 + 100 * widest)

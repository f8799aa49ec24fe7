"""The experiment schema, YAML loading with file:line errors, --set overrides, sweeps and run ids.

One schema (pydantic v2, unknown keys forbidden) describes a run; an experiment is a run plus
`sweep:`, a map from dotted keys to lists that expands to the Cartesian product of runs.
Every user-facing problem becomes a `ConfigError` holding one line per problem, all at once.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from bnexp.errors import BnexpError, Problem

# --------------------------------------------------------------------------- schema


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BinaryConfig(Strict):
    """One class against the rest, as the course's cat vs non-cat: label 1 = positive."""

    positive: str  # the positive class's name, e.g. cat
    # negatives kept per positive image, drawn evenly from the other classes (1: balanced)
    negatives_per_positive: PositiveInt = 1

    @field_validator("positive", mode="before")
    @classmethod
    def _label_as_name(cls, v: Any) -> Any:  # positive: 3 names label 3 of data without names
        return str(v) if isinstance(v, int) else v


class DataConfig(Strict):
    dataset: Literal["digits", "catvnoncat", "cifar10", "npz"] = "digits"
    # catvnoncat: the folder holding train_catvnoncat.h5 and test_catvnoncat.h5;
    # cifar10: the folder holding cifar-10-batches-py/ (torchvision's layout). Relative to the cwd.
    root: str | None = None
    train: str | None = None  # npz: training file with x (N, H, W, C) or (N, D) and y (N,)
    test: str | None = None  # npz: test file, same layout as train
    download: bool = (
        False  # cifar10: download into root when the files are missing (needs the internet)
    )
    class_names: list[str] | None = (
        None  # npz: names of labels 0..K-1 (default: the file's `classes`, else "0".."K-1")
    )
    classes: list[str] | None = (
        None  # cifar10/npz: keep only these classes, relabelled 0..k-1 in this order
    )
    binary: BinaryConfig | None = None  # cifar10/npz: positive class vs the rest; one logit + BCE
    # cifar10/npz: images per class, drawn by `seed` (None: all). With `binary`: positives, and
    # negatives_per_positive times as many negatives spread evenly over the other classes.
    train_per_class: PositiveInt | None = None
    test_per_class: PositiveInt | None = None
    seed: int = 0  # fixes the train/test split and any subset, independent of train.seed
    test_fraction: float = Field(0.25, gt=0, lt=1)  # digits: share held out, stratified
    # with training statistics: per feature (digits, npz vectors) or per channel (images)
    standardize: bool = True

    @field_validator("classes", "class_names", mode="before")
    @classmethod
    def _labels_as_names(cls, v: Any) -> Any:  # classes: [3, 5] names labels 3 and 5 ("3", "5")
        return [str(n) if isinstance(n, int) else n for n in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _keys_fit_dataset(self) -> DataConfig:
        applies_to = {  # key -> the datasets it applies to
            "root": ("catvnoncat", "cifar10"),
            "train": ("npz",),
            "test": ("npz",),
            "download": ("cifar10",),
            "class_names": ("npz",),
            "classes": ("cifar10", "npz"),
            "binary": ("cifar10", "npz"),
            "train_per_class": ("cifar10", "npz"),
            "test_per_class": ("cifar10", "npz"),
        }
        problems = []
        for key, datasets in applies_to.items():
            value = getattr(self, key)
            if value not in (None, False) and self.dataset not in datasets:
                problems.append(
                    f"data.{key} applies only to dataset {' or '.join(datasets)} (dataset is {self.dataset})"
                )
        if self.dataset in ("catvnoncat", "cifar10") and not self.root:
            held = (
                "train_catvnoncat.h5 and test_catvnoncat.h5"
                if self.dataset == "catvnoncat"
                else "cifar-10-batches-py/"
            )
            problems.append(f"dataset {self.dataset} needs data.root (the folder holding {held})")
        if self.dataset == "npz":
            for key in ("train", "test"):
                if not getattr(self, key):
                    problems.append(
                        f"dataset npz needs data.{key} (the path of an .npz file holding x and y)"
                    )
        for key in ("classes", "class_names"):
            names = getattr(self, key) or []
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                problems.append(f"data.{key} lists {', '.join(dup)} more than once")
        if self.classes is not None and len(self.classes) < 2:
            problems.append("data.classes needs at least 2 classes")
        if self.binary and self.classes and self.binary.positive not in self.classes:
            problems.append(
                f"data.binary.positive {self.binary.positive!r} is not in data.classes {self.classes}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class NoisyBNConfig(Strict):
    """Santurkar et al. (2018)'s noisy BN: each training forward multiplies every channel of the
    BN output by (1 + scale_std·ε₁) and adds mean_std·ε₂, with ε ~ N(0, 1) redrawn per channel
    every `every_steps` training forwards (so the distribution the next layer sees keeps moving)."""

    mean_std: NonNegativeFloat = 0.0  # std of the random per-channel shift
    scale_std: NonNegativeFloat = 0.0  # std of the random per-channel scale around 1
    every_steps: PositiveInt = 1  # training forwards between redraws


class ModelConfig(Strict):
    arch: Literal["mlp", "cnn"] = "mlp"
    hidden: list[PositiveInt] = Field(default_factory=lambda: [100, 100, 100])  # MLP widths
    channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64, 128])  # CNN blocks
    activation: Literal["relu", "sigmoid", "tanh"] = "relu"
    norm: Literal["none", "torch", "custom"] = "none"
    # pre_activation: z -> BN -> g (the lecture's z -> z~ -> g(z~)); post_activation: g(z) -> BN
    norm_position: Literal["pre_activation", "post_activation"] = "pre_activation"
    bn_eps: PositiveFloat = 1e-5
    bn_momentum: float | None = Field(0.1, ge=0, le=1)  # torch's convention; None = cumulative
    # The controls below separate BN's two effects; they exist only on our layer (norm: custom).
    # Statistics over virtual sub-batches of this size (Hoffer et al. 2017): changes the
    # normalization noise without changing the SGD batch. null: the whole mini-batch.
    ghost_batch_size: int | None = Field(None, ge=2)
    # batch: normalize with the mini-batch's statistics (BN); population: with the running
    # estimates in training too (still updated from the batches) - BN without the batch noise.
    bn_stats: Literal["batch", "population"] = "batch"
    bn_noise: NoisyBNConfig | None = None  # noisy BN after the normalization; null: off
    # What eval mode normalizes with: running (torch's way), batch (each eval batch's own
    # statistics), recalibrate (running estimates recomputed over the whole training set,
    # layer by layer, before every evaluation: one extra pass over it per BN layer).
    eval_stats: Literal["running", "batch", "recalibrate"] = "running"

    @model_validator(mode="after")
    def _controls_need_custom_norm(self) -> ModelConfig:
        on = [
            f"{key}: {value}"
            for key, value, off in [
                ("ghost_batch_size", self.ghost_batch_size, None),
                ("bn_stats", self.bn_stats, "batch"),
                ("bn_noise", self.bn_noise, None),
                ("eval_stats", self.eval_stats, "running"),
            ]
            if value != off
        ]
        if on and self.norm != "custom":
            raise ValueError(
                f"{', '.join(on)}: {'this control needs' if len(on) == 1 else 'these controls need'} "
                f"norm: custom (found norm: {self.norm}); the controls are features of bnexp's own BN layer"
            )
        return self


class TrainConfig(Strict):
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: PositiveFloat = 0.1
    momentum: float = Field(0.0, ge=0, lt=1)  # SGD momentum (torch's convention)
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 0.0
    batch_size: PositiveInt = 64
    epochs: PositiveInt = 10
    seed: int = 0  # initial weights and data order; shared by every norm variant (paired runs)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: PositiveInt = 4096
    eval_every_steps: PositiveInt | None = None  # extra evaluations between epoch ends
    # a resumable checkpoint every N epochs (model, optimizer, data order, metrics so far); 0 = never.
    # Each costs a torch.save: on tiny models (a second per run) every epoch adds ~20%.
    checkpoint_every: NonNegativeInt = 5
    # stop early, recorded as diverged, when a training step's loss is NaN/inf (always) or above a
    # limit: a number is that loss; "<k>x" is k times the first evaluation's training loss;
    # null (the default) means "100x"; off (or false) checks NaN/inf only. The default is null,
    # not "100x", so that configs written before it existed keep their run ids.
    diverge_loss: float | str | None = None
    # seed every RNG and use torch's deterministic algorithms: same config -> same metrics.csv bytes
    deterministic: bool = True
    # train the runs of one sweep cell that differ only in train.seed as one batched model
    # (bnexp.run.vectorize); each run's results equal a separate run's. Falls back, with a log
    # line, where a model or option cannot be vectorized. Not part of the run id.
    vectorize_seeds: bool = False

    @field_validator("diverge_loss", mode="before")
    @classmethod
    def _diverge_limit(cls, v: Any) -> float | str | None:
        """A loss > 0, "<k>x" with k > 0, off/false (YAML reads off as false), or null."""
        if v is None or v is False or v == "off":
            return None if v is None else "off"
        factor = v[:-1] if isinstance(v, str) and v.endswith("x") else None
        try:
            number = float(v if factor is None else factor) if v is not True else 0.0
        except (TypeError, ValueError):
            number = 0.0
        if not number > 0:
            raise ValueError(
                "expected a loss > 0, '<k>x' (k > 0 times the first evaluation's training "
                "loss), off, or null (= 100x)"
            )
        return f"{number:g}x" if factor is not None else number

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov: true needs optimizer: sgd and momentum > 0")
        return self


class TargetConfig(Strict):
    metric: Literal["train_acc", "test_acc", "train_loss", "test_loss"] = "train_acc"
    value: float  # accuracies: reached when >= value; losses: reached when <= value


class ShiftProbeConfig(Strict):
    """Ioffe & Szegedy Fig. 1: percentiles of the inputs to one layer's nonlinearity, on a fixed batch."""

    layer: PositiveInt = 1  # hidden layer l, 1-based (model.blocks[l-1]); must exist in the model
    every_steps: PositiveInt = 10  # probe at step 0 and after every k optimizer steps
    units: list[NonNegativeInt] = Field(
        default_factory=lambda: [0, 1, 2]
    )  # units (channels) kept one by one
    probe_size: PositiveInt = (
        256  # examples in the fixed probe batch (drawn once, the same for every run)
    )


class IcsConfig(Strict):
    """Santurkar et al. 2018, Def. 2.1: how much layer l's gradient moves when earlier layers step."""

    layer: int = Field(2, ge=2)  # hidden layer l, 1-based; >= 2 so that earlier layers exist
    every_steps: PositiveInt = 10  # measure on the batch of every k-th optimizer step


class BatchStatNoiseConfig(Strict):
    """Spread of mini-batch means / variances around full-training-set statistics, at each BN layer."""

    batch_sizes: list[int] = Field(
        default_factory=lambda: [4, 8, 16, 32, 64, 128, 256]
    )  # each >= 2
    samples: PositiveInt = 200  # random mini-batches (drawn without replacement) per batch size

    @model_validator(mode="after")
    def _sizes_at_least_two(self) -> BatchStatNoiseConfig:
        if not self.batch_sizes or min(self.batch_sizes) < 2:
            raise ValueError(
                "batch_sizes must be a non-empty list of sizes >= 2 (a batch variance needs 2 values)"
            )
        return self


class MeasureConfig(Strict):
    target: TargetConfig | None = None  # speed-up = steps until it is first met
    shift_probe: ShiftProbeConfig | None = (
        None  # covariate shift -> runs/<id>/probes.csv (site z, z_tilde)
    )
    ics: IcsConfig | None = None  # internal covariate shift -> runs/<id>/probes.csv (site ics)
    bn_noise: BatchStatNoiseConfig | None = None  # at the end of training -> runs/<id>/bn_noise.csv


class RunConfig(Strict):
    """Everything one run needs; a run is a pure function of it."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)

    @model_validator(mode="after")
    def _probed_layers_exist(self) -> RunConfig:
        widths = self.model.hidden if self.model.arch == "mlp" else self.model.channels
        probe, ics = self.measure.shift_probe, self.measure.ics
        if probe is not None and probe.layer > len(widths):
            raise ValueError(
                f"measure.shift_probe.layer: {probe.layer} is beyond the model's {len(widths)} hidden layers"
            )
        if probe is not None and probe.units and max(probe.units) >= widths[probe.layer - 1]:
            raise ValueError(
                f"measure.shift_probe.units: unit {max(probe.units)} does not exist in hidden layer "
                f"{probe.layer} ({widths[probe.layer - 1]} units, numbered from 0)"
            )
        if ics is not None and ics.layer > len(widths):
            raise ValueError(
                f"measure.ics.layer: {ics.layer} is beyond the model's {len(widths)} hidden layers"
            )
        return self


class MlflowTrackConfig(Strict):
    tracking_uri: str | None = None  # None: sqlite:///<out>/<name>/mlflow.db, beside the results
    experiment: str | None = None  # the MLflow experiment; None: the experiment's name


class TrackConfig(Strict):
    """Where finished runs are also logged (bnexp.track). Not part of any run id."""

    mlflow: MlflowTrackConfig | None = None  # `mlflow: true` for the defaults
    tensorboard: bool = False  # event files under <out>/<name>/tensorboard/<run_id>/

    @field_validator("mlflow", mode="before")
    @classmethod
    def _mlflow_switch(cls, v: Any) -> Any:
        return {} if v is True else None if v is False else v


class ExperimentConfig(RunConfig):
    sweep: dict[str, list[Any]] = Field(default_factory=dict)  # dotted key -> values
    # how finished runs are also logged (MLflow, TensorBoard): not what they compute, no run id
    track: TrackConfig = Field(default_factory=TrackConfig)


# --------------------------------------------------------------------------- errors


class ConfigError(BnexpError):
    """One or more problems with a config; `str()` gives one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))

    @property
    def details(self) -> list[Problem]:
        """Each problem as data (file, line, key, message), for programs (bnexp.validate)."""
        return [Problem.parse(p) for p in self.problems]


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 / 5E4 as floats (YAML 1.1 needs a dot for that)."""


_Loader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml_value(text: str) -> Any:
    """A YAML scalar or flow value, as in `--set train.lr=1e-3` or `--set sweep.train.seed=[0,1]`."""
    return yaml.load(text, Loader=_Loader)


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Dotted path (as a tuple) -> 1-based line of its key (mappings) or item (sequences)."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = (*path, key_node.value)
            out[sub] = key_node.start_mark.line + 1
            _line_map(value_node, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            _line_map(item, (*path, i), out)
    return out


# --------------------------------------------------------------------------- loading


@dataclass
class Source:
    """Where config values came from, for error messages."""

    file: str
    lines: dict[tuple, int]
    overridden: set[tuple]

    def where(self, loc: tuple) -> str:
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.overridden:
                return f"--set {'.'.join(map(str, loc[:n]))}"
            if loc[:n] in self.lines:
                return f"{self.file}:{self.lines[loc[:n]]}"
        return self.file


def _fields_of(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The field names valid at `loc` inside `model`, or None when loc is not a model."""
    for key in loc:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            return None
        sub = _model_in(field.annotation)
        if sub is None:
            return None
        model = sub
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _touches(loc: tuple, swept: dict[str, Any]) -> list[str]:
    """The swept keys an error at `loc` concerns (the key itself, or its section's validator)."""
    out = []
    for key in swept:
        path = tuple(key.split("."))
        if loc[: len(path)] == path or path[: len(loc)] == loc:
            out.append(key)
    return out


def _format_errors(
    err: ValidationError,
    source: Source,
    schema: type[BaseModel],
    swept: dict[str, Any] | None = None,
) -> list[str]:
    """One line per error: `file:line: dotted.key: what is wrong (found ...)`.

    `swept`: the sweep values this config was validated with; an error about a swept key is
    reported as a problem of that sweep cell, at the sweep's line.
    """
    problems = []
    for e in err.errors():
        full = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        loc = full
        where = source.where(full)
        cell = _touches(full, swept or {})
        if cell:
            where = source.where(("sweep", cell[0]))
            where += ": sweep cell (" + ", ".join(f"{k}={swept[k]!r}" for k in cell) + ")"
        if e["type"] == "extra_forbidden":
            options = _fields_of(schema, loc[:-1]) or []
            problems.append(
                f"{where}: {_dotted(full)}: unknown key{_suggest(str(loc[-1]), options)}"
                f" (expected one of: {', '.join(options)})"
            )
        elif e["type"] == "missing":
            problems.append(f"{where}: {_dotted(full)}: required key is missing")
        else:
            found = e.get("input")
            msg = e["msg"].removeprefix("Value error, ")
            shown = "" if isinstance(found, dict) else f" (found {found!r})"
            problems.append(f"{where}: {_dotted(full) or '<top>'}: {msg}{shown}")
    return problems


def _set_dotted(raw: dict, path: tuple, value: Any) -> None:
    node = raw
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def _override_path(key: str) -> tuple:
    """`sweep.train.seed` names the sweep entry 'train.seed'; anything else is nested keys."""
    parts = tuple(key.split("."))
    if parts[0] == "sweep" and len(parts) > 1:
        return ("sweep", ".".join(parts[1:]))
    return parts


def apply_overrides(raw: dict, overrides: list[str]) -> tuple[set[tuple], list[str]]:
    """Apply `dotted.key=value` strings in place; returns the paths they set and any problems."""
    touched, problems = set(), []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
            problems.append(f"--set {item!r}: expected dotted.key=value, e.g. --set train.lr=0.1")
            continue
        try:
            parsed = parse_yaml_value(value)
        except yaml.YAMLError as e:
            problems.append(
                f"--set {key}: value {value!r} is not valid YAML ({getattr(e, 'problem', e)})"
            )
            continue
        path = _override_path(key.strip())
        _set_dotted(raw, path, parsed)
        touched.add(path)
    return touched, problems


def read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    """The mapping in a YAML file and its line map; ConfigError on any problem."""
    if not path.exists():
        raise ConfigError([f"{path}: file not found (expected an experiment YAML file)"])
    if path.is_dir():
        raise ConfigError([f"{path}: is a folder (expected an experiment YAML file)"])
    return parse_yaml(path.read_text(encoding="utf-8"), path)


def parse_yaml(text: str, path: str | Path = "<yaml>") -> tuple[dict, dict[tuple, int]]:
    """The mapping in YAML text and its line map; `path` names it in errors."""
    try:
        node = yaml.compose(text, Loader=_Loader)
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError([f"{where}: YAML syntax error: {problem}"]) from None
    if raw is None:
        raise ConfigError(
            [
                f"{path}: the file is empty (expected a mapping with keys such as name, data, model, train, measure, sweep)"
            ]
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            [
                f"{path}:1: expected a mapping of keys (name, data, model, ...), found a {type(raw).__name__}"
            ]
        )
    return raw, _line_map(node)


def load_experiment(
    path: str | Path, overrides: list[str] | None = None
) -> tuple[ExperimentConfig, dict]:
    """Read, override and validate an experiment, every sweep cell included; all problems at once.

    Returns the config and the raw mapping after overrides (what `experiment.yaml` records).
    """
    path = Path(path)
    raw, lines = read_yaml(path)
    touched, problems = apply_overrides(raw, list(overrides or []))
    return validate_experiment(raw, Source(str(path), lines, touched), problems), raw


def experiment_from_dict(raw: dict, file: str = "<dict>") -> ExperimentConfig:
    """Validate an in-memory mapping (tests, programmatic use) with the same errors as files."""
    return validate_experiment(raw, Source(file, {}, set()))


def validate_experiment(
    raw: dict, source: Source, problems: list[str] | None = None
) -> ExperimentConfig:
    problems = list(problems or [])
    sweep = raw.get("sweep") if isinstance(raw.get("sweep"), dict) else {}
    problems += _sweep_key_problems(sweep, source)
    # Validate the first sweep cell: a swept key's base value is replaced by its first sweep
    # value, so a base value that every run overrides cannot fail on its own. The other sweep
    # values and every combination are checked below.
    probe, first = copy.deepcopy(raw), {}
    for key, values in sweep.items():
        if key in SWEEPABLE and isinstance(values, list) and values:
            _set_dotted(probe, tuple(key.split(".")), values[0])
            first[key] = values[0]
    try:
        exp = ExperimentConfig.model_validate(probe)
    except ValidationError as e:
        problems += _format_errors(e, source, ExperimentConfig, first)
    problems += _sweep_value_problems(raw, {k: v for k, v in sweep.items() if k in first}, source)
    if problems:
        raise ConfigError(sorted(set(problems), key=problems.index))
    try:  # keep the base values as written where they are valid on their own
        exp = ExperimentConfig.model_validate(raw)
    except ValidationError:
        pass
    expand(exp, source)  # every combination must be valid too (e.g. nesterov with a swept momentum)
    return exp


# --------------------------------------------------------------------------- sweeps


def _all_dotted_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        sub = _model_in(field.annotation)
        keys.extend(_all_dotted_keys(sub, dotted + ".") if sub else [dotted])
    return keys


SWEEPABLE = [k for k in _all_dotted_keys(RunConfig) if k != "name"]
NOT_RUN_KEYS = ("sweep", "track")  # an experiment's keys that no run config holds


def _sweep_key_problems(sweep: dict, source: Source) -> list[str]:
    problems = []
    for key, values in sweep.items():
        where = source.where(("sweep", key))
        if key not in SWEEPABLE:
            problems.append(
                f"{where}: sweep.{key}: not a sweepable key{_suggest(str(key), SWEEPABLE)}"
                f" (expected a dotted key such as train.batch_size, model.norm, train.seed)"
            )
        elif isinstance(values, list) and not values:
            problems.append(f"{where}: sweep.{key}: empty list (expected at least one value)")
    return problems


def _sweep_value_problems(raw: dict, sweep: dict[str, list], source: Source) -> list[str]:
    """Each sweep value, set alone into the first cell, must validate; errors point at its line."""
    problems = []
    base = {k: v for k, v in raw.items() if k not in NOT_RUN_KEYS}
    for key, values in sweep.items():
        for i, value in enumerate(values[1:], start=1):
            cell = copy.deepcopy(base)
            for other, other_values in sweep.items():  # the others at their first value
                if other != key:
                    _set_dotted(cell, tuple(other.split(".")), other_values[0])
            _set_dotted(cell, tuple(key.split(".")), value)
            try:
                RunConfig.model_validate(cell)
            except ValidationError as e:
                if any(key not in _touches(tuple(err["loc"]), sweep) for err in e.errors()):
                    continue  # not this value's fault alone: reported elsewhere
                for line in _format_errors(e, Source(source.file, {}, set()), RunConfig):
                    msg = line.split(": ", 2)[-1]
                    problems.append(f"{source.where(('sweep', key, i))}: sweep.{key}[{i}]: {msg}")
    return problems


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    params: dict[str, Any]  # the swept keys and this run's values, in sweep order
    config: RunConfig


def run_id(cfg: RunConfig) -> str:
    """Short hash of the resolved run config; `name` (the output folder) is excluded."""
    # how a run is executed (vectorize_seeds, checkpoint_every) does not change what it
    # computes: not hashed, so changing them keeps a sweep's run ids and resumes it
    payload = json.dumps(
        cfg.model_dump(
            mode="json", exclude={"name": True, "train": {"vectorize_seeds", "checkpoint_every"}}
        ),
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def expand(exp: ExperimentConfig, source: Source | None = None) -> list[PlannedRun]:
    """The Cartesian product of the sweep, last key fastest, in the order written."""
    base = exp.model_dump(mode="python", exclude=set(NOT_RUN_KEYS))
    keys = list(exp.sweep)
    runs, seen = [], set()
    for combo in itertools.product(*(exp.sweep[k] for k in keys)):
        cell = copy.deepcopy(base)
        for key, value in zip(keys, combo):
            _set_dotted(cell, tuple(key.split(".")), value)
        try:
            cfg = RunConfig.model_validate(cell)
        except ValidationError as e:
            where = source or Source("<sweep>", {}, set())
            raise ConfigError(_format_errors(e, where, RunConfig, dict(zip(keys, combo)))) from None
        rid = run_id(cfg)
        if rid in seen:  # e.g. a value listed twice: one run, not two
            continue
        seen.add(rid)
        runs.append(PlannedRun(rid, dict(zip(keys, combo)), cfg))
    return runs


def get_dotted(cfg: BaseModel, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value

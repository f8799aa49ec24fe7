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
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from bnexp.errors import BnexpError

# --------------------------------------------------------------------------- schema


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    dataset: Literal["digits", "catvnoncat", "cifar10", "npz"] = "digits"
    root: str | None = None  # folder holding the dataset's files (catvnoncat, cifar10)
    seed: int = 0  # fixes the train/test split and any subset, independent of train.seed
    test_fraction: float = Field(0.25, gt=0, lt=1)  # digits: share held out, stratified
    standardize: bool = True  # per-feature (digits) or per-channel, with training statistics


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
    # train the runs of one sweep cell that differ only in train.seed as one batched model
    # (bnexp.vectorize); each run's results equal a separate run's. Falls back, with a log
    # line, where a model or option cannot be vectorized. Not part of the run id.
    vectorize_seeds: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov: true needs optimizer: sgd and momentum > 0")
        return self


class TargetConfig(Strict):
    metric: Literal["train_acc", "test_acc", "train_loss", "test_loss"] = "train_acc"
    value: float  # accuracies: reached when >= value; losses: reached when <= value


class MeasureConfig(Strict):
    target: TargetConfig | None = None  # speed-up = steps until it is first met


class RunConfig(Strict):
    """Everything one run needs; a run is a pure function of it."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)


class ExperimentConfig(RunConfig):
    sweep: dict[str, list[Any]] = Field(default_factory=dict)  # dotted key -> values


# --------------------------------------------------------------------------- errors


class ConfigError(BnexpError):
    """One or more problems with a config; `str()` gives one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 / 5E4 as floats (YAML 1.1 needs a dot for that)."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
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


def _format_errors(err: ValidationError, source: Source, schema: type[BaseModel], prefix: tuple = ()) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        full = (*prefix, *loc)
        where = source.where(full)
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


def apply_overrides(raw: dict, overrides: list[str]) -> set[tuple]:
    """Apply `dotted.key=value` strings in place; returns the paths they set."""
    touched, problems = set(), []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
            problems.append(f"--set {item!r}: expected dotted.key=value, e.g. --set train.lr=0.1")
            continue
        try:
            parsed = parse_yaml_value(value)
        except yaml.YAMLError as e:
            problems.append(f"--set {key}: value {value!r} is not valid YAML ({e.problem})")
            continue
        path = _override_path(key.strip())
        _set_dotted(raw, path, parsed)
        touched.add(path)
    if problems:
        raise ConfigError(problems)
    return touched


def read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    """The mapping in a YAML file and its line map; ConfigError on any problem."""
    if not path.exists():
        raise ConfigError([f"{path}: file not found (expected an experiment YAML file)"])
    if path.is_dir():
        raise ConfigError([f"{path}: is a folder (expected an experiment YAML file)"])
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=_Loader)
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError([f"{where}: YAML syntax error: {problem}"]) from None
    if raw is None:
        raise ConfigError([f"{path}: the file is empty (expected a mapping with keys such as name, data, model, train, measure, sweep)"])
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}:1: expected a mapping of keys (name, data, model, ...), found a {type(raw).__name__}"])
    return raw, _line_map(node)


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> tuple[ExperimentConfig, dict]:
    """Read, override and validate an experiment; also checks that every sweep cell is valid.

    Returns the config and the raw mapping after overrides (what `experiment.yaml` records).
    """
    path = Path(path)
    raw, lines = read_yaml(path)
    touched = apply_overrides(raw, list(overrides or []))
    source = Source(str(path), lines, touched)
    try:
        exp = ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source, ExperimentConfig)) from None
    _check_sweep(exp, raw, source)
    return exp, raw


def experiment_from_dict(raw: dict, file: str = "<dict>") -> ExperimentConfig:
    """Validate an in-memory mapping (tests, programmatic use) with the same errors as files."""
    source = Source(file, {}, set())
    try:
        exp = ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source, ExperimentConfig)) from None
    _check_sweep(exp, raw, source)
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


def _check_sweep(exp: ExperimentConfig, raw: dict, source: Source) -> None:
    problems = []
    for key, values in exp.sweep.items():
        loc = ("sweep", key)
        if key not in SWEEPABLE:
            problems.append(
                f"{source.where(loc)}: sweep.{key}: not a sweepable key{_suggest(key, SWEEPABLE)}"
                f" (expected a dotted key such as train.batch_size, model.norm, train.seed)"
            )
        elif not values:
            problems.append(f"{source.where(loc)}: sweep.{key}: empty list (expected at least one value)")
    if problems:
        raise ConfigError(problems)
    base = {k: v for k, v in raw.items() if k != "sweep"}
    for key, values in exp.sweep.items():  # each value checked once, in an otherwise base run
        for i, value in enumerate(values):
            cell = copy.deepcopy(base)
            _set_dotted(cell, tuple(key.split(".")), value)
            try:
                RunConfig.model_validate(cell)
            except ValidationError as e:
                for line in _format_errors(e, Source(source.file, {}, set()), RunConfig):
                    msg = line.split(": ", 2)[-1]
                    problems.append(f"{source.where(('sweep', key, i))}: sweep.{key}[{i}]: {msg}")
    if problems:
        raise ConfigError(problems)


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    params: dict[str, Any]  # the swept keys and this run's values, in sweep order
    config: RunConfig


def run_id(cfg: RunConfig) -> str:
    """Short hash of the resolved run config; `name` (the output folder) is excluded."""
    # how a run is executed (vectorize_seeds) does not change what it computes: not hashed
    payload = json.dumps(cfg.model_dump(mode="json", exclude={"name": True, "train": {"vectorize_seeds"}}), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def expand(exp: ExperimentConfig) -> list[PlannedRun]:
    """The Cartesian product of the sweep, last key fastest, in the order written."""
    base = exp.model_dump(mode="python", exclude={"sweep"})
    keys = list(exp.sweep)
    runs, seen = [], set()
    for combo in itertools.product(*(exp.sweep[k] for k in keys)):
        cell = copy.deepcopy(base)
        for key, value in zip(keys, combo):
            _set_dotted(cell, tuple(key.split(".")), value)
        cfg = RunConfig.model_validate(cell)
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

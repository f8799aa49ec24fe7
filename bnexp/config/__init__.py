"""The experiment schema, YAML loading with file:line errors, --set overrides, sweeps and run ids.

One schema (pydantic v2, unknown keys forbidden) describes a run; an experiment is a run plus
`sweep:`, a map from dotted keys to lists that expands to the Cartesian product of runs.
Every user-facing problem becomes a `ConfigError` holding one line per problem, all at once.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bnexp.config.identity import run_id
from bnexp.config.model import FACTORY, factory_parts
from bnexp.config.schema import (
    AugmentConfig,
    BatchStatNoiseConfig,
    BinaryConfig,
    DataConfig,
    ExperimentConfig,
    IcsConfig,
    LrScheduleConfig,
    MeasureConfig,
    MlflowTrackConfig,
    ModelConfig,
    NoisyBNConfig,
    RunConfig,
    ShiftProbeConfig,
    TargetConfig,
    TrackConfig,
    TrainConfig,
)
from bnexp.config.yamlfile import parse_yaml, parse_yaml_value, read_yaml
from bnexp.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "BatchStatNoiseConfig",
    "BinaryConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "IcsConfig",
    "LrScheduleConfig",
    "MeasureConfig",
    "MlflowTrackConfig",
    "ModelConfig",
    "NoisyBNConfig",
    "PlannedRun",
    "RunConfig",
    "ShiftProbeConfig",
    "TargetConfig",
    "TrackConfig",
    "TrainConfig",
    "expand",
    "experiment_from_dict",
    "get_dotted",
    "load_experiment",
    "parse_yaml",
    "parse_yaml_value",
    "run_id",
]


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


MAX_RUNS = 100_000  # runs one experiment may plan (each is a folder and a row of plan.csv)

_NAMED_KEY = re.compile(r"^([a-z_]+(?:\.[a-z_]+)+): ")


def _error_loc(e: dict) -> tuple[tuple, str, bool]:
    """(dotted location, message, whether the message named it) of one pydantic error. A
    section's validator names the key it is about ("train.batch_size: ..."): point there."""
    full = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    msg = e["msg"].removeprefix("Value error, ")
    named = _NAMED_KEY.match(msg) if e["type"] == "value_error" else None
    if named and tuple(named[1].split("."))[: len(full)] == full:
        return tuple(named[1].split(".")), msg[named.end() :], True
    return full, msg, False


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 5]}...{text[-3:]} ({len(text)} chars)"


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
        full, msg, named = _error_loc(e)
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
            shown = "" if isinstance(found, dict) or named else f" (found {_short(found)})"
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
    touched, problems, given = set(), [], {}
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
        given[".".join(path)] = value.strip()
    return touched, problems + _swept_override_problems(raw, given)


def _swept_override_problems(raw: dict, given: dict[str, str]) -> list[str]:
    """A `--set` on a key the sweep sets: each run would take the sweep's value instead, so it
    is refused, naming the sweep and the override that runs only the value given."""
    sweep = raw.get("sweep") if isinstance(raw.get("sweep"), dict) else {}
    return [
        f"--set {key}: {key} is swept (sweep.{key}: {_short(sweep[key])}), so every run would "
        f"take the sweep's value instead; to run only this value, use --set 'sweep.{key}=[{value}]'"
        for key, value in given.items()
        if not key.startswith("sweep.") and key in sweep
    ]


def load_experiment(
    path: str | Path, overrides: list[str] | None = None
) -> tuple[ExperimentConfig, dict]:
    """Read, override and validate an experiment, every sweep cell included; all problems at once.

    Returns the config and the raw mapping after overrides (what `experiment.yaml` records).
    """
    path = Path(path)
    raw, lines = read_yaml(path)
    touched, problems = apply_overrides(raw, list(overrides or []))
    resolve_factory_files(raw, path.parent)
    return validate_experiment(raw, Source(str(path), lines, touched), problems), raw


def resolve_factory_files(raw: dict, folder: Path) -> None:
    """Make each relative `model.factory: path/file.py:function` (base value and sweep values)
    absolute, relative to `folder` (the config file's), in place: the runs then find the file
    from any working directory, and their config.yaml records where it was."""

    def absolute(spec: Any) -> Any:
        if not isinstance(spec, str) or not FACTORY.match(spec):
            return spec
        target, name, is_file = factory_parts(spec)
        if not is_file or Path(target).is_absolute():
            return spec
        return f"{(folder / target).resolve()}:{name}"

    model = raw.get("model")
    if isinstance(model, dict) and "factory" in model:
        model["factory"] = absolute(model["factory"])
    sweep = raw.get("sweep")
    values = sweep.get("model.factory") if isinstance(sweep, dict) else None
    if isinstance(values, list):
        sweep["model.factory"] = [absolute(v) for v in values]


def experiment_from_dict(raw: dict, file: str = "<dict>") -> ExperimentConfig:
    """Validate an in-memory mapping (tests, programmatic use) with the same errors as files."""
    return validate_experiment(raw, Source(file, {}, set()))


def validate_experiment(
    raw: dict, source: Source, problems: list[str] | None = None
) -> ExperimentConfig:
    problems = list(problems or [])
    sweep = raw.get("sweep") if isinstance(raw.get("sweep"), dict) else {}
    problems += _sweep_key_problems(sweep, source)
    n_runs = math.prod(len(v) for v in sweep.values() if isinstance(v, list))
    if n_runs > MAX_RUNS:
        problems.append(
            f"{source.where(('sweep',))}: sweep: {n_runs:,} runs, more than the {MAX_RUNS:,} one "
            "experiment may plan (expected fewer values; split it into several experiments)"
        )
        raise ConfigError(problems)
    # Validate the first sweep cell: a swept key's base value is replaced by its first sweep
    # value, so a base value that every run overrides cannot fail on its own. The other sweep
    # values and every combination are checked below.
    first = {
        key: values[0]
        for key, values in sweep.items()
        if key in SWEEPABLE and isinstance(values, list) and values
    }
    probe = sweep_cell(raw, first)
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
            # the others at their first value
            assign = {other: vals[0] for other, vals in sweep.items() if other != key}
            cell = sweep_cell(base, {**assign, key: value})
            try:
                RunConfig.model_validate(cell)
            except ValidationError as e:
                if any(key not in _touches(_error_loc(err)[0], sweep) for err in e.errors()):
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


# Our BN layer's controls. Swept, they apply to the cells with norm: custom; a cell with norm
# none or torch takes them at their defaults, so it is the same run whatever their swept value:
# one run, planned in every cell it serves as the baseline (a ghost-BN sweep with its none and
# full-batch-statistics baselines in one file). Set outside the sweep they still need custom.
# Likewise a swept ghost_batch_size in a cell with bn_stats: population (which normalizes with
# the running estimates, updated once per batch: the ghost size changes nothing there).
BN_CONTROLS = {
    "model.ghost_batch_size": None,
    "model.bn_stats": "batch",
    "model.bn_noise": None,
    "model.eval_stats": "running",
}


def sweep_cell(base: dict, assign: dict[str, Any]) -> dict:
    """`base` (a raw config mapping) with the dotted keys of `assign` set, and the swept BN
    controls at their defaults where the cell's norm is not custom."""
    cell = copy.deepcopy(base)
    for key, value in assign.items():
        _set_dotted(cell, tuple(key.split(".")), value)
    model = cell.get("model")
    if isinstance(model, dict) and model.get("norm", "none") != "custom":
        for key in assign.keys() & BN_CONTROLS.keys():
            model[key.split(".")[1]] = BN_CONTROLS[key]
    # population statistics never split a batch: a swept ghost size is the same run there
    if isinstance(model, dict) and model.get("bn_stats") == "population":
        if "model.ghost_batch_size" in assign:
            model["ghost_batch_size"] = None
    return cell


def expand(exp: ExperimentConfig, source: Source | None = None) -> list[PlannedRun]:
    """The Cartesian product of the sweep, last key fastest, in the order written."""
    # only what the file sets: each cell fills in the defaults, and knows what it set
    base = exp.model_dump(mode="python", exclude=set(NOT_RUN_KEYS), exclude_unset=True)
    keys = list(exp.sweep)
    runs, seen = [], set()
    for combo in itertools.product(*(exp.sweep[k] for k in keys)):
        cell = sweep_cell(base, dict(zip(keys, combo)))
        try:
            cfg = RunConfig.model_validate(cell)
        except ValidationError as e:
            where = source or Source("<sweep>", {}, set())
            raise ConfigError(_format_errors(e, where, RunConfig, dict(zip(keys, combo)))) from None
        rid, params = run_id(cfg), dict(zip(keys, combo))
        # a value listed twice: one run, not two. The same run under other swept values (a
        # baseline that ignores a swept BN control) stays in the plan once per cell it serves
        if (rid, repr(params)) in seen:
            continue
        seen.add((rid, repr(params)))
        runs.append(PlannedRun(rid, params, cfg))
    return runs


def get_dotted(cfg: BaseModel, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value

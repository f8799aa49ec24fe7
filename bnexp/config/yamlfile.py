"""Reading an experiment's YAML file safely: a mapping, its line map, and one line per problem.

Hostile or broken files end in a `ConfigError`, fast and in bounded memory:
- a file over MAX_BYTES is refused before it is read (a real sweep file is a few KB);
- a file that is not UTF-8 is named with the offending byte and its line;
- the document is composed once (libyaml's parser where installed) and its node count *with
  aliases expanded* is counted before anything walks or builds it: an alias bomb (a 600-byte file
  whose nested aliases expand to 10^9 values) stops at MAX_NODES, and an alias that contains
  itself is refused;
- a key given twice in one mapping is an error naming both lines (YAML would let the second
  silently replace the first, e.g. a whole `train:` section).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bnexp.errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MiB
MAX_NODES = 100_000  # values (scalars, lists, mappings) once aliases are expanded

# YAML 1.1 needs a dot for a float: also read 1e-3 / 5E4 as floats
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


def _with_float_resolver(cls: type) -> type:
    cls.yaml_implicit_resolvers = {
        k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789"))
    return cls


@_with_float_resolver
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 / 5E4 as floats."""


# libyaml's parser (C) composes a large file many times faster than the pure-Python one
_FastLoader = (
    _with_float_resolver(type("_FastLoader", (yaml.CSafeLoader,), {}))
    if getattr(yaml, "__with_libyaml__", False)
    else _Loader
)


def parse_yaml_value(text: str) -> Any:
    """A YAML scalar or flow value, as in `--set train.lr=1e-3` or
    `--set sweep.train.seed=[0,1]`."""
    return yaml.load(text, Loader=_Loader)


class _TooBig(Exception):
    pass


class _Cycle(Exception):
    def __init__(self, node: yaml.Node):
        self.node = node


def expanded_size(root: yaml.Node, limit: int = MAX_NODES) -> int:
    """Nodes in the document with every alias expanded; raises _TooBig past `limit`, _Cycle for
    an alias inside itself. Linear in the composed (unexpanded) graph: sizes are memoized."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Cycle(node)
        active.add(key)
        n = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                n += size(k) + size(v)
                if n > limit:
                    raise _TooBig
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                n += size(item)
                if n > limit:
                    raise _TooBig
        active.discard(key)
        sizes[key] = n
        return n

    return size(root)


def _line_map(
    node: yaml.Node, problems: list[str], file: str, path: tuple = (), out: dict | None = None
) -> dict[tuple, int]:
    """Dotted path (as a tuple) -> 1-based line of its key (mappings) or item (sequences).
    A key given twice in one mapping adds a problem naming both lines."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    dotted = ".".join(map(str, (*path, key_node.value)))
                    problems.append(
                        f"{file}:{line}: {dotted}: key given twice (first at line "
                        f"{seen[key_node.value]}); YAML would keep only the second, remove one"
                    )
                seen.setdefault(key_node.value, line)
            sub = (*path, key_node.value)
            out.setdefault(sub, line)
            _line_map(value_node, problems, file, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            _line_map(item, problems, file, (*path, i), out)
    return out


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            [
                f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                "save the file as UTF-8"
            ]
        ) from None


def read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    """The mapping in a YAML file and its line map; ConfigError on any problem."""
    if not path.exists():
        raise ConfigError([f"{path}: file not found (expected an experiment YAML file)"])
    if path.is_dir():
        raise ConfigError([f"{path}: is a folder (expected an experiment YAML file)"])
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(
                [
                    f"{path}: {size:,} bytes, more than the {MAX_BYTES:,} an experiment file may "
                    "have (expected a YAML file of a few KB; sweep lists, not data, belong in it)"
                ]
            )
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the file ({e.strerror or e})"]) from None
    return parse_yaml(_decode(path, data), path)


def parse_yaml(text: str, path: str | Path = "<yaml>") -> tuple[dict, dict[tuple, int]]:
    """The mapping in YAML text and its line map; `path` names it in errors. The same caps as
    for a file: at most MAX_BYTES of text and MAX_NODES values once aliases are expanded."""
    if len(text) > MAX_BYTES:
        raise ConfigError(
            [f"{path}: {len(text):,} characters, more than the {MAX_BYTES:,} a config may have"]
        )
    try:
        loader = _FastLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                expanded_size(node)
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError([f"{where}: YAML syntax error: {problem}"]) from None
    except _TooBig:
        raise ConfigError(
            [
                f"{path}: the document expands to more than {MAX_NODES:,} values (nested YAML "
                "aliases, *name, repeat whole sections); expected a plain experiment file"
            ]
        ) from None
    except _Cycle as e:
        raise ConfigError(
            [f"{path}:{e.node.start_mark.line + 1}: a YAML alias contains itself"]
        ) from None
    except RecursionError:
        raise ConfigError(
            [f"{path}: nested too deeply (expected a plain experiment file)"]
        ) from None
    if raw is None:
        raise ConfigError(
            [
                f"{path}: the file is empty (expected a mapping with keys such as name, data, "
                "model, train, measure, sweep)"
            ]
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            [
                f"{path}:1: expected a mapping of keys (name, data, model, ...), "
                f"found a {type(raw).__name__}"
            ]
        )
    problems: list[str] = []
    lines = _line_map(node, problems, str(path))
    if problems:
        raise ConfigError(problems)
    return raw, lines

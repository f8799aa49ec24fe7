"""The config reference (docs/config.md), generated from the schema so that it cannot drift.

Every key of a run config, by dotted name, with its type, default and meaning. The meaning is the
field's `Field(description=...)` when it has one, else the comments the schema's source puts next
to the field: the comment lines directly above it and any comment on its own lines. A section
(a nested model) is described by its class docstring.

    python -m bnexp.config.reference > docs/config.md     (or: make docs)
"""

from __future__ import annotations

import ast
import inspect
import io
import sys
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from functools import cache

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from bnexp.config.schema import ExperimentConfig, RunConfig

HEADER = """# Config reference

Every key of an experiment file, by dotted name (`train.lr` is `lr:` under `train:`), with its
type, default and meaning. A key left out takes its default; unknown keys are errors.
`sweep:` takes any of these dotted names with a list of values (one run per combination).

Generated from the schema (`bnexp/config/schema.py`) by `python -m bnexp.config.reference >
docs/config.md` (`make docs`); `tests/base/test_config_reference.py` fails when this file is out
of date or a key has no meaning.
"""
# what a constraint's attribute reads as
_BOUNDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "max_length": "length ≤"}


@dataclass
class Key:
    """One row of the reference: a dotted key, its type, default and meaning."""

    name: str
    type: str
    default: str
    meaning: str


@dataclass
class Section:
    """The keys of one model (a config section), under its dotted prefix."""

    prefix: str
    doc: str
    keys: list[Key]


# --------------------------------------------------------------------------- meanings from source


@cache
def field_comments(cls: type) -> dict[str, str]:
    """field name -> the comments next to its definition in `cls`'s source (above, then on it)."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}  # line (1-based) -> comment text
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    out = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line in comments and line not in code_lines:  # the comment block directly above
            above.insert(0, comments[line])
            line -= 1
        on = [comments[i] for i in range(node.lineno, node.end_lineno + 1) if i in comments]
        text = " ".join(c for c in [*above, *on] if c and not c.startswith(("fmt:", "noqa")))
        out[node.target.id] = text
    return out


def meaning(cls: type[BaseModel], name: str, info: FieldInfo) -> str:
    """Field(description=...), else the source comments, else (a section) its class docstring."""
    if info.description:
        return info.description
    owner = next(c for c in cls.__mro__ if name in c.__dict__.get("__annotations__", {}))
    text = field_comments(owner).get(name, "")
    model = _model_of(info.annotation)
    if not text and model is not None:
        text = _docstring(model)
    return text


def _docstring(cls: type) -> str:
    """A class's own docstring on one line ('' when it has none of its own)."""
    doc = cls.__dict__.get("__doc__") or ""
    return " ".join(inspect.cleandoc(doc).split())


# --------------------------------------------------------------------------- types and defaults


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The model a field holds (`X` or `X | None`), else None."""
    args = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)


def _is_union(annotation: object) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _bounds(metadata: list) -> str:
    parts = []
    for m in metadata:
        for attr, sign in _BOUNDS.items():
            value = getattr(m, attr, None)
            if value is not None:
                parts.append(f"{sign} {'2³²' if value == 2**32 else value}")
        if getattr(m, "pattern", None):
            parts.append(f"matching {m.pattern}")
    return ", ".join(parts)


def type_text(annotation: object, metadata: list | None = None) -> str:
    """A field's type as a reader writes it: `int > 0`, `sgd | adam`, `list of int > 0`, ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0], [*args[1:], *(metadata or [])])
    if origin is typing.Literal:
        text = " | ".join(str(a) for a in args)
    elif _is_union(annotation):  # the bounds belong to the members that are not null
        return " | ".join(type_text(a, None if a is type(None) else metadata) for a in args)
    elif origin is list:
        text = f"list of {type_text(args[0])}"
    elif origin is dict:
        text = f"map of {type_text(args[0])} to {type_text(args[1])}"
    elif annotation is type(None):
        text = "null"
    elif annotation is typing.Any:
        text = "any"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        text = "section"
    else:
        text = getattr(annotation, "__name__", str(annotation))
    bounds = _bounds(metadata or [])
    return f"{text} {bounds}" if bounds else text


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    return _yaml(value)


def _yaml(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


# --------------------------------------------------------------------------- the walk


def sections(cls: type[BaseModel] = RunConfig, prefix: str = "", doc: str = "") -> list[Section]:
    """`cls`'s keys as one section, then each nested model's keys as sections of their own. A
    section is described by its class docstring, else by the meaning of the key holding it."""
    own: list[Key] = []
    nested: list[Section] = []
    for name, info in cls.model_fields.items():
        key = Key(f"{prefix}{name}", type_text(info.annotation, info.metadata),
                  default_text(info), meaning(cls, name, info))  # fmt: skip
        own.append(key)
        model = _model_of(info.annotation)
        if model is not None:
            nested += sections(model, f"{key.name}.", key.meaning)
    return [Section(prefix.rstrip("."), _docstring(cls) or doc, own), *nested]


def experiment_sections() -> list[Section]:
    """A run config's sections, then the keys only an experiment file has (sweep, track)."""
    run_keys = set(RunConfig.model_fields)
    extra = [
        Key(f"{n}", type_text(i.annotation, i.metadata), default_text(i),
            meaning(ExperimentConfig, n, i))
        for n, i in ExperimentConfig.model_fields.items() if n not in run_keys
    ]  # fmt: skip
    nested = [
        s
        for n, i in ExperimentConfig.model_fields.items()
        if n not in run_keys and _model_of(i.annotation) is not None
        for s in sections(_model_of(i.annotation), f"{n}.", meaning(ExperimentConfig, n, i))
    ]
    doc = "Keys of the experiment file that are not part of a run config (no run id)."
    return [*sections(), Section("(experiment file)", doc, extra), *nested]


def undocumented(all_sections: list[Section]) -> list[str]:
    """Dotted keys (and sections) without meaning text."""
    missing = [k.name for s in all_sections for k in s.keys if not k.meaning.strip()]
    return missing + [f"{s.prefix} (section docstring)" for s in all_sections if not s.doc]


def _cell(text: str) -> str:
    # a table cell: | splits cells and <name> would read as an HTML tag
    return text.replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def reference_markdown() -> str:
    """docs/config.md."""
    lines = [HEADER]
    for s in experiment_sections():
        title = f"`{s.prefix}`" if s.prefix and "(" not in s.prefix else s.prefix or "top level"
        lines += [f"## {title}", ""]
        if s.doc:
            lines += [s.doc[0].upper() + s.doc[1:] + ("" if s.doc.endswith(".") else "."), ""]
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        lines += [
            f"| `{k.name}` | {_cell(k.type)} | `{_cell(k.default)}` | {_cell(k.meaning)} |"
            for k in s.keys
        ]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(reference_markdown())
    missing = undocumented(experiment_sections())
    for key in missing:
        print(f"warning: {key} has no meaning (add a comment next to it in schema.py)",
              file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

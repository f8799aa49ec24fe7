"""docs/config.md is the schema's reference: up to date, every key with a meaning, every key of
every shipped config's resolved runs documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from bnexp.config import expand, load_experiment
from bnexp.config.reference import (
    experiment_sections,
    field_comments,
    meaning,
    reference_markdown,
    sections,
    type_text,
    undocumented,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "config.md"
SHIPPED = sorted((REPO / "configs").rglob("*.yaml"))


def test_docs_config_md_is_the_generated_reference():
    assert DOC.read_text() == reference_markdown(), (
        "docs/config.md is out of date: regenerate it with "
        "`python -m bnexp.config.reference > docs/config.md` (make docs)"
    )


def test_every_key_and_section_has_a_meaning():
    missing = undocumented(experiment_sections())
    assert not missing, (
        f"keys without meaning text: {', '.join(missing)} (add a comment next to the field in "
        "bnexp/config/schema.py, or a docstring to its section's class)"
    )


def _leaf_keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        dotted = f"{prefix}{k}"
        out.add(dotted)
        if isinstance(v, dict):
            out |= _leaf_keys(v, f"{dotted}.")
    return out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_key_of_a_shipped_configs_runs_is_documented(path):
    documented = set(re.findall(r"^\| `([^`]+)` \|", DOC.read_text(), re.M))
    exp, _ = load_experiment(path)
    keys = set()
    for run in expand(exp):
        keys |= _leaf_keys(run.config.model_dump())
    assert keys and not keys - documented, f"{path.name}: undocumented {sorted(keys - documented)}"


class _Probe(BaseModel):
    """A section."""

    # the first line
    # and the second
    a: int = 1
    b: int = 2  # on its line

    c: list[int] = Field(
        default_factory=list,
    )  # after a wrapped definition
    d: int = Field(3, description="from the description")  # not this
    e: int = 4


def test_meaning_comes_from_description_comments_above_and_on_the_line():
    assert field_comments(_Probe) == {
        "a": "the first line and the second",
        "b": "on its line",
        "c": "after a wrapped definition",
        "d": "not this",
        "e": "",
    }
    fields = _Probe.model_fields
    assert meaning(_Probe, "d", fields["d"]) == "from the description"
    [section] = sections(_Probe, "probe.")
    assert section.doc == "A section."
    assert undocumented([section]) == ["probe.e"]


def test_types_read_as_written():
    from typing import Literal

    from pydantic import PositiveInt

    assert type_text(Literal["sgd", "adam"]) == "sgd | adam"
    assert type_text(list[PositiveInt]) == "list of int > 0"
    assert type_text(int | None, [Field(ge=2).metadata[0]]) == "int ≥ 2 | null"


def test_the_generator_runs_as_a_module_without_torch():
    code = (
        "import runpy, sys; sys.argv = ['x']\n"
        "try: runpy.run_module('bnexp.config.reference', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout == DOC.read_text()
    assert done.stderr.strip().splitlines()[-1] == "False"

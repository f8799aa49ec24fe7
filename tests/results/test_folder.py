"""The results folder has one owner (bnexp.results.folder): it alone spells the folder's file
names, and it reads every table under one rule for empty cells."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from bnexp.errors import BnexpError
from bnexp.results import ResultsFolder, folder, read_table

PACKAGE = Path(__file__).resolve().parents[2] / "bnexp"
OWNER = PACKAGE / "results" / "folder.py"
# every file and folder name of results/<name>/, as the owner spells it
NAMES = {
    value
    for key, value in vars(folder).items()
    if key.isupper() and isinstance(value, str) and key not in ("_REWRITE", "_NOT_RESULTS")
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            out.add(id(body[0].value))
    return out


def test_the_owner_knows_the_names_of_the_contract():
    for name in ("plan.csv", "summary.csv", "claims.json", "metrics.csv", "summary.json"):
        assert name in NAMES


def test_no_module_but_the_owner_spells_a_results_file_name():
    """A string literal that is a results file name (a path part) appears in the owner only;
    messages that mention a file by name are prose and allowed."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == OWNER:
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and id(node) not in docs
                and isinstance(node.value, str)
                and node.value in NAMES - {"tables", "plots", "runs", "noise", "tensorboard"}
            ):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
    assert not found, "results file names spelled outside bnexp/results/folder.py:\n" + "\n".join(
        found
    )


def test_one_rule_for_empty_cells(tmp_path):
    """Run ids stay strings, "none" and "None" stay values, only an empty cell is missing."""
    path = tmp_path / "plan.csv"
    path.write_text(
        "run_id,model.norm,model.ghost_batch_size,train.seed\n"
        "0123e45678,none,,0\n00000000ab,None,32,1\n"
    )
    plan = read_table(path)
    assert list(plan["run_id"]) == ["0123e45678", "00000000ab"]
    assert list(plan["model.norm"]) == ["none", "None"]
    assert pd.isna(plan["model.ghost_batch_size"][0])
    assert plan["model.ghost_batch_size"][1] == 32
    assert ResultsFolder(tmp_path).read_plan().equals(plan)


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "no plan.csv here"),
        (b"", "the file is empty"),
        (b"run_id\n0123e45678", "ends mid-row"),
        (b"id\nabc\n", "no run_id column"),
        (b"run_id\n../etc\n", "is not a run id"),
    ],
)
def test_a_damaged_plan_is_one_line(tmp_path, content, expected):
    if content is not None:
        (tmp_path / "plan.csv").write_bytes(content)
    with pytest.raises(BnexpError, match=expected) as err:
        ResultsFolder(tmp_path).read_plan()
    assert "\n" not in str(err.value)


def test_paths_follow_the_contract(tmp_path):
    f = ResultsFolder(tmp_path / "quick")
    assert f.plan_csv == tmp_path / "quick" / "plan.csv"
    assert f.run_file("0123e45678", folder.METRICS) == (
        tmp_path / "quick" / "runs" / "0123e45678" / "metrics.csv"
    )
    assert f.table("speedup") == tmp_path / "quick" / "tables" / "speedup.csv"
    f.write_claims([{"claim": "speed-up", "verdict": "not determined"}])
    assert f.read_claims() == [{"claim": "speed-up", "verdict": "not determined"}]

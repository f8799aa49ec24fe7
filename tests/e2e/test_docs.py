"""The README and docs/*.md are true: every path, module, `bnexp` command (and its options) and
`make` target they name exists. Names are read from code (inline `code` and fenced blocks) and
from relative links."""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bnexp.cli import app

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP = ("bnexp", "configs", "docs", "tests", "benchmarks", ".ci")  # a path starting here is checked
SHARED = "${BNEXP_SHARED_DATA:-../shared/data}"
PATH = re.compile(r"(?<![\w./$-])((?:" + "|".join(map(re.escape, TOP)) + r")/[\w./{},*-]*)")


def code_of(text: str) -> list[str]:
    """Fenced blocks (whole) and inline code spans outside them."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return blocks + re.findall(r"`([^`\n]+)`", rest)


def links_of(text: str) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in t]


def expand_braces(path: str) -> list[str]:
    """a/{b,c}.csv -> a/b.csv, a/c.csv."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [
        p
        for part in m.group(1).split(",")
        for p in expand_braces(path[: m.start()] + part + path[m.end() :])
    ]


def paths_of(page: Path) -> list[str]:
    text = page.read_text()
    found = []
    for code in code_of(text):
        found += PATH.findall(code)
        found += re.findall(r"\$\{BNEXP_SHARED_DATA:-\.\./shared/data\}/[\w./{},-]+", code)
    return [p.rstrip(".,") for p in found]


def path_exists(path: str) -> bool:
    if path.startswith(SHARED):
        root = os.environ.get("BNEXP_SHARED_DATA")
        if not root:
            pytest.skip("BNEXP_SHARED_DATA is not set: the shared data paths are not checked")
        path = str(Path(root) / path[len(SHARED) + 1 :])
        base = Path("/")
    else:
        base = REPO
    return all(
        any(base.glob(p.rstrip("/"))) if "*" in p else (base / p).exists()
        for p in expand_braces(path)
    )


def ignored(paths: list[str]) -> set[str]:
    """The paths git ignores: outputs a command writes (results/, benchmarks/results.csv)."""
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(paths), capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    return set(done.stdout.splitlines())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_exists(page):
    paths = paths_of(page)
    outputs = ignored(paths)
    missing = [p for p in paths if p not in outputs and not path_exists(p)]
    missing += [
        link
        for link in links_of(page.read_text())
        if not (page.parent / link).exists() and not link.startswith("results/")
    ]
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


# --------------------------------------------------------------------------- modules


@cache
def top_level_names(file: Path) -> frozenset[str]:
    """Names a module defines or imports at its top level."""
    names = set()
    for node in ast.parse(file.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        if isinstance(node, ast.Assign) and "__all__" in {
            getattr(t, "id", "") for t in node.targets
        }:
            names |= set(ast.literal_eval(node.value))  # names a module's __getattr__ provides
    return frozenset(names)


def dotted_exists(name: str) -> bool:
    """bnexp.a.b.C: the longest module prefix is a file or package, the rest defined in it."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:i])
        file = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if file.exists():
            rest = parts[i:]
            if not rest:
                return True
            if base.is_dir() and (base / f"{rest[0]}.py").exists():
                continue  # not reached: the longer prefix was tried first
            return rest[0] in top_level_names(file)
    return False


def modules_of(page: Path) -> list[str]:
    found = []
    for code in code_of(page.read_text()):
        found += re.findall(r"(?<![\w/.])bnexp(?:\.[A-Za-z_]\w*)+", code)
    return sorted(set(found))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_module_exists(page):
    missing = [m for m in modules_of(page) if not dotted_exists(m)]
    assert not missing, f"{page.name} names modules or objects that do not exist: {missing}"


# --------------------------------------------------------------------------- commands


def commands_of(page: Path) -> list[list[str]]:
    """Each `bnexp ...` command line in the page's code, as words (placeholders kept)."""
    found = []
    for code in code_of(page.read_text()):
        for line in code.splitlines():
            for m in re.finditer(r"(?:^|[\s;(|])bnexp( [^#;|`]*)", line):
                try:
                    words = shlex.split(m.group(1))
                except ValueError:
                    words = m.group(1).split()
                found.append(words)
    return found


def resolve(words: list[str]) -> tuple[list[str], typer.core.TyperCommand] | None:
    """The command path in `words` and its (click) command; None where the command is unknown."""
    cmd = typer.main.get_command(app)
    path: list[str] = []
    for w in words:
        if not hasattr(cmd, "commands") or w.startswith("-"):  # a command, not a group
            break
        sub = cmd.commands.get(w)
        if sub is None:
            return None if re.fullmatch(r"[a-z]+", w) and not path else (path, cmd)
        path, cmd = [*path, w], sub
    return path, cmd


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_bnexp_command_and_option_exists(page):
    runner = CliRunner()
    problems = []
    for words in commands_of(page):
        resolved = resolve(words)
        if resolved is None:
            problems.append(f"bnexp {' '.join(words)}: no such command")
            continue
        path, cmd = resolved
        result = runner.invoke(app, [*path, "--help"])
        if result.exit_code != 0:
            problems.append(f"bnexp {' '.join(path)} --help exits {result.exit_code}")
        options = {o for p in cmd.params for o in [*p.opts, *p.secondary_opts]} | {"--help"}
        problems += [
            f"bnexp {' '.join(path)} has no option {w.split('=')[0]}"
            for w in words
            if w.startswith("-") and not w.startswith("--set=") and w.split("=")[0] not in options
        ]
    assert not problems, f"{page.name}: {problems}"


# --------------------------------------------------------------------------- make targets


def make_targets_of(page: Path) -> list[str]:
    found = []
    for code in code_of(page.read_text()):
        found += re.findall(r"(?:^|[\s;(`])make ([a-z][\w-]*)", code, re.M)
    return sorted(set(found))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_make_target_exists(page):
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    missing = [t for t in make_targets_of(page) if t not in targets]
    assert not missing, f"{page.name} names make targets the Makefile lacks: {missing}"


def test_readme_is_short_and_its_python_example_parses():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    [example] = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    ast.parse(example)  # runs unchanged as a script: tests/api checks it end to end
    assert "make test" in text  # CI runs it


def test_the_checks_catch_what_is_not_there(tmp_path):
    """The extractors see a wrong path, module, command, option and target."""
    page = tmp_path / "page.md"
    page.write_text(
        "Use `bnexp/nope.py` and `bnexp.nope.thing` and `bnexp.training.train.nope`.\n"
        "```sh\nbnexp frobnicate x.yaml\nbnexp run x.yaml --loud\nmake nope\n```\n"
    )
    assert [p for p in paths_of(page) if not path_exists(p)] == ["bnexp/nope.py"]
    assert [m for m in modules_of(page) if not dotted_exists(m)] == [
        "bnexp.nope.thing",
        "bnexp.training.train.nope",
    ]
    assert dotted_exists("bnexp.training.train.train_run") and dotted_exists("bnexp.run")
    [frob, loud] = commands_of(page)
    assert resolve(frob) is None
    path, cmd = resolve(loud)
    assert path == ["run"] and "--loud" not in {o for p in cmd.params for o in p.opts}
    assert make_targets_of(page) == ["nope"]

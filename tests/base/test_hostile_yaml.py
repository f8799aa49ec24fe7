"""Hostile and malformed experiment files, and values `validate` must refuse: each
ends in a ConfigError whose lines name the file (and line), fast, never a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bnexp.config import ConfigError, expand, load_experiment
from bnexp.config.schema import memory_lower_bound, physical_memory
from bnexp.config.yamlfile import MAX_BYTES, MAX_NODES


def write(tmp_path: Path, text: str | bytes, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def problems(path: Path, overrides=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    return info.value.problems


def alias_bomb(levels: int) -> str:
    """`levels` nested aliases, each listing the previous one 10 times: 10**levels values."""
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [6, 9])  # 10^6 values (was 39 s, 2.2 GB), 10^9 (MemoryError)
def test_alias_bomb_fails_fast_with_a_clear_error(tmp_path, levels):
    path = write(tmp_path, alias_bomb(levels))
    assert path.stat().st_size < 700
    t0 = time.perf_counter()
    [line] = problems(path)
    took = time.perf_counter() - t0
    assert line.startswith(f"{path}: the document expands to more than {MAX_NODES:,} values"), line
    assert took < 2, f"took {took:.2f} s to refuse a {path.stat().st_size}-byte alias bomb"


def test_alias_that_contains_itself(tmp_path):
    [line] = problems(write(tmp_path, "name: x\nsweep: &s {train.seed: *s}\n"))
    assert "alias contains itself" in line or "expands to more than" in line, line


def test_oversized_file_refused_before_reading(tmp_path):
    path = write(tmp_path, "name: x\nsweep:\n  train.seed: [" + "1," * (MAX_BYTES // 2) + "1]\n")
    [line] = problems(path)
    assert line.startswith(f"{path}: {path.stat().st_size:,} bytes, more than the {MAX_BYTES:,}")


def test_a_normal_large_sweep_parses_quickly(tmp_path):
    seeds = ", ".join(map(str, range(100)))
    text = (
        "name: big\nmodel: {hidden: [64, 64]}\nsweep:\n"
        f"  train.seed: [{seeds}]\n  train.lr: [0.01, 0.03, 0.1, 0.3, 1.0]\n"
        "  model.norm: [none, torch]\n"
    )
    t0 = time.perf_counter()
    exp, _ = load_experiment(write(tmp_path, text))
    plan = expand(exp)
    took = time.perf_counter() - t0
    assert len(plan) == 1000
    assert took < 10, f"a 1000-run sweep took {took:.1f} s to load and expand"


def test_too_many_runs_refused_before_expanding(tmp_path):
    text = "name: x\nsweep:\n  train.seed: [" + ",".join(map(str, range(1000))) + "]\n"
    text += "  train.lr: [" + ",".join(f"0.{i + 1}" for i in range(200)) + "]\n"
    [line] = problems(write(tmp_path, text))
    assert ":2: sweep: 200,000 runs, more than the 100,000" in line, line


def test_duplicate_keys_name_both_lines(tmp_path):
    path = write(
        tmp_path, "name: x\ntrain:\n  lr: 0.1\nmodel: {norm: torch}\ntrain:\n  epochs: 3\n"
    )
    [line] = problems(path)
    assert line.startswith(f"{path}:5: train: key given twice (first at line 2)"), line
    nested = write(tmp_path, "train:\n  lr: 0.1\n  lr: 0.2\n", "nested.yaml")
    [line] = problems(nested)
    assert line.startswith(f"{nested}:3: train.lr: key given twice (first at line 2)"), line


def test_non_utf8_file_is_one_line(tmp_path):
    path = write(tmp_path, b"name: x\n# caf\xe9 au lait\n")
    [line] = problems(path)
    assert line == f"{path}:2: not UTF-8 text (byte 0xe9 at offset 13); save the file as UTF-8"


@pytest.mark.parametrize(
    "text, where, expected",
    [
        ("train: {lr: .inf}", "train.lr", "finite number"),
        ("train: {lr: .nan}", "train.lr", "finite number"),
        ("model: {norm: torch, hidden: []}", "model.hidden", "[] has no hidden layer"),
        ("model: {norm: custom, arch: cnn, channels: []}", "model.channels", "no hidden layer"),
        ("model: {norm: torch}\ntrain: {batch_size: 1}", "train.batch_size", "at least 2 examples"),
        ("train: {seed: 18446744073709551616}", "train.seed", "less than 4294967296"),
        ("train: {seed: -1}", "train.seed", "greater than or equal to 0"),
        ("data: {seed: -5}", "data.seed", "greater than or equal to 0"),
        ("model: {hidden: [100000000]}", "model.hidden", "GiB of memory"),
        ("name: " + "a" * 300, "name", "at most 128 characters"),
    ],
)
def test_validate_refuses_with_file_and_line(tmp_path, text, where, expected):
    path = write(tmp_path, "name: x\n" + text + "\n" if not text.startswith("name") else text)
    found = problems(path)
    line_no = 2 if not text.startswith("name") else 1
    if where == "train.batch_size":
        line_no = 3
    assert any(p.startswith(f"{path}:{line_no}: {where}: ") and expected in p for p in found), found


def test_hidden_and_none_norm_are_fine(tmp_path):
    exp, _ = load_experiment(
        write(tmp_path, "model: {hidden: [], norm: none}\ntrain: {batch_size: 1}\n")
    )
    assert exp.model.hidden == []


def test_sweep_cells_are_validated_too(tmp_path):
    path = write(
        tmp_path,
        "name: x\nmodel: {norm: torch}\nsweep:\n"
        "  train.batch_size: [64, 1]\n  train.seed: [0, -1]\n  train.lr: [0.1, .inf]\n",
    )
    found = problems(path)
    assert any(
        p.startswith(f"{path}:4: sweep.train.batch_size[1]: 1 with norm: torch") for p in found
    )
    assert any(p.startswith(f"{path}:5: sweep.train.seed[1]:") for p in found), found
    assert any(p.startswith(f"{path}:6: sweep.train.lr[1]:") and "finite" in p for p in found)
    assert len(found) == 3, found


def test_memory_bound_is_a_lower_bound_and_says_the_machine_limit(tmp_path):
    from bnexp.config import RunConfig

    small = RunConfig.model_validate({"model": {"hidden": [100, 100]}})
    # digits: 64 inputs; (64*100+100) + (100*100+100) + (100*1+1) parameters, x2 (grad), plain SGD
    params = 64 * 100 + 100 + 100 * 100 + 100 + 100 + 1
    assert memory_lower_bound(small) == 4 * (params * 2 + 4096 * 100)
    line = problems(write(tmp_path, "model: {hidden: [100000000]}\n"))[0]
    assert f"this machine's {physical_memory() / 2**30:,.1f} GiB" in line, line

"""Reading a results folder: summary.csv, the per-run CSVs and a run's config.

Run ids are read as strings everywhere: an id like `0353662917` or `4980e71349` is a short hex
hash, and read as a number it loses its leading zero or becomes 4.98e+74, so the run's folder
is never found. A damaged file is one BnexpError line naming it, never a traceback.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import yaml

from bnexp.errors import BnexpError
from bnexp.results import CONFIG, ResultsFolder
from bnexp.results.folder import CELL_RULE

from .cells import cell_keys

REQUIRED = ("run_id", "norm", "seed", "batch_size")
STRING_COLUMNS = {"run_id": str}  # never numbers: see the module docstring


def read_csv(path: Path, what: str, **options) -> pd.DataFrame:
    """A CSV written whole by bnexp (header, one record per line, a final newline).

    A file cut short (no final newline, or a record with fewer fields than the header) or one
    that is empty, not UTF-8 or not CSV raises BnexpError naming the file and what was expected.
    """
    expected = f"expected the {what} written by `bnexp run`"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BnexpError(f"{path}: not UTF-8 text at byte {e.start} ({expected})") from None
    except OSError as e:
        raise BnexpError(f"{path}: cannot read: {e.strerror} ({expected})") from None
    if not text.strip():
        raise BnexpError(f"{path}: empty file ({expected})") from None
    if not text.endswith("\n"):
        raise BnexpError(
            f"{path}: the last line is cut short: the file is truncated ({expected})"
        ) from None
    rows = list(csv.reader(io.StringIO(text)))
    width = len(rows[0])
    for line, row in enumerate(rows[1:], start=2):
        if row and len(row) != width:
            raise BnexpError(
                f"{path}:{line}: {len(row)} field(s), the header has {width}: the file is "
                f"truncated or damaged ({expected})"
            )
    try:
        return pd.read_csv(io.StringIO(text), **(options or {"dtype": STRING_COLUMNS}))
    except (pd.errors.ParserError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BnexpError(f"{path}: not a readable CSV: {first} ({expected})") from None


def load_summary(results_dir: Path) -> pd.DataFrame:
    """summary.csv's complete runs; BnexpError when the folder is not a results folder."""
    path = ResultsFolder(results_dir).summary_csv
    if not path.exists():
        raise BnexpError(
            f"{results_dir}: no {path.name} (expected a results folder written by `bnexp run`)"
        )
    df = read_csv(path, path.name, **CELL_RULE)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise BnexpError(
            f"{path}: missing column(s) {', '.join(missing)} "
            "(expected the summary.csv written by `bnexp run`)"
        )
    if "status" in df.columns:
        df = df[df["status"].fillna("complete") == "complete"]
    if "diverged" in df.columns:
        df["diverged"] = df["diverged"].astype(str).str.lower().isin(["true", "1"])
    else:
        df["diverged"] = False
    return df.reset_index(drop=True)


def run_csvs(results_dir: Path, df: pd.DataFrame, name: str) -> pd.DataFrame:
    """runs/<id>/<name> of every run in df, stacked, with run_id, norm, seed and the cell keys.

    A column the file already has keeps the file's meaning (bn_noise.csv's batch_size is the
    measured mini-batch size, not the run's training batch size). Runs without the file (or
    with an empty one: nothing was measured) are skipped.
    """
    keep = ["run_id", "norm", "seed", *cell_keys(df)]
    frames = []
    for _, row in df.iterrows():
        path = ResultsFolder(results_dir).run_file(row["run_id"], name)
        if path.exists() and path.stat().st_size:
            f = read_csv(path, name)
            for k in keep:
                if k not in f.columns:
                    f[k] = row[k]
            frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _read_config(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BnexpError(f"{path}: not a readable YAML file: {first}") from None


def run_config(results_dir: Path, df: pd.DataFrame) -> dict:
    """The resolved config.yaml of the first run that has one ({} if none does)."""
    for rid in df["run_id"]:
        path = ResultsFolder(results_dir).run_file(rid, CONFIG)
        if path.exists():
            return _read_config(path)
    return {}


def run_targets(results_dir: Path, df: pd.DataFrame) -> dict[str, dict | None]:
    """run_id -> that run's measure.target from its config.yaml (None: no target, no config)."""
    out: dict[str, dict | None] = {}
    for rid in df["run_id"]:
        path = ResultsFolder(results_dir).run_file(rid, CONFIG)
        target = (_read_config(path).get("measure") or {}).get("target") if path.exists() else None
        out[str(rid)] = target if isinstance(target, dict) and "metric" in target else None
    return out

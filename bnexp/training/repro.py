"""`bnexp repro`: rerun one recorded run from its config.yaml and compare it with the record.

metrics.csv is compared byte for byte (then value by value, to say what differs) and
summary.json field by field apart from how the run went (`RunSummary.HOW_IT_WENT`: times,
device, memory). The recorded run is evidence: nothing here writes into the results folder,
and a rerun folder (`keep`) that would is refused before anything is trained.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from bnexp.config import RunConfig
from bnexp.config import run_id as compute_run_id
from bnexp.config.model import factory_parts
from bnexp.errors import BnexpError
from bnexp.results import CONFIG, METRICS, SUMMARY, ResultsFolder, RunSummary
from bnexp.training.train import train_run

# a run id is a short hex hash (bnexp.config.run_id); a prefix of one is letters and digits only,
# so it can name neither a path nor a glob pattern
_ID_PATTERN = re.compile(r"[0-9A-Za-z]+")


@dataclass
class Reproduction:
    run_id: str
    run_dir: Path  # the recorded run
    device: str  # where the rerun trained
    rows: int  # metrics.csv rows of the recorded run
    diffs: list[str]  # one line per difference (recorded vs rerun); [] = reproduced
    id_note: str | None = None  # config.yaml no longer hashes to the folder's name


def find_run(results: Path, run_id: str) -> Path:
    """The folder results/runs/<id> of the one recorded run whose id is, or starts with, run_id."""
    runs = ResultsFolder(results).runs
    if not _ID_PATTERN.fullmatch(run_id):
        raise BnexpError(
            f"run id {run_id!r}: expected a run id or a prefix of one (letters and digits, "
            f"as in {results}/plan.csv), not a path or pattern"
        )
    names = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    matches = [n for n in names if n.startswith(run_id)]
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs ({', '.join(matches[:5])})"
        raise BnexpError(
            f"{runs}/{run_id}: {found} with that id "
            "(expected one run id or unique prefix from plan.csv)"
        )
    return runs / matches[0]


def check_keep(results: Path, keep: Path) -> None:
    """Refuse a rerun folder that could overwrite evidence: inside the results folder (the
    recorded run's own folder included), or an existing file or non-empty folder (a leftover
    checkpoint.pt there would even be resumed instead of rerun)."""
    where = keep.resolve()
    home = Path(results).resolve()
    if where == home or home in where.parents:
        raise BnexpError(
            f"--keep {keep}: inside the results folder {results}; repro never writes over the "
            "recorded runs (expected a new folder outside it)"
        )
    if where.exists() and (not where.is_dir() or any(where.iterdir())):
        what = "a file" if not where.is_dir() else "a folder that is not empty"
        raise BnexpError(f"--keep {keep}: {what} (expected a new or empty folder)")


def read_recorded(run_dir: Path) -> tuple[RunConfig, dict]:
    """The recorded run's config and summary.json; BnexpError (one line) for anything that is
    not a complete run with readable files."""
    try:
        recorded = json.loads((run_dir / SUMMARY).read_text())
    except FileNotFoundError:
        recorded = None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BnexpError(f"{run_dir / SUMMARY}: unreadable ({type(e).__name__}: {e})") from None
    status = recorded.get("status") if isinstance(recorded, dict) else None
    if status != "complete":
        found = "no summary.json" if recorded is None else f"status: {status}"
        raise BnexpError(
            f"{run_dir}: not a complete run ({found}); finish it with `bnexp run` first"
        )
    if not (run_dir / METRICS).is_file():
        raise BnexpError(
            f"{run_dir / METRICS}: missing, so there is nothing to compare a rerun with "
            "(rerun the sweep with `bnexp run ... --force` to record it again)"
        )
    path = run_dir / CONFIG
    try:
        raw = yaml.safe_load(path.read_text())
        return RunConfig.model_validate(raw), recorded
    except FileNotFoundError:
        raise BnexpError(f"{path}: missing (expected the run's resolved config)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BnexpError(f"{path}: not readable YAML ({first})") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(k) for k in err["loc"]) or "(top level)"
        raise BnexpError(
            f"{path}: not a valid run config ({e.error_count()} error(s); first: {where}: "
            f"{err['msg']})"
        ) from None


def compare_metrics(a: Path, b: Path) -> list[str]:
    """Differences between two metrics.csv files, one line each; [] when the bytes are equal."""
    if a.read_bytes() == b.read_bytes():
        return []
    fa, fb = pd.read_csv(a), pd.read_csv(b)
    if list(fa.columns) != list(fb.columns) or len(fa) != len(fb):
        return [
            f"metrics.csv: shape differs: {len(fa)} rows {list(fa.columns)} "
            f"vs {len(fb)} rows {list(fb.columns)}"
        ]
    lines = []
    for col in fa.columns:
        x, y = fa[col].astype(float), fb[col].astype(float)
        differ = ~((x == y) | (x.isna() & y.isna()))
        if differ.any():
            first = int(differ.to_numpy().argmax())
            lines.append(
                f"metrics.csv: {col}: {int(differ.sum())} of {len(x)} rows differ, "
                f"max |diff| {(x - y).abs().max():.3g}, first at step "
                f"{fa['step'].iloc[first]}: {x.iloc[first]!r} vs {y.iloc[first]!r}"
            )
    return lines or ["metrics.csv: bytes differ (formatting only; every value is equal)"]


def check_trusted(cfg: RunConfig, config_file: Path, trust_code: bool) -> None:
    """The trust boundary (docs/trust.md): a results folder may come from anyone, so the code its
    config.yaml names (model.factory) is imported only when the user says they trust it."""
    if cfg.model.factory is None or trust_code:
        return
    target, name, is_file = factory_parts(cfg.model.factory)
    what = f"file {target}" if is_file else f"module {target}"
    raise BnexpError(
        f"{config_file}: model.factory names Python code ({what}, function {name}) that the "
        "rerun would import and run; pass --trust-code if you trust whoever wrote this folder"
    )


def reproduce(
    results: Path,
    run_id: str,
    keep: Path | None = None,
    on_start: Callable[[str, RunConfig, str | None], None] | None = None,
    trust_code: bool = False,
) -> Reproduction:
    """Rerun one complete run (its id or a unique prefix) in a scratch folder (removed after) or
    in `keep`, and compare. Every check on the input happens before training starts, then
    `on_start(run_id, config, note)` (note: config.yaml no longer hashes to the run's id).
    A run whose config names a model.factory is refused unless `trust_code`."""
    results = Path(results)
    run_dir = find_run(results, run_id)
    cfg, recorded = read_recorded(run_dir)
    check_trusted(cfg, run_dir / CONFIG, trust_code)
    if keep is not None:
        check_keep(results, keep)
    rehashed = compute_run_id(cfg)
    note = (
        f"config.yaml hashes to {rehashed}, not {run_dir.name} (the schema's defaults changed?)"
        if rehashed != run_dir.name
        else None
    )
    scratch = (
        Path(tempfile.mkdtemp(prefix=f"bnexp-repro-{run_dir.name}-")) if keep is None else keep
    )
    try:
        if on_start:
            on_start(run_dir.name, cfg, note)
        again = train_run(cfg, scratch, params=recorded.get("params", {}))
        diffs = compare_metrics(run_dir / METRICS, scratch / METRICS)
        redone = json.loads((scratch / SUMMARY).read_text())
        for key in sorted(set(recorded) | set(redone)):
            if key not in RunSummary.HOW_IT_WENT and recorded.get(key) != redone.get(key):
                diffs.append(f"summary.json: {key}: {recorded.get(key)!r} vs {redone.get(key)!r}")
    finally:
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    rows = len((run_dir / METRICS).read_text().splitlines()) - 1
    return Reproduction(run_dir.name, run_dir, again.device, rows, diffs, note)

"""The results folder of an experiment, before and around a sweep: usable, owned by this
experiment, and writable; a write that fails for lack of space or permission stops the sweep.

- `prepare_results_dir`: OUT/<name>/ exists and accepts a file, else one line (a file, a
  dangling or looping symlink, a read-only folder, a name too long, a full disk).
- `write_plan`: experiment.yaml and plan.csv. A folder already holding runs of a *different*
  plan of the same name is refused, never silently replaced: rerunning the same file, or one
  whose sweep only adds values, resumes; `--extend` adds this plan's runs to what is there
  (plan.csv then lists both, and experiment.yaml keeps the earlier files after this one).
- `is_storage_error`: the OSErrors that mean "the results folder cannot be written" (full disk,
  quota, read-only, permission): the sweep stops cleanly instead of recording them as failures.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from bnexp.config import PlannedRun
from bnexp.errors import BnexpError
from bnexp.results import ResultsFolder
from bnexp.sweep.store import STORAGE_ERRNOS


class StorageError(BnexpError):
    """The results folder cannot be written; finished runs are kept, a rerun resumes."""


def is_storage_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in STORAGE_ERRNOS


def storage_error(results_dir: Path, e: OSError, what: str = "") -> StorageError:
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return StorageError(
        f"{results_dir}: cannot write{where}: {e.strerror or e}{what}. Finished runs are kept; "
        "free space (or fix permissions) and rerun the same command to resume"
    )


def _why_not_a_folder(path: Path) -> str:
    """Which part of `path` is in the way, and how (a file, a dangling or looping link)."""
    for part in [path, *path.parents]:
        if part.is_symlink():
            try:
                part.resolve(strict=True)
            except RuntimeError:
                return f"{part} is a symbolic link loop"
            except OSError as e:
                if e.errno == errno.ELOOP:
                    return f"{part} is a symbolic link loop"
                return f"{part} is a symbolic link to {os.readlink(part)}, which does not exist"
            if not part.is_dir():
                return f"{part} is a symbolic link to a file, not a folder"
        elif part.exists() and not part.is_dir():
            return f"{part} is a file, not a folder"
    return "a part of it is not a folder"


def prepare_results_dir(results_dir: Path) -> None:
    """Create OUT/<name>/ and check that a file can be created in it; BnexpError otherwise."""
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BnexpError(
            f"{results_dir}: cannot be the results folder: {_why_not_a_folder(results_dir)} "
            "(expected --out to be a folder, or a path that can be created)"
        ) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            reason = _why_not_a_folder(results_dir)
        elif e.errno == errno.ENAMETOOLONG:
            reason = "the path or one of its names is too long for the file system"
        else:
            reason = e.strerror or str(e)
        raise BnexpError(f"{results_dir}: cannot be the results folder: {reason}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=results_dir, prefix=".bnexp-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BnexpError(
            f"{results_dir}: cannot write in the results folder: {e.strerror or e} "
            "(expected a writable folder; choose another with --out)"
        ) from None


def plan_frame(plan: list[PlannedRun]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"run_id": r.run_id, **r.params} for r in plan],
        columns=["run_id", *(plan[0].params if plan else [])],
    )


def _recorded_plan(results_dir: Path) -> pd.DataFrame | None:
    """The plan already in the folder: plan.csv, or where it is damaged or gone, the run folders."""
    folder = ResultsFolder(results_dir)
    if folder.has_plan():
        try:
            return folder.read_plan()
        except BnexpError:
            pass
    runs = folder.run_ids_on_disk()
    return pd.DataFrame({"run_id": runs}) if runs else None


def check_plan(
    results_dir: Path, plan: list[PlannedRun], source: str, extend: bool = False
) -> pd.DataFrame | None:
    """The plan already in the folder (None: none), after checking that `plan` may be written
    there: BnexpError when the folder holds runs of another plan and `extend` is not set.
    Writes nothing (`bnexp run --dry-run` asks it too)."""
    recorded = _recorded_plan(results_dir) if results_dir.is_dir() else None
    if recorded is None or extend:
        return recorded
    ids = {r.run_id for r in plan}
    missing = [r for r in recorded["run_id"] if r not in ids]
    if missing:
        raise BnexpError(
            f"{results_dir} already holds experiment '{results_dir.name}' with {len(missing)} "
            f"run(s) this plan does not include (e.g. {missing[0]}; see its experiment.yaml), so "
            f"{source} is a different experiment of the same name. Refusing to replace its "
            "plan: choose another name (--set name=NEW) or --out, or pass --extend to add "
            "these runs to it"
        )
    return recorded


def write_plan(
    results_dir: Path,
    raw: dict,
    source: str,
    overrides: list[str],
    plan: list[PlannedRun],
    extend: bool = False,
) -> pd.DataFrame:
    """Write experiment.yaml and plan.csv; returns the plan the folder now holds (this plan, or
    with `extend` the union with the recorded one). BnexpError when the folder holds runs of
    another plan and `extend` is not set (`check_plan`)."""
    recorded = check_plan(results_dir, plan, source, extend)
    new = plan_frame(plan)
    header = f"# bnexp experiment, from {source}" + "".join(f"\n#   --set {o}" for o in overrides)
    text = header + "\n" + yaml.safe_dump(raw, sort_keys=False)
    folder = ResultsFolder(results_dir)
    if recorded is not None:
        missing = [r for r in recorded["run_id"] if r not in set(new["run_id"])]
        if missing:
            new = pd.concat([recorded[recorded["run_id"].isin(missing)], new], ignore_index=True)
            earlier = folder.read_experiment()
            if earlier is not None:
                text += "---\n" + earlier
    folder.write_plan(new, text)
    return new

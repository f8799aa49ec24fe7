"""checkpoint.pt: all the resumable state of one run, in a file that proves whose it is.

Layout: one JSON header line, then the torch.save bytes of the state dict.

    {"format": "bnexp-checkpoint/1", "run_id": "<id>", "sha256": "<hex of the state bytes>",
     "bytes": <length of the state bytes>}\\n
    <state: model, optimizer, data-order generator, global RNGs, progress>

A checkpoint is used only when the header names this run's id and the state's length and
SHA-256 match: a checkpoint copied from another run, a bit flipped on disk, a truncated or
older-format file is discarded with a warning and the run starts over (a checkpoint only
saves time; using a wrong one would silently record another run's, or garbage, results).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bnexp.io import atomic_write_bytes

log = logging.getLogger("bnexp")

FORMAT = "bnexp-checkpoint/1"


def save_checkpoint(
    path: Path,
    run_id: str,
    model: nn.Module,
    opt: Any,  # torch.optim.Optimizer or bnexp.training.sgd.SGD (state_dict, load_state_dict)
    order: torch.Generator,
    progress: dict[str, Any],
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "order": order.get_state(),  # the data-order generator, between epochs
        "torch_rng": torch.get_rng_state(),  # global RNGs, for anything random inside the model
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "progress": progress,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    blob = buf.getvalue()
    header = {
        "format": FORMAT,
        "run_id": run_id,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
    }
    # Not fsynced: written every few epochs, and one lost to a power cut is only unreadable or
    # old, which load_checkpoint handles (the run starts over or resumes from an earlier epoch).
    atomic_write_bytes(path, json.dumps(header).encode() + b"\n" + blob, durable=False)


class CheckpointRejected(Exception):
    """The file is not an intact checkpoint of this run (the message says why)."""


def _verified_state(raw: bytes, run_id: str) -> bytes:
    head, sep, blob = raw.partition(b"\n")
    try:
        header = json.loads(head) if sep else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointRejected(f"not a {FORMAT} file (damaged, or written by an older bnexp)")
    if header.get("run_id") != run_id:
        raise CheckpointRejected(f"it belongs to run {header.get('run_id')!r}, not {run_id}")
    if header.get("bytes") != len(blob) or header.get("sha256") != hashlib.sha256(blob).hexdigest():
        raise CheckpointRejected("its content does not match its SHA-256 (damaged or truncated)")
    return blob


def load_checkpoint(
    path: Path,
    run_id: str,
    model: nn.Module,
    opt: Any,  # torch.optim.Optimizer or bnexp.training.sgd.SGD (state_dict, load_state_dict)
    order: torch.Generator,
    device: torch.device,
) -> dict[str, Any] | None:
    """Restore model, optimizer and RNGs in place and return the saved progress; None (start
    over, with a warning) if the file is not an intact checkpoint of `run_id`.

    The model and optimizer are only touched once the file has passed its checks and loaded,
    so a rejected checkpoint leaves them as freshly initialised.
    """
    try:
        blob = _verified_state(path.read_bytes(), run_id)
        state = torch.load(io.BytesIO(blob), map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        order.set_state(state["order"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        cuda = state["cuda_rng"]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        return dict(state["progress"])
    except CheckpointRejected as e:
        log.warning("discarding checkpoint %s: %s; run %s starts over", path, e, run_id)
    except Exception as e:  # noqa: BLE001 - a checkpoint is an optimization; never fatal
        log.warning(
            "discarding checkpoint %s (%s: %s); run %s starts over",
            path,
            type(e).__name__,
            e,
            run_id,
        )
    return None

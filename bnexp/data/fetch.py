"""`data.download: true`: torchvision's downloaders, with their failures as one-line errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from bnexp.errors import DataError

log = logging.getLogger("bnexp")


def fetch(dataset: str, source: str, root: Path, get: Callable[[], object]) -> None:
    """Run `get` (a torchvision download of `dataset` from `source` into `root`)."""
    log.info("%s: downloading %s into %s", dataset, source, root)
    try:
        get()
    except Exception as e:  # URLError, HTTP errors, a failed MD5 check of the archive, a full disk
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"data.download: could not download {dataset} from {source} into {root} ({reason}); "
            "is the machine online? Otherwise download the files elsewhere and put them into "
            "data.root"
        ) from None

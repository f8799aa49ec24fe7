"""Where a run computes and what it costs: the device, and peak memory."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

from bnexp.errors import BnexpError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BnexpError(
            "train.device: cuda was asked for but torch sees no CUDA device (use auto or cpu)"
        )
    return torch.device(name)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far, MiB: the process's peak RSS on the CPU, allocated memory on CUDA.

    Linux: VmHWM of /proc/self/status, because ru_maxrss carries over a parent's peak into a
    child started by fork + exec (a subprocess of a 1.4 GB parent starts at 1.4 GB).
    """
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 2**10, 1)  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)

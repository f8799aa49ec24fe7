"""The C kernel behind our BatchNorm on CPU tensors: built on first use, cached, loaded.

Why a kernel: on a (64, 20) or (256, 100) batch the layer's time is the fixed cost of each torch
call, not arithmetic. Written as torch ops, our forward and backward are about 25 calls against
torch's one fused kernel per direction, which made a training step up to 1.3x slower than with
torch's BatchNorm (`bnexp bench bn`). `bnexp/nn/kernels/batchnorm.c` computes the same formulas
(BatchNormFunction's docstring) in one C call per direction. It is our code, not torch's.
Which inputs it takes (small ones, or any on one torch thread): bnexp.nn.norm._kernel_layout.

Build: the system C compiler ($CC, else `cc`) compiles it once per source, compiler and CPU into
$BNEXP_CACHE_DIR (default: $XDG_CACHE_HOME/bnexp, else ~/.cache/bnexp), in well under a second;
later processes load the cached library. Several processes may build at once: each writes its
own file and renames it into place, which is atomic.

When there is no compiler, the build fails, or BNEXP_BN_KERNEL=off, `load()` returns None after
one warning (none when turned off) and the layer uses its torch-ops path: the same numbers up to
rounding, slower on small inputs. CUDA tensors always take the torch-ops path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from bnexp.io import cache_dir

SOURCES = (
    Path(__file__).parent / "kernels" / "batchnorm.c",
    Path(__file__).parent / "kernels" / "batchnorm_impl.h",
)
FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared")
# Tried first: this CPU's vector instructions (1.3-2x faster loops than the baseline ISA). No
# fused multiply-adds, so every CPU rounds alike: the kernel's sums run in a fixed order, and its
# results are the same bits whichever instruction set compiled it. Compilers that refuse
# -march=native (some ARM ones) get FLAGS alone.
NATIVE = ("-march=native", "-ffp-contract=off")
OFF = ("0", "off", "false", "no")


def compiler() -> str:
    return os.environ.get("CC") or "cc"


def cpu_id() -> str:
    """What -march=native depends on: the CPU's model and feature flags (Linux), else what
    platform reports. Part of the cache key, so machines sharing a cache dir build their own."""
    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0]  # the first processor's block
        info = {
            k.strip(): v.strip()
            for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)
        }
        return " ".join(info.get(k, "") for k in ("model name", "flags", "Features", "CPU part"))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def build() -> Path:
    """The compiled library's path, compiling it first if this source, compiler and CPU have none
    yet. Raises OSError or subprocess.CalledProcessError (with the compiler's message) on
    failure."""
    cc = compiler()
    key = hashlib.sha256()
    for part in [
        *(p.read_bytes() for p in SOURCES),
        cc.encode(),
        " ".join(FLAGS + NATIVE).encode(),
        platform.machine().encode(),
        cpu_id().encode(),
    ]:
        key.update(part + b"\0")
    out = cache_dir() / f"batchnorm-{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        for flags in (FLAGS + NATIVE, FLAGS):
            cmd = [cc, *flags, "-o", str(tmp), str(SOURCES[0]), "-lm"]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                break
        done.check_returncode()  # the portable flags failed too: raise with the compiler's message
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


@dataclass(frozen=True)
class Kernel:
    """The loaded library's entry points by dtype: forward[dtype], backward[dtype] (ctypes
    functions)."""

    path: Path
    forward: dict
    backward: dict


def _bind(lib: ctypes.CDLL, path: Path) -> Kernel:
    ptr, long, int_, double = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_double
    forward, backward = {}, {}
    for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
        f = getattr(lib, f"bn_forward_{suffix}")
        # x y outer C inner w b rm rv batch_stats factor eps stats
        f.argtypes = [ptr, ptr, long, long, long, ptr, ptr, ptr, ptr, int_, double, double, ptr]
        f.restype = int_
        g = getattr(lib, f"bn_backward_{suffix}")
        # dy x dx outer C inner w stats batch_stats dw db
        g.argtypes = [ptr, ptr, ptr, long, long, long, ptr, ptr, int_, ptr, ptr]
        g.restype = int_
        forward[dtype], backward[dtype] = f, g
    return Kernel(path, forward, backward)


@functools.cache
def load() -> Kernel | None:
    """The kernel, or None (torch-ops path): turned off by BNEXP_BN_KERNEL, or it could not be
    built."""
    if os.environ.get("BNEXP_BN_KERNEL", "").strip().lower() in OFF:
        return None
    try:
        path = build()
        return _bind(ctypes.CDLL(str(path)), path)
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        first = next((line for line in str(detail).splitlines() if line.strip()), type(e).__name__)
        warnings.warn(
            f"bnexp: could not build the BatchNorm C kernel with {compiler()!r} ({first.strip()}); "
            "our BatchNorm uses its torch-ops path instead (same results up to rounding, slower "
            "on small inputs). Set CC to a C compiler or BNEXP_CACHE_DIR to a writable folder, "
            "or BNEXP_BN_KERNEL=off "
            "to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def check(status: int) -> None:
    if status:
        raise MemoryError("bnexp BatchNorm kernel: out of memory for its per-channel scratch")

"""`convert_norm`: swap the BatchNorm layers of any nn.Module, as torch's
`nn.SyncBatchNorm.convert_sync_batchnorm` does (walk the children, copy parameters and buffers,
keep the user's model and its other layers as they are)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bnexp.nn.norm import NORMS, BatchNorm1d, BatchNorm2d

# the layers convert_norm swaps: torch's and ours, 1d (N, C[, L]) and 2d (N, C, H, W)
_BN_1D = (nn.BatchNorm1d, BatchNorm1d)
_BN_2D = (nn.BatchNorm2d, BatchNorm2d)


def _is_swapped(m: nn.Module) -> bool:
    return isinstance(m, _BN_1D + _BN_2D) and not isinstance(m, nn.modules.lazy.LazyModuleMixin)


def convert_norm(module: nn.Module, norm: str, **controls: Any) -> nn.Module:
    """`module` with every BatchNorm1d/2d (torch's or bnexp's) replaced by `norm`'s layer:
    "none" -> nn.Identity, "torch" -> torch.nn.BatchNorm1d/2d, "custom" -> bnexp.nn's, built
    with `controls` (ghost_batch_size, stats, noise, eval_stats; see make_norm).

    The new layer keeps the old one's num_features, eps, momentum, affine, track_running_stats,
    device, dtype, train/eval mode, γ, β, running estimates and requires_grad. Like
    convert_sync_batchnorm it converts in place where it can and returns the module: call it
    as `model = convert_norm(model, ...)` (a BN layer passed alone comes back as a new layer).
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if controls and norm != "custom":
        raise ValueError(f"the BN controls {sorted(controls)} need norm 'custom', got {norm!r}")
    if _is_swapped(module):
        return _swap(module, norm, controls)
    for name, child in module.named_children():
        new = convert_norm(child, norm, **controls)
        if new is not child:
            module.add_module(name, new)
    return module


@torch.no_grad()
def _swap(old: nn.Module, norm: str, controls: dict[str, Any]) -> nn.Module:
    if norm == "none":
        return nn.Identity()
    spatial = isinstance(old, _BN_2D)
    switches = (old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats)
    if norm == "torch":
        if old.affine and old.bias is None:
            raise ValueError(f"{old}: torch's BatchNorm has no affine layer without β (bias)")
        new = (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(*switches)
    else:
        bias = {"bias": old.bias is not None} if old.affine else {}
        new = (BatchNorm2d if spatial else BatchNorm1d)(*switches, **bias, **controls)
    ref = next(iter([*old.parameters(), *old.buffers()]), None)
    if ref is not None:  # the old layer's device and floating dtype
        new.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
    for name in ("weight", "bias"):
        src, dst = getattr(old, name, None), getattr(new, name, None)
        if src is not None and dst is not None:
            dst.copy_(src)
            dst.requires_grad_(src.requires_grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        src, dst = getattr(old, name, None), getattr(new, name, None)
        if src is not None and dst is not None:
            dst.copy_(src)
    return new.train(old.training)

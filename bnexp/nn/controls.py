"""The controls that separate BN's two effects, and the recalibration of running estimates.

- `NoisyBN`: Santurkar et al. (2018)'s noisy BN, a per-channel random scale and shift;
- `ghost_chunks`: the virtual sub-batches of ghost BN (Hoffer et al. 2017);
- `recalibrate`: running estimates recomputed over a whole data set (eval_stats="recalibrate"),
  for our layers and torch's.
The layer (norm.py) applies them; `stats="population"` lives in the layer's forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bnexp.nn.batchnorm_fast import reduce_dims


@dataclass(frozen=True)
class NoisyBN:
    """Noisy BN (Santurkar et al. 2018): output → output·(1 + scale_std·ε₁) + mean_std·ε₂.

    ε₁, ε₂ ~ N(0, 1), one pair per channel, redrawn every `every_steps` training forwards.
    """

    mean_std: float = 0.0
    scale_std: float = 0.0
    every_steps: int = 1


Stats = Literal["batch", "population"]
EvalStats = Literal["running", "batch", "recalibrate"]


def ghost_chunks(n: int, ghost_batch_size: int) -> list[int]:
    """Sizes of the virtual sub-batches: pieces of ghost_batch_size, in order; a remainder
    smaller than 2 (no variance) is folded into the previous piece. E.g. (10, 4) -> [4, 4, 2],
    (9, 4) -> [4, 5]."""
    sizes = [ghost_batch_size] * (n // ghost_batch_size)
    rest = n - sum(sizes)
    if rest >= 2 or not sizes:
        sizes.append(rest)
    elif rest:
        sizes[-1] += rest
    return sizes


# --------------------------------------------------------------------------- recalibration


def _is_bn(m: nn.Module) -> bool:
    """torch's BN layers and ours (norm._BatchNorm sets _bnexp_batchnorm), with running stats."""
    is_bn = isinstance(m, nn.modules.batchnorm._BatchNorm) or getattr(m, "_bnexp_batchnorm", False)
    return is_bn and m.track_running_stats


class _StopForward(Exception):
    """Raised by a pooling hook: the layers after the one being recalibrated need not run."""


class _MomentSums:
    """Forward pre-hook pooling a layer's input statistics over batches: per batch (count,
    mean, biased var) in the input's dtype, merged exactly in float64 (Chan et al.'s update)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, None, None  # count, mean (C,), Σ (z − mean)² (C,)

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        z = inputs[0]
        dims, nb = reduce_dims(z), z.numel() // z.shape[1]
        mean = z.mean(dims, keepdim=True)
        var = (z - mean).square_().mean(dims).double()  # two passes: no cancellation
        mean = mean.view(-1).double()
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mean, var * nb
        else:
            n = self.n + nb
            delta = mean - self.mean
            self.m2 = self.m2 + var * nb + delta * delta * (self.n * nb / n)
            self.mean = self.mean + delta * (nb / n)
            self.n = n
        raise _StopForward


@torch.no_grad()
def recalibrate(
    model: nn.Module, x: Tensor, batch_size: int, prepare: Callable[[Tensor], Tensor] | None = None
) -> None:
    """Set every BN layer's running estimates to the statistics of its inputs over all of `x`.

    The inputs a layer sees in eval mode depend on the layers before it, so the layers are done
    one at a time in the order the forward calls them: pass l runs all of `x` in eval mode (earlier
    layers already recalibrated) up to layer l and pools its inputs exactly, giving the full-set
    mean and unbiased variance (the running estimates' convention). num_batches_tracked is left
    alone. Works on torch's BN layers too. `prepare` maps a slice of x to the model's input (as
    Dataset.prepare does).
    """
    prepare = prepare or (lambda t: t)
    layers = [m for m in model.modules() if _is_bn(m)]
    if not layers or len(x) == 0:
        return
    was_training = model.training
    model.eval()
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_pre_hook(lambda m, _: order.append(m) if m not in order else None)
        for m in layers
    ]
    try:
        model(prepare(x[:batch_size]))
    finally:
        for h in hooks:
            h.remove()
    try:
        for layer in order:
            pool = _MomentSums()
            hook = layer.register_forward_pre_hook(pool)
            try:
                for i in range(0, len(x), batch_size):
                    try:
                        model(prepare(x[i : i + batch_size]))
                    except _StopForward:
                        pass
            finally:
                hook.remove()
            layer.running_mean.copy_(pool.mean)
            layer.running_var.copy_(pool.m2 / max(pool.n - 1, 1))
    finally:
        model.train(was_training)

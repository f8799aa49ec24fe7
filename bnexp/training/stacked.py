"""S copies of one network as one batched model: the seeds of a cell trained together.

`stack(models)` returns an object with
- `params`, `buffers`: name -> stacked tensor (S, ...), from torch.func.stack_module_state: the
  parameters are ordinary leaf tensors (what the optimizer steps), seed s's slice is its own
  network's tensor;
- `base`: the architecture (its modules' settings and train/eval mode; no weights of its own);
- `__call__(x, shared_input)`: the S networks' outputs (S, B, ...) for x (S, B, ...), each seed
  its own batch, or, with `shared_input`, for one batch x (B, ...) that every seed sees.

Two forms, the same numbers (within rounding, tests/training/test_vectorize*.py):
- `Vmapped`: any network, called through torch.func.vmap (functional_call per seed);
- `StackedMLP`: an MLP `Net` (Linear blocks, BN or none) computed directly, without vmap: each
  linear layer is one batched matmul (bmm) over the seeds, each BN layer is its own module called
  once on the seeds folded into the channels, (S, B, F) -> (B, S·F), with the stacked parameters
  and running estimates viewed as (S·F,) in its place. That is what vmap's batching rule for BN
  does too; done by hand it skips vmap's per-op overhead, which dominates small MLPs (measured,
  8 seeds of the digits MLP with BN, 1 thread: a training step about 2x faster than under vmap).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from bnexp.nn.models import ACTIVATIONS, Net
from bnexp.nn.norm import BatchNorm1d

_ACTS = tuple(ACTIVATIONS.values())
_NORMS = (nn.BatchNorm1d, BatchNorm1d)  # per-channel layers: the seeds fold into the channels


class _Stack:
    """What both forms keep: the stacked state and the architecture."""

    def __init__(self, models: list[nn.Module]):
        self.params, self.buffers = stack_module_state(models)  # name -> (S, ...)
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture only


class Vmapped(_Stack):
    """Any architecture: functional_call on the stacked state, through vmap."""

    def __init__(self, models: list[nn.Module]):
        super().__init__(models)

        def one(params: dict, buffers: dict, x: Tensor) -> Tensor:
            return functional_call(self.base, (params, buffers), (x,))

        self.train_fn = vmap(one, in_dims=(0, 0, 0))  # x: (S, B, ...), every seed its own batch
        self.eval_fn = vmap(one, in_dims=(0, 0, None))  # x: (B, ...), the same data for all

    def __call__(self, x: Tensor, shared_input: bool = False) -> Tensor:
        fn = self.eval_fn if shared_input else self.train_fn
        return fn(self.params, self.buffers, x)


class StackedMLP(_Stack):
    """An MLP `Net` (Flatten, blocks of Linear -> norm -> activation, Linear head) for S seeds
    as batched matmuls; `fits(model)` says whether a model has that shape."""

    def __init__(self, models: list[nn.Module]):
        if not self.fits(models[0]):
            raise ValueError("StackedMLP takes an MLP Net of Linear blocks (see fits)")
        super().__init__(models)

    @staticmethod
    def fits(model: nn.Module) -> bool:
        if not isinstance(model, Net) or not isinstance(model.stem, nn.Flatten):
            return False
        if not isinstance(model.head, nn.Linear):
            return False
        return all(
            isinstance(b.weight, nn.Linear)
            and isinstance(b.pool, nn.Identity)
            and isinstance(b.act, _ACTS)
            and (isinstance(b.norm, nn.Identity) or _foldable(b.norm))
            for b in model.blocks
        )

    def _linear(self, name: str, h: Tensor) -> Tensor:
        """h (S, B, I) -> (S, B, O) with seed s's weight (O, I) and bias."""
        return _SeedLinear.apply(h, self.params[name + ".weight"], self.params.get(name + ".bias"))

    def _first(self, name: str, x: Tensor) -> Tensor:
        """The first layer on a batch x (B, I) that every seed sees: one matmul against the seeds'
        weights side by side, (B, I) @ (I, S·O), -> (S, B, O)."""
        w = self.params[name + ".weight"]  # (S, O, I)
        s, o, i = w.shape
        b = self.params.get(name + ".bias")
        wt = w.reshape(s * o, i).t()
        z = x @ wt if b is None else torch.addmm(b.reshape(s * o), x, wt)
        return z.view(len(x), s, o).transpose(0, 1)

    def _norm(self, name: str, module: nn.Module, z: Tensor) -> Tensor:
        """BN on z (S, B, F): the module once on (B, S·F), seed s's channel f at s·F + f."""
        s, b, f = z.shape
        folded = z.transpose(0, 1).reshape(b, s * f)
        with _folded_state(module, name, self.params, self.buffers):
            y = module(folded)
        return y.view(b, s, f).transpose(0, 1)

    def _layer(self, name: str, h: Tensor, shared: bool) -> Tensor:
        return self._first(name, h) if shared else self._linear(name, h)

    def __call__(self, x: Tensor, shared_input: bool = False) -> Tensor:
        shared = shared_input  # until the first layer has given each seed its own activations
        h = x.flatten(1) if shared else x.flatten(2)  # (B, I) or (S, B, I)
        for i, block in enumerate(self.base.blocks):
            z = self._layer(f"blocks.{i}.weight", h, shared)
            shared = False
            if isinstance(block.norm, nn.Identity):
                h = block.act(z)
            elif block.norm_first:
                h = block.act(self._norm(f"blocks.{i}.norm", block.norm, z))
            else:
                h = self._norm(f"blocks.{i}.norm", block.norm, block.act(z))
        return self._layer("head", h, shared)


class _SeedLinear(torch.autograd.Function):
    """S linear layers at once, each computed as torch's F.linear computes it on the CPU, in the
    same gemm orientations (so a seed's numbers are those of its own network, bit for bit where
    the gemm kernels are the same):
    forward z = b + h W^T; backward dW = dZ^T h, dh = dZ W, db = Σ_batch dZ.
    Autograd's own backward of bmm(h, W^T) would compute dW^T = h^T dZ instead, an orientation
    the CPU's gemm is slow in (measured, 1 thread, the cat/non-cat first layer 12288 -> 20, 8
    seeds of 64: forward and backward 19 ms, against 12 ms with dZ^T h)."""

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:  # (S,B,I), (S,O,I), (S,O)
        # (ctx in forward, not setup_context: that form binds its arguments through
        # inspect.signature on every call, ~40 us)
        ctx.save_for_backward(h, w)
        ctx.has_bias = b is not None
        wt = w.transpose(1, 2)
        return torch.bmm(h, wt) if b is None else torch.baddbmm(b.unsqueeze(1), h, wt)

    @staticmethod
    def backward(ctx, dz: Tensor):  # dz: (S, B, O)
        h, w = ctx.saved_tensors
        dh = torch.bmm(dz, w) if ctx.needs_input_grad[0] else None
        dw = torch.bmm(dz.transpose(1, 2), h) if ctx.needs_input_grad[1] else None
        db = dz.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dh, dw, db


def _foldable(norm: nn.Module) -> bool:
    """A BN layer that can take the seeds as extra channels: per-channel affine and running
    estimates, and no per-module random stream (our noisy BN draws one per layer)."""
    return (
        isinstance(norm, _NORMS)
        and norm.weight is not None
        and norm.bias is not None
        and norm.track_running_stats
        and getattr(norm, "noise", None) is None
    )


@contextmanager
def _folded_state(
    module: nn.Module, prefix: str, params: dict[str, Tensor], buffers: dict[str, Tensor]
) -> Iterator[None]:
    """The module's weight, bias and running estimates set to the stacked (S, F) tensors viewed
    as (S·F,) while inside; its batch count to seed 0's, copied to every seed afterwards (the
    seeds step together, so their counts are equal)."""
    own_p, own_b = dict(module._parameters), dict(module._buffers)
    count = buffers[prefix + ".num_batches_tracked"]  # (S,)
    try:
        for k in ("weight", "bias"):
            module._parameters[k] = params[f"{prefix}.{k}"].reshape(-1)
        for k in ("running_mean", "running_var"):
            module._buffers[k] = buffers[f"{prefix}.{k}"].view(-1)
        module._buffers["num_batches_tracked"] = count[0]
        yield
    finally:
        module._parameters.update(own_p)
        module._buffers.update(own_b)
        if module.training:
            count[1:] = count[0]


def stack(models: list[nn.Module]) -> Vmapped | StackedMLP:
    """The fastest form for these models (all of one architecture): StackedMLP when it fits."""
    return StackedMLP(models) if StackedMLP.fits(models[0]) else Vmapped(models)

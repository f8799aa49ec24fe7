"""Our batch-norm op: the formulas, their analytic backward, and the one function the layer calls.

`batch_norm(x, weight, bias, running_mean, running_var, batch_stats, factor, eps)` picks one of
three implementations of the same formulas (BatchNormFunction's docstring), by context:

- eager, no torch.func transform (the case training runs in): `BatchNormFunction`, whose
  forward and backward are one call each of our C kernel (bn_kernel.py) on CPU float32/float64
  inputs, torch ops elsewhere. Its backward is differentiable: under `create_graph=True` it is
  computed as torch ops (`composite_backward`), so second derivatives are right.
- under vmap (the innermost torch.func transform): `BatchNormTransformFunction`, the same
  forward with `setup_context` and a vmap rule. The rule folds the vmapped dim into the channels
  ((B, N, C, ...) -> (N, B*C, ...)) and calls the op once, so each of B stacked models gets its
  own statistics and its own running estimates, from the same kernel and summation order as a
  model run alone.
- under the other transforms (grad, jvp, jacrev, hessian, ...): `composite_forward`, torch ops.
- under torch.compile: `composite_forward`, plain torch ops that Dynamo traces without a graph
  break (it never reaches the kernel loader) and Inductor fuses.

Conventions (torch's): per channel over every dim but 1; training normalizes with the biased batch
variance, the running variance takes the unbiased one; running = (1 - f)·running + f·batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bnexp.nn.batchnorm_fast import (
    _SLICE,
    _SMALL,
    BatchNormFunction,
    _kernel_layout,
    _ptr,
    _slices,
    bcast,
    composite_backward,
    kernel_backward,
    kernel_forward,
    reduce_dims,
)

__all__ = [
    "_SLICE",
    "_SMALL",
    "BatchNormFunction",
    "BatchNormTransformFunction",
    "_kernel_layout",
    "_ptr",
    "_slices",
    "batch_norm",
    "batch_norm_reference",
    "composite_backward",
    "composite_forward",
]

_transforms_active = torch._C._are_functorch_transforms_active
_is_compiling = torch.compiler.is_compiling
_peek = torch._C._functorch.peek_interpreter_stack  # the innermost active transform
_VMAP = torch._C._functorch.TransformType.Vmap


def composite_forward(x, weight, bias, running_mean, running_var, batch_stats, factor, eps):
    """(y, mean, invstd) as differentiable torch ops; running estimates updated in place (no
    gradient). mean, invstd: (C,), what y was normalized with."""
    dims = reduce_dims(x)
    if batch_stats or factor is not None:
        var, mean = torch.var_mean(x, dims, correction=0)  # biased
    if factor is not None:
        m = x.numel() // x.shape[1]
        with torch.no_grad():
            new_mean, new_var = mean.detach(), var.detach() * (m / (m - 1))
            if not batch_stats:  # normalize with the estimates as they were before this batch
                mean, var = running_mean.clone(), running_var.clone()
            # r + f·(new − r), lerp's formula; lerp_ has no vmap batching rule
            running_mean.add_(new_mean - running_mean, alpha=factor)
            running_var.add_(new_var - running_var, alpha=factor)
    elif not batch_stats:
        mean, var = running_mean, running_var
    invstd = torch.rsqrt(var + eps)
    a = invstd if weight is None else invstd * weight
    y = (x - bcast(mean, x)) * bcast(a, x)
    if bias is not None:
        y = y + bcast(bias, x)
    return y, mean, invstd


def _wrapped(t: Tensor) -> bool:
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


def _kernel_forward(x, weight, bias, running_mean, running_var, batch_stats, factor, eps):
    """(y, stats (2, C) = [mean, invstd]) on plain tensors: the C kernel when it takes x, else
    composite_forward without autograd."""
    layout = _kernel_layout(
        x, (weight, bias, running_mean, running_var), not batch_stats or factor is not None
    )
    if layout is None:
        with torch.no_grad():
            y, mean, invstd = composite_forward(
                x, weight, bias, running_mean, running_var, batch_stats, factor, eps
            )
        return y, torch.stack([mean.to(x.dtype), invstd.to(x.dtype)])
    return kernel_forward(
        x, layout, weight, bias, running_mean, running_var, batch_stats, factor, eps
    )


def _kernel_backward(dy, x, weight, stats, batch_stats, needs):
    """(dx, dγ, dβ) from the C kernel, or None when it does not take these tensors."""
    layout = _kernel_layout(x, (weight, stats.view(-1)), False)
    if layout is None:
        return None
    return kernel_backward(dy, x, layout, weight, stats, batch_stats, needs)


class BatchNormTransformFunction(torch.autograd.Function):
    """The op under torch.func transforms: forward(...) -> (y, stats), stats (2, C) = [mean,
    invstd] it normalized with (not differentiable). Same arguments as BatchNormFunction."""

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, batch_stats, factor, eps):
        return _kernel_forward(x, weight, bias, running_mean, running_var, batch_stats, factor, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight = inputs[0], inputs[1]
        ctx.batch_stats, ctx.eps = inputs[5], inputs[7]
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(x, weight, output[1])

    @staticmethod
    def backward(ctx, dy, _dstats):
        x, weight, stats = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        grads = None
        # plain tensors and no graph to build: the kernel (what a vmapped model's backward
        # reaches through the vmap rule's inner call)
        if not torch.is_grad_enabled() and not (_wrapped(dy) or _wrapped(x)):
            grads = _kernel_backward(dy, x, weight, stats, ctx.batch_stats, needs)
        if grads is None:
            grads = composite_backward(
                dy, x, weight, stats[0], stats[1], ctx.batch_stats, ctx.eps, needs
            )
        return (*grads, None, None, None, None, None)

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, running_mean, running_var, batch_stats, factor, eps):
        b = info.batch_size
        xd = in_dims[0]
        x = x.movedim(xd, 0) if xd is not None else x.expand(b, *x.shape)
        n, c, rest = x.shape[1], x.shape[2], tuple(x.shape[3:])
        x2 = x.movedim(0, 1).reshape(n, b * c, *rest)  # channel b·C + c: model b's channel c

        def chans(t, d):  # (C,) per model -> (B·C,)
            if t is None:
                return None
            return t.repeat(b) if d is None else t.movedim(d, 0).reshape(-1)

        stats_in, write_back = [], []
        for t, d in ((running_mean, in_dims[3]), (running_var, in_dims[4])):
            if t is None or (d is None and factor is None):
                stats_in.append(chans(t, d))
            elif d is None:
                raise RuntimeError(
                    "BatchNorm under vmap: the input is batched but running_mean/running_var, "
                    "which training updates in place, are not; stack the buffers too "
                    "(torch.func.stack_module_state) or use track_running_stats=False"
                )
            else:
                tb = t.movedim(d, 0)
                flat = tb.view(-1) if tb.is_contiguous() else tb.reshape(-1)
                stats_in.append(flat)
                if flat.data_ptr() != tb.data_ptr() or not tb.is_contiguous():
                    write_back.append((tb, flat))
        y, stats = BatchNormTransformFunction.apply(
            x2, chans(weight, in_dims[1]), chans(bias, in_dims[2]), *stats_in,
            batch_stats, factor, eps,
        )  # fmt: skip
        for tb, flat in write_back:
            tb.copy_(flat.view(tb.shape))
        return (y.view(n, b, c, *rest), stats.view(2, b, c)), (1, 1)


def _empty(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """An empty batch, as torch: an empty output (its gradients empty, γ's and β's zero)."""
    y = x * bcast(weight, x) if weight is not None else x.clone()
    return y + bcast(bias, x) if bias is not None else y


def batch_norm(x, weight, bias, running_mean, running_var, batch_stats, factor, eps) -> Tensor:
    """The op: y normalized per channel with this batch's statistics (batch_stats) or with the
    running estimates, which it updates in place with weight `factor` (None: no update).
    Inputs and per-channel tensors share one dtype (the layer casts mixed precision)."""
    if _is_compiling():
        return composite_forward(
            x, weight, bias, running_mean, running_var, batch_stats, factor, eps
        )[0]
    if _transforms_active():
        if x.numel() == 0:
            return _empty(x, weight, bias)
        if _peek().key() != _VMAP:  # grad, jvp, ...: torch ops, which every transform knows
            return composite_forward(
                x, weight, bias, running_mean, running_var, batch_stats, factor, eps
            )[0]
        return BatchNormTransformFunction.apply(
            x, weight, bias, running_mean, running_var, batch_stats, factor, eps
        )[0]
    if x.numel() == 0:
        return _empty(x, weight, bias)
    return BatchNormFunction.apply(
        x, weight, bias, running_mean, running_var, batch_stats, factor, eps
    )


def batch_norm_reference(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float | None,
    eps: float,
    num_batches_tracked: Tensor | None = None,
) -> Tensor:
    """The plain-autograd formulation (gradients through μ and σ² by autograd), for tests."""
    dims = reduce_dims(x)
    use_batch = training or running_mean is None
    if use_batch:
        mean = x.mean(dims)
        var = ((x - bcast(mean, x)) ** 2).mean(dims)
        if training and running_mean is not None:
            m = x.numel() // x.shape[1]
            with torch.no_grad():
                num_batches_tracked.add_(1)
                f = 1.0 / float(num_batches_tracked) if momentum is None else momentum
                running_mean.mul_(1 - f).add_(f * mean)
                running_var.mul_(1 - f).add_(f * var * m / (m - 1))
    else:
        mean, var = running_mean, running_var
    y = (x - bcast(mean, x)) / torch.sqrt(bcast(var, x) + eps)
    if weight is not None:
        y = y * bcast(weight, x)
    if bias is not None:
        y = y + bcast(bias, x)
    return y

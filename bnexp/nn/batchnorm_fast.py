"""The eager op behind our BatchNorm: `BatchNormFunction` (C kernel or torch ops, analytic
backward).

What the layer calls in ordinary eager training; batchnorm_op.batch_norm picks it (or the
torch.func / torch.compile variants). Its backward is differentiable: with create_graph=True it
runs `composite_backward`, torch ops from the saved input, so double backward is correct.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from bnexp.nn import bn_kernel


def reduce_dims(x: Tensor) -> tuple[int, ...]:
    return (0, *range(2, x.dim()))  # every dim but the channel dim 1


def bcast(v: Tensor, x: Tensor) -> Tensor:
    return v.view((1, -1) + (1,) * (x.dim() - 2))  # (C,) -> (1, C, 1, ...)


# Two implementations of the same formulas:
# - the C kernel (bn_kernel.py, kernels/batchnorm.c): one call per direction. It takes CPU
#   float32/float64 inputs of up to _SMALL values, and larger ones when torch runs on one thread
#   (it is single-threaded; with several threads torch's parallel ops win on large inputs).
#   Small inputs are bound by the per-call cost of torch ops, which this avoids (about 25 calls
#   become 2); large ones by memory traffic, where it makes the same passes as torch's kernel.
# - torch ops, for everything else (CUDA, other dtypes, no C compiler). Inputs of up to _SMALL
#   values keep z − μ for backward. Larger inputs are bound by memory: on the CPU a fresh tensor
#   of more than a few MiB costs a page fault per 4 KiB page when first written, which takes
#   longer than the arithmetic on it, so the op allocates only what it returns (y forward, dx
#   backward, as torch's kernel) and uses that buffer as its scratch space. Single-threaded it
#   works slice by slice along the batch dim (_SLICE values per slice), so each slice's passes
#   hit the cache; with several threads it works on the whole tensor, since every op is a
#   parallel region whose threads meet at a barrier, and on a busy machine each meeting can
#   cost a scheduler time slice.
_SMALL = 1 << 18
_SLICE = 1 << 18


def _slices(*ts: Tensor) -> list[tuple[Tensor, ...]]:
    """The tensors cut into the same slices along dim 0 (one slice: the tensors themselves)."""
    x = ts[0]
    if x.device.type != "cpu" or torch.get_num_threads() > 1 or x.numel() <= _SLICE:
        return [ts]
    rows = max(1, _SLICE // max(1, x.numel() // x.shape[0]))
    return list(zip(*(t.split(rows) for t in ts), strict=True))


@functools.lru_cache(maxsize=256)
def _const(value: float, dtype: torch.dtype) -> Tensor:
    """A 0-dim CPU tensor: torch dispatches it faster than a Python float (most of all in
    the operand's own dtype), and it mixes with tensors of any device."""
    with torch.inference_mode(False):  # cached: must not become an inference tensor
        return torch.tensor(value, dtype=dtype)


def _total(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)


_KERNEL_DTYPES = (torch.float32, torch.float64)


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _kernel_layout(
    x: Tensor, per_channel: tuple[Tensor | None, ...], needs_running: bool
) -> tuple | None:
    """(outer, inner, memory format) when the C kernel takes x, viewed as (outer, C, inner);
    else None.

    The kernel takes CPU float32/float64 inputs, small or on one torch thread, that are contiguous
    or channels_last, with per-channel tensors (γ, β, running estimates; None allowed) contiguous,
    on the CPU, of x's dtype.
    needs_running: the call reads or updates the running estimates, which must then exist.
    """
    dtype = x.dtype  # (is_cpu, not device.type: called per forward, and 4x cheaper)
    if not x.is_cpu or dtype not in _KERNEL_DTYPES or x.shape[1] == 0:
        return None
    if x.numel() > _SMALL and torch.get_num_threads() > 1:
        return None
    if needs_running and (per_channel[2] is None or per_channel[3] is None):
        return None
    for t in per_channel:
        if t is not None and not (t.dtype == dtype and t.is_cpu and t.is_contiguous()):
            return None
    if bn_kernel.load() is None:
        return None
    if x.is_contiguous():
        return x.shape[0], math.prod(x.shape[2:]), torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.numel() // x.shape[1], 1, torch.channels_last
    return None


class BatchNormFunction(torch.autograd.Function):
    r"""Batch normalization with an analytic backward, in the lecture's notation.

    Per channel, over the m = N·H·W values z^(i) of a batch (training, batch statistics):

        μ = 1/m Σ_i z^(i)               σ² = 1/m Σ_i (z^(i) − μ)²      (biased)
        z_norm^(i) = (z^(i) − μ) / √(σ² + ε)
        z̃^(i) = γ z_norm^(i) + β

    Forward computes μ, then σ² from the centred values (no cancellation), then
    z̃ = (z − μ)·a + β with a = γ/√(σ² + ε); large inputs on the torch-ops path use z·a + b,
    b = β − μ·a, one fused multiply-add and no temporary (the form torch's CPU kernel uses).
    Both directions run either in our C kernel (CPU, see _kernel_layout and bn_kernel.py) or as
    torch ops; the two compute the same formulas and agree up to rounding.

    Backward, given dz̃ = ∂L/∂z̃. β and γ enter every z̃^(i):

        dβ = Σ_i dz̃^(i)        dγ = Σ_i dz̃^(i) z_norm^(i)

    z^(i) reaches L through z_norm^(i) directly and through μ and σ², which depend on every
    z^(j). With dz_norm = γ dz̃, ∂μ/∂z^(i) = 1/m and ∂σ²/∂z^(i) = 2(z^(i) − μ)/m, summing the
    three paths gives

        dz^(i) = γ / (m √(σ² + ε)) · ( m dz̃^(i) − Σ_j dz̃^(j) − z_norm^(i) Σ_j dz̃^(j) z_norm^(j) )
               = a · ( dz̃^(i) − dβ/m − (z^(i) − μ) · dγ / (m √(σ² + ε)) )

    so the backward is one pass for the two per-channel sums (dβ, and Σ dz̃ (z − μ) = dγ·√(σ²+ε))
    and one elementwise pass for dz; no autograd through μ and σ². When the statistics are
    constants (eval with running estimates, `stats="population"`), dz^(i) = a·dz̃^(i).

    Running estimates are updated in place (no gradient) when `factor` is not None:
    running = (1 − factor)·running + factor·batch, with the unbiased variance σ²·m/(m − 1).
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        batch_stats: bool,  # normalize with this batch's statistics (else with running_*)
        factor: float | None,  # running-estimate update weight; None: no update
        eps: float,
    ) -> Tensor:
        layout = _kernel_layout(
            x, (weight, bias, running_mean, running_var), not batch_stats or factor is not None
        )
        ctx.kernel, ctx.batch_stats, ctx.eps = layout, batch_stats, eps
        if layout is not None:  # the C kernel: y, and stats = [μ, invstd] for backward
            y, stats = kernel_forward(
                x, layout, weight, bias, running_mean, running_var, batch_stats, factor, eps
            )
            ctx.save_for_backward(x, weight, stats)
            return y
        # The torch-ops path. Per-channel values stay in x's broadcast shape (keepdim; plain (C,)
        # for 2D inputs) to save views, and Python floats become cached 0-dim tensors: both cut
        # per-call cost.
        dims, nd = reduce_dims(x), x.dim() > 2
        shape = (1, -1) + (1,) * (x.dim() - 2) if nd else None  # (C,) -> broadcast shape
        chan = (lambda v: v.view(shape)) if nd else (lambda v: v)  # noqa: E731
        m = x.numel() // x.shape[1]
        small = x.numel() <= _SMALL
        xc = y = None  # xc: z − μ, kept for backward (small inputs); y: the output buffer
        if batch_stats or factor is not None:
            total = x.sum(dims, keepdim=nd)
            if small:
                xc = torch.sub(x, total, alpha=1 / m)
                sq = (xc * xc).sum(dims, keepdim=nd)
            else:
                mb, y, sq = total * _const(1 / m, x.dtype), torch.empty_like(x), []
                for xs, ys in _slices(x, y):
                    sq.append(torch.sub(xs, mb, out=ys).mul_(ys).sum(dims, keepdim=nd))
                sq = _total(sq)
            mean, var = (
                total.mul_(_const(1 / m, x.dtype)),
                sq.mul_(_const(1 / m, x.dtype)),
            )  # biased
        if factor is not None:
            new_mean, new_var = mean, var * _const(m / (m - 1), x.dtype)
            if nd:
                new_mean, new_var = new_mean.view(-1), new_var.view(-1)
        if not batch_stats:  # constants: the running estimates as they were before this batch
            mean, var, xc = chan(running_mean).clone(), chan(running_var), None
        invstd = (var + _const(eps, x.dtype)).rsqrt_()
        a = invstd if weight is None else invstd * chan(weight)  # γ/√(σ² + ε)
        if xc is not None:
            y = xc * a if bias is None else torch.addcmul(chan(bias), xc, a)
        else:  # y = z·a + (β − μ·a), as torch's CPU kernel
            b = -mean * a if bias is None else torch.addcmul(chan(bias), mean, a, value=-1)
            y = torch.empty_like(x) if y is None else y  # keeps x's memory format
            for xs, ys in _slices(x, y):
                torch.addcmul(b, xs, a, out=ys)
        if factor is not None:
            running_mean.lerp_(new_mean, factor)
            running_var.lerp_(new_var, factor)
        # x and γ too: a double backward (composite_backward) differentiates through them
        ctx.save_for_backward(x if xc is None else xc, mean, invstd, a, x, weight)
        ctx.centered = xc is not None
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        # Grad mode is on here only under create_graph=True: then the backward must itself be
        # differentiable, so it runs as torch ops from the saved input (composite_backward).
        if torch.is_grad_enabled():
            return _backward_differentiable(ctx, dy)
        return _backward(ctx, dy)


def _backward_differentiable(ctx, dy: Tensor) -> tuple[Tensor | None, ...]:
    if ctx.kernel is not None:
        x, weight, stats = ctx.saved_tensors
        mean, invstd = stats.view(2, -1)
    else:
        _, mean, invstd, _, x, weight = ctx.saved_tensors
    grads = composite_backward(
        dy, x, weight, mean, invstd, ctx.batch_stats, ctx.eps, ctx.needs_input_grad[:3]
    )
    return (*grads, None, None, None, None, None)


def composite_backward(dy, x, weight, mean, invstd, batch_stats, eps, needs):
    """(dx, dγ, dβ) as differentiable torch ops (None where not needed). With batch statistics,
    μ and σ² are recomputed from x so that the graph reaches x through them (second derivatives);
    otherwise mean, invstd (any shape of C values) are the constants forward normalized with."""
    dims = reduce_dims(x)
    m = x.numel() // x.shape[1]
    if batch_stats:
        var, mean = torch.var_mean(x, dims, correction=0)
        invstd = torch.rsqrt(var + eps)
    else:
        mean, invstd = mean.reshape(-1), invstd.reshape(-1)
    xhat = (x - bcast(mean, x)) * bcast(invstd, x)  # z_norm
    db = dy.sum(dims)
    dw = (dy * xhat).sum(dims)
    a = invstd if weight is None else invstd * weight
    dx = None
    if needs[0]:
        if batch_stats:
            dx = bcast(a, x) * (dy - bcast(db / m, x) - xhat * bcast(dw / m, x))
        else:
            dx = dy * bcast(a, x)
    return dx, dw if needs[1] else None, db if needs[2] else None


def _backward(ctx, dy: Tensor) -> tuple[Tensor | None, ...]:
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    if ctx.kernel is not None:  # the C kernel, from the stats [μ, invstd] forward wrote
        x, weight, stats = ctx.saved_tensors
        dx, dw, db = kernel_backward(
            dy, x, ctx.kernel, weight, stats, ctx.batch_stats, (need_x, need_w, need_b)
        )
        return dx, dw, db, None, None, None, None, None
    # z: x − μ if ctx.centered else x; (C,) in x's broadcast shape
    z, mean, invstd, a, _, _ = ctx.saved_tensors
    dims, nd = reduce_dims(z), z.dim() > 2
    m = z.numel() // z.shape[1]
    dx = dw = db = None
    if need_x and not ctx.batch_stats:
        dx = dy * a
        if not (need_w or need_b):
            return dx, dw, db, None, None, None, None, None
    if ctx.centered:
        sum_dy, dot = dy.sum(dims, keepdim=nd), (dy * z).sum(dims, keepdim=nd)  # Σ dz̃, Σ dz̃ (z − μ)
    else:  # the dx buffer as scratch: one allocation
        buf, sum_dy, dot = torch.empty_like(z), [], []
        for xs, dys, bs in _slices(z, dy, buf):
            sum_dy.append(dys.sum(dims, keepdim=nd))
            dot.append(torch.sub(xs, mean, out=bs).mul_(dys).sum(dims, keepdim=nd))
        sum_dy, dot = _total(sum_dy), _total(dot)
    dgamma = dot * invstd  # Σ dz̃ z_norm
    if need_w:
        dw = dgamma.view(-1) if nd else dgamma
    if need_b:
        db = sum_dy.view(-1) if nd else sum_dy
    if need_x and ctx.batch_stats:
        # dz = a·dz̃ + cb + kb·(z − μ), cb = −a·dβ/m, kb = −a·dγ·invstd/m
        a_m = a * _const(-1 / m, z.dtype)
        cb, kb = sum_dy * a_m, (dgamma * invstd).mul_(a_m)
        if ctx.centered:
            dx = torch.addcmul(cb, dy, a).addcmul_(z, kb)
        else:
            for xs, dys, bs in _slices(z, dy, buf):
                torch.addcmul(cb, torch.sub(xs, mean, out=bs), kb, out=bs).addcmul_(dys, a)
            dx = buf
    return dx, dw, db, None, None, None, None, None


def kernel_forward(
    x, layout, weight, bias, running_mean, running_var, batch_stats, factor, eps
) -> tuple[Tensor, Tensor]:
    """One call into the C kernel (x viewed as `layout` = (outer, inner, memory format), see
    _kernel_layout): y, and stats (2, C) = [μ, invstd] for the backward. Updates the running
    estimates in place when `factor` is given."""
    outer, inner, _ = layout
    y, stats = torch.empty_like(x), x.new_empty(2, x.shape[1])
    bn_kernel.check(
        bn_kernel.load().forward[x.dtype](
            x.data_ptr(),
            y.data_ptr(),
            outer,
            x.shape[1],
            inner,
            _ptr(weight),
            _ptr(bias),
            _ptr(running_mean),
            _ptr(running_var),
            batch_stats,
            -1.0 if factor is None else factor,
            eps,
            stats.data_ptr(),
        )
    )
    return y, stats


def kernel_backward(dy, x, layout, weight, stats, batch_stats, needs) -> tuple:
    """(dx, dγ, dβ) from one call into the C kernel, from the stats its forward wrote; `needs`
    says which of the three to compute (None for the others)."""
    outer, inner, memory_format = layout
    c = x.shape[1]
    dy = dy.contiguous(memory_format=memory_format)  # the layout the kernel assumes: x's
    dx = torch.empty_like(x) if needs[0] else None
    dw = x.new_empty(c) if needs[1] else None
    db = x.new_empty(c) if needs[2] else None
    bn_kernel.check(
        bn_kernel.load().backward[x.dtype](
            dy.data_ptr(),
            x.data_ptr(),
            _ptr(dx),
            outer,
            c,
            inner,
            _ptr(weight),
            stats.data_ptr(),
            batch_stats,
            _ptr(dw),
            _ptr(db),
        )
    )
    return dx, dw, db

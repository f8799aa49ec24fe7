"""Our BatchNorm, written from the formulas, and the name -> layer table used by the models.

`BatchNorm1d` / `BatchNorm2d` are drop-ins for torch.nn.BatchNorm1d / BatchNorm2d: the same
constructor, parameters, buffers, state_dict keys and numbers. They compute their statistics and
their normalization themselves (never torch's batch_norm kernels), with an analytic backward: on
the CPU in our C kernel (bn_kernel.py), elsewhere with torch ops.

Conventions (the same as torch's):
- training: normalize with the batch mean and the *biased* batch variance (divide by m);
- the running variance is updated with the *unbiased* variance (divide by m - 1);
- running = (1 - momentum) * running + momentum * batch; momentum=None is the cumulative average;
- eval (with running stats tracked): normalize with the running estimates;
- statistics are per channel, over every dim but 1: (N, C), (N, C, L), (N, C, H, W), any memory
  format (channels_last stays channels_last).

On top of that, the controls that separate BN's two effects (all off by default):
- `ghost_batch_size`: statistics over virtual sub-batches (Hoffer et al. 2017);
- `stats="population"`: normalize with the running estimates in training too (no batch noise);
- `noise`: Santurkar et al. (2018)'s noisy BN, a per-channel random scale and shift of the output;
- `eval_stats`: what eval mode normalizes with: running estimates, the batch's own statistics, or
  running estimates recomputed over the training set before each evaluation (`recalibrate`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from bnexp.nn import bn_kernel

# --------------------------------------------------------------------------- the op


def _reduce_dims(x: Tensor) -> tuple[int, ...]:
    return (0, *range(2, x.dim()))  # every dim but the channel dim 1


def _bcast(v: Tensor, x: Tensor) -> Tensor:
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
    """(outer, inner, memory format) when the C kernel takes x, viewed as (outer, C, inner); else None.

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
        ctx.kernel, ctx.batch_stats = layout, batch_stats
        if layout is not None:  # the C kernel: y, and stats = [μ, invstd] for backward
            outer, inner, _ = layout
            y, stats = torch.empty_like(x), x.new_empty(2 * x.shape[1])
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
            ctx.save_for_backward(x, weight, stats)
            return y
        # The torch-ops path. Per-channel values stay in x's broadcast shape (keepdim; plain (C,)
        # for 2D inputs) to save views, and Python floats become cached 0-dim tensors: both cut
        # per-call cost.
        dims, nd = _reduce_dims(x), x.dim() > 2
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
        ctx.save_for_backward(x if xc is None else xc, mean, invstd, a)
        ctx.centered = xc is not None
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        # A double backward is refused (once_differentiable). Grad mode is on here only under
        # create_graph=True, so only then is the wrapper (a no_grad block, ~2 µs) worth its cost.
        if torch.is_grad_enabled():
            return _backward_once(ctx, dy)
        return _backward(ctx, dy)


def _backward(ctx, dy: Tensor) -> tuple[Tensor | None, ...]:
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    if ctx.kernel is not None:  # the C kernel, from the stats [μ, invstd] forward wrote
        x, weight, stats = ctx.saved_tensors
        outer, inner, memory_format = ctx.kernel
        c = x.shape[1]
        dy = dy.contiguous(memory_format=memory_format)  # the layout the kernel assumes: x's
        dx = torch.empty_like(x) if need_x else None
        dw = x.new_empty(c) if need_w else None
        db = x.new_empty(c) if need_b else None
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
                ctx.batch_stats,
                _ptr(dw),
                _ptr(db),
            )
        )
        return dx, dw, db, None, None, None, None, None
    z, mean, invstd, a = (
        ctx.saved_tensors
    )  # z: x − μ if ctx.centered else x; (C,) in x's broadcast shape
    dims, nd = _reduce_dims(z), z.dim() > 2
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


_backward_once = once_differentiable(_backward)


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
    dims = _reduce_dims(x)
    use_batch = training or running_mean is None
    if use_batch:
        mean = x.mean(dims)
        var = ((x - _bcast(mean, x)) ** 2).mean(dims)
        if training and running_mean is not None:
            m = x.numel() // x.shape[1]
            with torch.no_grad():
                num_batches_tracked.add_(1)
                f = 1.0 / float(num_batches_tracked) if momentum is None else momentum
                running_mean.mul_(1 - f).add_(f * mean)
                running_var.mul_(1 - f).add_(f * var * m / (m - 1))
    else:
        mean, var = running_mean, running_var
    y = (x - _bcast(mean, x)) / torch.sqrt(_bcast(var, x) + eps)
    if weight is not None:
        y = y * _bcast(weight, x)
    if bias is not None:
        y = y + _bcast(bias, x)
    return y


# --------------------------------------------------------------------------- the layer


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


class _BatchNorm(nn.Module):
    """torch's BatchNorm arguments, plus the controls (keyword-only, all off by default):

    ghost_batch_size: in training, statistics (and running-estimate updates, one per piece)
        over consecutive pieces of this many examples, as if each piece were its own batch.
    stats: "batch" (BN) or "population": training normalizes with the running estimates as
        they were before the batch (no gradient through them), which the batches keep updating.
    noise: NoisyBN; in training the output becomes output·s + t with a per-channel draw (s, t)
        from `noise_generator` (reseed with seed_noise), redrawn every `every_steps` forwards.
    eval_stats: "running" (torch's), "batch" (eval normalizes with each batch's own statistics)
        or "recalibrate" (running, with estimates that `recalibrate()` recomputes before evaluation).
    """

    _version = 2  # torch's: state dicts from version < 2 lack num_batches_tracked
    _expected_dims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        ghost_batch_size: int | None = None,
        stats: Stats = "batch",
        noise: NoisyBN | None = None,
        eval_stats: EvalStats = "running",
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))  # γ
            if bias:  # torch's keyword: affine=True, bias=False learns γ only
                self.bias = nn.Parameter(torch.empty(num_features, **factory))  # β
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self._set_controls(ghost_batch_size, stats, noise, eval_stats)
        self.reset_parameters()

    def _set_controls(self, ghost_batch_size, stats, noise, eval_stats) -> None:
        if ghost_batch_size is not None and ghost_batch_size < 2:
            raise ValueError(
                f"ghost_batch_size must be >= 2 (a variance needs 2 values), got {ghost_batch_size}"
            )
        if stats not in ("batch", "population"):
            raise ValueError(f"stats must be 'batch' or 'population', got {stats!r}")
        if eval_stats not in ("running", "batch", "recalibrate"):
            raise ValueError(
                f"eval_stats must be 'running', 'batch' or 'recalibrate', got {eval_stats!r}"
            )
        if not self.track_running_stats and (stats == "population" or eval_stats == "recalibrate"):
            raise ValueError(
                f"stats={stats!r}, eval_stats={eval_stats!r} need track_running_stats=True"
            )
        if noise is not None and (
            noise.every_steps < 1 or noise.mean_std < 0 or noise.scale_std < 0
        ):
            raise ValueError(f"noise needs every_steps >= 1 and non-negative stds, got {noise}")
        self.ghost_batch_size = ghost_batch_size
        self.stats = stats
        self.noise = noise
        self.eval_stats = eval_stats
        # Noise state: plain attributes, not buffers, so state dicts stay torch's.
        self.noise_generator = torch.Generator().manual_seed(0)  # reseed with seed_noise()
        self._noise_steps = 0  # training forwards seen
        self._noise_draw: tuple[Tensor, Tensor] | None = None  # (scale, shift), (C,) each

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def seed_noise(self, seed: int) -> None:
        """Restart the noise stream (the draws come from this layer's own CPU generator)."""
        self.noise_generator.manual_seed(seed)
        self._noise_steps, self._noise_draw = 0, None

    def extra_repr(self) -> str:
        s = (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )
        if self.ghost_batch_size is not None:
            s += f", ghost_batch_size={self.ghost_batch_size}"
        if self.stats != "batch":
            s += f", stats={self.stats!r}"
        if self.noise is not None:
            s += f", noise={self.noise}"
        if self.eval_stats != "running":
            s += f", eval_stats={self.eval_stats!r}"
        return s

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in self._expected_dims:
            raise ValueError(
                f"expected {' or '.join(f'{d}D' for d in self._expected_dims)} input (got {x.dim()}D input)"
            )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # torch's rule: a version < 2 state dict has no num_batches_tracked; count from 0
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long, device=self.running_mean.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _factor(self) -> float:
        """Count one more batch; the weight it gets in the running estimates."""
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def _affine_with_noise(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(γ, β), with the noise folded in when it is on: (γ·s, β·s + t) for draw (s, t)."""
        if self.noise is None or not self.training:
            return self.weight, self.bias
        if self._noise_steps % self.noise.every_steps == 0:
            g, c = self.noise_generator, self.num_features
            scale = 1 + self.noise.scale_std * torch.randn(c, generator=g, dtype=torch.float64)
            shift = self.noise.mean_std * torch.randn(c, generator=g, dtype=torch.float64)
            self._noise_draw = (scale.to(x.device, x.dtype), shift.to(x.device, x.dtype))
        self._noise_steps += 1
        scale, shift = self._noise_draw
        weight = scale if self.weight is None else self.weight * scale
        bias = shift if self.bias is None else torch.addcmul(shift, self.bias, scale)
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        # as torch: eval normalizes with the running estimates whenever the buffers exist
        batch_stats = (
            self.training
            and self.stats == "batch"
            or not self.training
            and (self.eval_stats == "batch" or self.running_mean is None)
        )
        update = self.training and self.track_running_stats
        if (batch_stats or update) and x.numel() // x.shape[1] <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.size()}"
            )
        weight, bias = (
            (self.weight, self.bias) if self.noise is None else self._affine_with_noise(x)
        )
        ghost = self.ghost_batch_size
        if not (self.training and batch_stats and ghost is not None and x.shape[0] > ghost):
            factor = self._factor() if update else None
            return BatchNormFunction.apply(
                x, weight, bias, self.running_mean, self.running_var, batch_stats, factor, self.eps
            )
        # Ghost batches: each piece is normalized, and counted, as a batch of its own, in order.
        sizes = ghost_chunks(x.shape[0], ghost)
        if x.numel() // x.shape[0] // x.shape[1] * min(sizes) <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel in each ghost batch, got sizes {sizes} of {x.size()}"
            )
        outs = [
            BatchNormFunction.apply(
                piece,
                weight,
                bias,
                self.running_mean,
                self.running_var,
                True,
                self._factor() if update else None,
                self.eps,
            )
            for piece in x.split(sizes)
        ]
        return torch.cat(outs)


class BatchNorm1d(_BatchNorm):
    """Drop-in for torch.nn.BatchNorm1d: input (N, C) or (N, C, L)."""

    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Drop-in for torch.nn.BatchNorm2d: input (N, C, H, W)."""

    _expected_dims = (4,)


# --------------------------------------------------------------------------- recalibration


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, (_BatchNorm, nn.modules.batchnorm._BatchNorm)) and m.track_running_stats


class _StopForward(Exception):
    """Raised by a pooling hook: the layers after the one being recalibrated need not run."""


class _MomentSums:
    """Forward pre-hook pooling a layer's input statistics over batches: per batch (count,
    mean, biased var) in the input's dtype, merged exactly in float64 (Chan et al.'s update)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, None, None  # count, mean (C,), Σ (z − mean)² (C,)

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        z = inputs[0]
        dims, nb = _reduce_dims(z), z.numel() // z.shape[1]
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


# --------------------------------------------------------------------------- the table


NORMS = ("none", "torch", "custom")


def make_norm(
    name: str,
    num_features: int,
    spatial: bool,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
    *,
    ghost_batch_size: int | None = None,
    stats: Stats = "batch",
    noise: NoisyBN | None = None,
    eval_stats: EvalStats = "running",
) -> nn.Module:
    """The norm layer called `name` for `num_features` channels; `spatial` picks the 2d variant.

    The controls (ghost_batch_size, stats, noise, eval_stats) exist only on our layer: asking for
    them with another norm is a ValueError rather than a silently different experiment.
    """
    controls = (
        ghost_batch_size is not None
        or stats != "batch"
        or noise is not None
        or eval_stats != "running"
    )
    if name == "none":
        cls = None
    elif name == "torch":
        cls = nn.BatchNorm2d if spatial else nn.BatchNorm1d
    elif name == "custom":
        cls = BatchNorm2d if spatial else BatchNorm1d
    else:
        raise ValueError(f"unknown norm {name!r}; expected one of {NORMS}")
    if controls and name != "custom":
        raise ValueError(
            f"the BN controls (ghost_batch_size, stats, noise, eval_stats) need norm 'custom', got {name!r}"
        )
    if cls is None:
        return nn.Identity()
    if name == "torch":
        return cls(num_features, eps=eps, momentum=momentum)
    return cls(
        num_features,
        eps=eps,
        momentum=momentum,
        ghost_batch_size=ghost_batch_size,
        stats=stats,
        noise=noise,
        eval_stats=eval_stats,
    )

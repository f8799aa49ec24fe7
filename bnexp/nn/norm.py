"""Our BatchNorm layers and the name -> layer table used by the models.

`BatchNorm1d` / `BatchNorm2d` are drop-ins for torch.nn.BatchNorm1d / BatchNorm2d: the same
constructor, parameters, buffers, state_dict keys (and the version-1 loading rule), numbers,
errors and mixed-precision behaviour. They compute their statistics and normalization themselves
(never torch's batch_norm kernels), through batchnorm_op.batch_norm: our C kernel on the CPU
(bn_kernel.py), torch ops elsewhere; it also works under torch.func (vmap, grad), torch.compile
(fullgraph) and double backward.

Conventions (the same as torch's):
- training: normalize with the batch mean and the *biased* batch variance (divide by m);
- the running variance is updated with the *unbiased* variance (divide by m - 1);
- running = (1 - momentum) * running + momentum * batch; momentum=None is the cumulative average;
- eval (with running stats tracked): normalize with the running estimates;
- statistics are per channel, over every dim but 1: (N, C), (N, C, L), (N, C, H, W), any memory
  format (channels_last stays channels_last);
- an empty batch gives an empty output, counts as a batch and leaves the estimates alone;
- mixed precision (torch's CPU rule): a bfloat16/float16 input with float32 parameters (autocast)
  is normalized in float32 and returned in the input's dtype; other mixes raise RuntimeError.

On top of that, the controls that separate BN's two effects (all off by default; controls.py):
- `ghost_batch_size`: statistics over virtual sub-batches (Hoffer et al. 2017);
- `stats="population"`: normalize with the running estimates in training too (no batch noise);
- `noise`: Santurkar et al. (2018)'s noisy BN, a per-channel random scale and shift of the output;
- `eval_stats`: what eval mode normalizes with: running estimates, the batch's own statistics, or
  running estimates recomputed over the training set before each evaluation (`recalibrate`).

TorchScript (`torch.jit.script`) is not supported: it is in maintenance mode, and the layer's
Python (the kernel loader, the controls) is outside its subset; torch.compile is the way to
compile a model with our layer.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from bnexp.nn.batchnorm_op import batch_norm
from bnexp.nn.controls import NoisyBN, ghost_chunks, recalibrate

__all__ = [
    "NORMS",
    "BatchNorm1d",
    "BatchNorm2d",
    "EvalStats",
    "NoisyBN",
    "Stats",
    "ghost_chunks",
    "make_norm",
    "recalibrate",
]

Stats = Literal["batch", "population"]
EvalStats = Literal["running", "batch", "recalibrate"]
_REDUCED = (torch.bfloat16, torch.float16)


def _compute_dtype(x: Tensor, tensors: tuple[Tensor | None, ...]) -> torch.dtype:
    """The dtype the op runs in, by torch's CPU rule for mixed dtypes: x's when every
    per-channel tensor has it; float32 for a bfloat16/float16 x with float32 ones (autocast)."""
    dtype = x.dtype
    found = {t.dtype for t in tensors if t is not None}
    if not found or found == {dtype}:
        return dtype
    if dtype in _REDUCED and found <= {dtype, torch.float32}:
        return torch.float32
    if dtype in _REDUCED or dtype == torch.float32:
        raise RuntimeError(
            f"mixed dtype (CPU): expect parameter to have scalar type of Float (input {dtype}, "
            f"parameters and buffers {sorted(str(d) for d in found)})"
        )
    raise RuntimeError(
        f"mixed dtype (CPU): all inputs must share same datatype. (input {dtype}, parameters "
        f"and buffers {sorted(str(d) for d in found)})"
    )


class _BatchNorm(nn.Module):
    """torch's BatchNorm arguments, plus the controls (keyword-only, all off by default):

    ghost_batch_size: in training, statistics (and running-estimate updates, one per piece)
        over consecutive pieces of this many examples, as if each piece were its own batch.
    stats: "batch" (BN) or "population": training normalizes with the running estimates as
        they were before the batch (no gradient through them), which the batches keep updating.
    noise: NoisyBN; in training the output becomes output·s + t with a per-channel draw (s, t)
        from `noise_generator` (reseed with seed_noise), redrawn every `every_steps` forwards.
    eval_stats: "running" (torch's), "batch" (eval normalizes with each batch's own statistics)
        or "recalibrate" (running, with estimates that `recalibrate()` recomputes before
        evaluation).
    """

    _version = 2  # torch's: state dicts from version < 2 lack num_batches_tracked
    _bnexp_batchnorm = True  # what controls.recalibrate looks for
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
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
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
                f"expected {' or '.join(f'{d}D' for d in self._expected_dims)} input "
                f"(got {x.dim()}D input)"
            )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # torch's rule: a version < 2 state dict has no num_batches_tracked; the module keeps
        # its own count (0 when it has none, or it lives on the meta device)
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            own = self.num_batches_tracked
            state_dict[key] = (
                own
                if own is not None and own.device != torch.device("meta")
                else torch.tensor(0, dtype=torch.long)
            )
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
        training = self.training
        if training:
            batch_stats = self.stats == "batch"
        else:
            batch_stats = self.eval_stats == "batch" or self.running_mean is None
        update = training and self.track_running_stats
        if batch_stats or update:  # torch's checks, in its order
            # values per channel: torch's size[0]·size[2]·…, which is 0 (allowed) for no batch
            if x.shape[0] * math.prod(x.shape[2:]) == 1:
                raise ValueError(
                    "Expected more than 1 value per channel when training, "
                    f"got input size {x.size()}"
                )
            if self.eps <= 0.0:
                raise ValueError(
                    f"batch_norm eps must be positive during training, but got {self.eps}"
                )
        elif self.eps < 0.0:
            raise ValueError(f"batch_norm eps must be non-negative, but got {self.eps}")
        weight, bias = (
            (self.weight, self.bias) if self.noise is None else self._affine_with_noise(x)
        )
        dtype = x.dtype
        if weight is not None and weight.dtype is dtype:
            cast = False
        else:
            cast = (
                _compute_dtype(x, (weight, bias, self.running_mean, self.running_var)) is not dtype
            )
            if cast:  # bfloat16/float16 input, float32 parameters: run in float32, as torch
                x = x.float()
        ghost = self.ghost_batch_size
        if not (training and batch_stats and ghost is not None and x.shape[0] > ghost):
            factor = self._factor() if update else None
            if x.numel() == 0:
                factor = None  # counted, but an empty batch leaves the estimates alone (torch)
            y = batch_norm(
                x, weight, bias, self.running_mean, self.running_var, batch_stats, factor, self.eps
            )
            return y.to(dtype) if cast else y
        # Ghost batches: each piece is normalized, and counted, as a batch of its own, in order.
        sizes = ghost_chunks(x.shape[0], ghost)
        if x.numel() // x.shape[0] // x.shape[1] * min(sizes) <= 1:
            raise ValueError(
                "Expected more than 1 value per channel in each ghost batch, "
                f"got sizes {sizes} of {x.size()}"
            )
        outs = [
            batch_norm(
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
        y = torch.cat(outs)
        return y.to(dtype) if cast else y


class BatchNorm1d(_BatchNorm):
    """Drop-in for torch.nn.BatchNorm1d: input (N, C) or (N, C, L)."""

    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Drop-in for torch.nn.BatchNorm2d: input (N, C, H, W)."""

    _expected_dims = (4,)


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
            "the BN controls (ghost_batch_size, stats, noise, eval_stats) need norm 'custom', "
            f"got {name!r}"
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

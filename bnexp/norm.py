"""Our BatchNorm, written from the formulas, and the name -> layer table used by the models.

Conventions (the same as torch.nn.BatchNorm1d/2d):
- training: normalize with the batch mean and the *biased* batch variance (divide by n);
- the running variance is updated with the *unbiased* variance (divide by n - 1);
- running = (1 - momentum) * running + momentum * batch; momentum=None is the cumulative average;
- eval (with running stats tracked): normalize with the running estimates.
Statistics are per channel, over every dim but 1: (N, C), (N, C, L) and (N, C, H, W).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class _BatchNorm(nn.Module):
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
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))  # gamma
            self.bias = nn.Parameter(torch.empty(num_features, **factory))  # beta
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in self._expected_dims:
            raise ValueError(f"expected {' or '.join(f'{d}D' for d in self._expected_dims)} input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]  # every dim but the channel dim 1
        shape = [1, -1] + [1] * (x.dim() - 2)  # broadcast (C,) over x
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            n = x.numel() // x.shape[1]
            if self.training and n <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
            mean = x.mean(dims)
            var = x.var(dims, unbiased=False)  # biased: what normalization uses
            if self.training and self.track_running_stats:
                self._update_running(mean.detach(), var.detach() * n / max(n - 1, 1))
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            return x_hat * self.weight.view(shape) + self.bias.view(shape)
        return x_hat

    @torch.no_grad()
    def _update_running(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(unbiased_var, factor)


class BatchNorm1d(_BatchNorm):
    """Drop-in for torch.nn.BatchNorm1d: input (N, C) or (N, C, L)."""

    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Drop-in for torch.nn.BatchNorm2d: input (N, C, H, W)."""

    _expected_dims = (4,)


NORMS = ("none", "torch", "custom")


def make_norm(name: str, num_features: int, spatial: bool, eps: float = 1e-5, momentum: float | None = 0.1) -> nn.Module:
    """The norm layer called `name` for `num_features` channels; `spatial` picks the 2d variant."""
    if name == "none":
        return nn.Identity()
    if name == "torch":
        cls = nn.BatchNorm2d if spatial else nn.BatchNorm1d
    elif name == "custom":
        cls = BatchNorm2d if spatial else BatchNorm1d
    else:
        raise ValueError(f"unknown norm {name!r}; expected one of {NORMS}")
    return cls(num_features, eps=eps, momentum=momentum)

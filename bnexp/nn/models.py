"""The networks a config names: bnexp's MLP and CNN, CIFAR ResNets (resnet.py), a factory's.

MLP and CNN are `Net`s: a stack of `Block`s (hidden layer l = blocks[l-1]) and a linear head. A
block is weight layer -> norm -> activation (pre_activation, the lecture's z -> z~ -> g(z~)) or
weight layer -> activation -> norm (post_activation). A weight layer followed directly by BN has
no bias: BN subtracts the mean, and beta takes the bias's place.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from bnexp.config import ModelConfig
from bnexp.errors import BnexpError
from bnexp.nn.convert import convert_norm
from bnexp.nn.factory import call_factory, check_outputs
from bnexp.nn.norm import NoisyBN, make_norm
from bnexp.nn.resnet import ResNet

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class Block(nn.Module):
    def __init__(
        self,
        weight: nn.Module,
        norm: nn.Module,
        act: nn.Module,
        norm_first: bool,
        pool: nn.Module | None = None,
    ):
        super().__init__()
        self.weight, self.norm, self.act = weight, norm, act
        self.norm_first = norm_first
        self.pool = pool if pool is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        z = self.weight(x)  # z: the inputs to this layer's nonlinearity (before BN)
        if self.norm_first:
            return self.pool(self.act(self.norm(z)))
        return self.pool(self.norm(self.act(z)))


class Net(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[Block], head: nn.Module):
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.ModuleList(blocks), head

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def norm_controls(cfg: ModelConfig) -> dict[str, Any]:
    """Our layer's controls as make_norm / convert_norm take them ({} unless norm is custom)."""
    if cfg.norm != "custom":
        return {}
    noise = NoisyBN(**cfg.bn_noise.model_dump()) if cfg.bn_noise is not None else None
    return {
        "ghost_batch_size": cfg.ghost_batch_size,
        "stats": cfg.bn_stats,
        "noise": noise,
        "eval_stats": cfg.eval_stats,
    }


def build_model(
    cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int, seed: int = 0
) -> nn.Module:
    """`input_shape` is one example's shape: (C, H, W) for images or (D,) for vectors.

    arch mlp / cnn: a `Net`; resnet: a `ResNet`; factory: the user's module with its BN layers
    converted, called with torch seeded by `seed` (init_weights then leaves its weights alone).
    """
    controls = norm_controls(cfg)

    def norm(width: int, spatial: bool) -> nn.Module:
        return make_norm(cfg.norm, width, spatial, eps=cfg.bn_eps, momentum=cfg.bn_momentum,
                         **controls)

    if cfg.factory is not None:
        model = call_factory(cfg.factory, cfg.factory_args, seed)
        check_outputs(cfg.factory, model, input_shape, num_outputs)
        model = convert_norm(model, cfg.norm, **controls)
        # a user's network: init_weights keeps its initial weights, and its images stay NCHW
        # contiguous (its code may .view them; step.is_convolutional)
        model._bnexp_factory = True
        return model
    if cfg.arch == "resnet":
        if len(input_shape) != 3:
            raise BnexpError(
                "model.arch: resnet needs image inputs (C, H, W), but the data's examples have "
                f"shape {input_shape} (use arch: mlp)"
            )
        bias = cfg.norm == "none"  # a conv followed by BN has none: β takes its place
        return ResNet(cfg.depth, input_shape[0], num_outputs, lambda c: norm(c, True), bias)
    has_norm = cfg.norm != "none"
    norm_first = cfg.norm_position == "pre_activation"
    bias = not (has_norm and norm_first)

    blocks = []
    if cfg.arch == "mlp":
        width = math.prod(input_shape)
        for h in cfg.hidden:
            blocks.append(
                Block(
                    nn.Linear(width, h, bias=bias),
                    norm(h, False),
                    ACTIVATIONS[cfg.activation](),
                    norm_first,
                )
            )
            width = h
        return Net(nn.Flatten(), blocks, nn.Linear(width, num_outputs))
    if len(input_shape) != 3:
        raise BnexpError(
            "model.arch: cnn needs image inputs (C, H, W), but the data's examples have shape "
            f"{input_shape} (use arch: mlp)"
        )
    channels, size = input_shape[0], min(input_shape[1:])
    for c in cfg.channels:
        pool = nn.MaxPool2d(2) if size >= 2 else None  # halve the map while it can be halved
        size //= 2 if pool is not None else 1
        conv = nn.Conv2d(channels, c, kernel_size=3, padding=1, bias=bias)
        blocks.append(Block(conv, norm(c, True), ACTIVATIONS[cfg.activation](), norm_first, pool))
        channels = c
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_outputs))
    return Net(nn.Identity(), blocks, head)


@torch.no_grad()
def init_weights(model: nn.Module, seed: int) -> None:
    """torch's default init, drawn from per-layer generators seeded by (seed, layer index).

    So a network with BN and one without start from the same weights: the bias a BN network
    lacks does not shift the random stream of the layers after it. Norm layers keep γ=1, β=0;
    noisy BN layers restart their noise stream from (seed, norm-layer index).
    """
    norms = [m for m in model.modules() if hasattr(m, "seed_noise")]
    for i, norm in enumerate(norms):
        norm.seed_noise(seed * 1_000_003 + 500_000 + i)
    if getattr(model, "_bnexp_factory", False):
        return  # a factory's network: seeded when it was built (build_model)
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for i, layer in enumerate(layers):
        fan_in = layer.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)  # = kaiming_uniform_(a=sqrt(5)), torch's default
        g = torch.Generator().manual_seed(seed * 1_000_003 + 2 * i)
        layer.weight.copy_(torch.empty(layer.weight.shape).uniform_(-bound, bound, generator=g))
        if layer.bias is not None:
            g = torch.Generator().manual_seed(seed * 1_000_003 + 2 * i + 1)
            layer.bias.copy_(torch.empty(layer.bias.shape).uniform_(-bound, bound, generator=g))

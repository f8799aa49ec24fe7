"""CIFAR ResNets (He et al. 2016, §4.2): 6n+2 layers, for depth 20, 32, 44, 56, 110.

A 3x3 conv of 16 channels, then three stages of n basic blocks (16, 32, 64 channels on maps of
32, 16, 8 for CIFAR's 32x32), global average pooling and a linear head. A basic block is
conv -> norm -> ReLU -> conv -> norm, plus the shortcut, then ReLU. The first block of stages 2
and 3 halves the map with a stride-2 conv; its shortcut is option A, parameter-free: every other
pixel, with the new channels zero-padded. ResNet-20 has 0.27M parameters, ResNet-56 0.85M
(the paper's Table 6). A conv followed by no norm (norm none) gets its bias back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from bnexp.config.model import RESNET_WIDTHS

NormFactory = Callable[[int], nn.Module]  # channels -> the norm layer (Identity for none)


def _conv(c_in: int, c_out: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=bias)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: NormFactory, bias: bool):
        super().__init__()
        self.conv1, self.bn1 = _conv(c_in, c_out, stride, bias), norm(c_out)
        self.conv2, self.bn2 = _conv(c_out, c_out, 1, bias), norm(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x: Tensor) -> Tensor:
        """Option A: identity; subsampled and zero-padded where the block changes the shape."""
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:  # new channels: half before, half after, as the usual CIFAR ResNets do
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int, num_outputs: int, norm: NormFactory,
                 bias: bool):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"depth {depth}: a CIFAR ResNet has 6n+2 layers (20, 32, 44, ...)")
        n = (depth - 2) // 6
        width = RESNET_WIDTHS[0]
        self.conv1, self.bn1 = _conv(in_channels, width, 1, bias), norm(width)
        stages = []
        for i, c_out in enumerate(RESNET_WIDTHS):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(width, c_out, stride, norm, bias))
                width = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)
        return self.head(x.mean(dim=(2, 3)))  # global average pooling

"""Four blocks of three 3x3 convs: the model of the "align layer outputs" debugging tutorial.

Twelve identical, purely linear layers make per-layer comparison easy to read: an error that
appears in one block and is merely carried through the next ones is easy to tell apart.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _block() -> nn.Sequential:
    return nn.Sequential(*(nn.Conv2d(3, 3, 3, 1, 1) for _ in range(3)))


class Convs(nn.Module):
    """convs1 -> convs2 -> convs3 -> convs4, each three Conv2d(3, 3, 3, stride 1, padding 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs1 = _block()
        self.convs2 = _block()
        self.convs3 = _block()
        self.convs4 = _block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs1(x)
        x = self.convs2(x)
        x = self.convs3(x)
        return self.convs4(x)


def build(seed: int = 0) -> nn.Module:
    """The model in eval mode, weights drawn from `seed` alone (the global RNG is untouched).

    Weights are scaled by 1/sqrt(fan_in), variance-preserving for a linear stack, so the output
    neither vanishes nor explodes after twelve layers; biases are non-zero.
    """
    with torch.device("meta"):
        net = Convs()
    net = net.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for conv in net.modules():
            if isinstance(conv, nn.Conv2d):
                fan_in = conv.in_channels * math.prod(conv.kernel_size)
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / math.sqrt(fan_in))
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
    return net.eval()

"""SRCNN super-resolution, as in the classic PyTorch-to-ONNX deployment tutorial.

The bicubic upsampling sits inside the network on purpose: resize operators (their
coordinate-transform and cubic-coefficient conventions) are a common place where exported
graphs drift from PyTorch, and this model exists to exercise exactly that.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SuperResolutionNet(nn.Module):
    """Bicubic upsampling followed by 9x9, 1x1 and 5x5 convs (3 -> 64 -> 32 -> 3 channels)."""

    def __init__(self, upscale_factor: int = 3) -> None:
        super().__init__()
        self.upscale_factor = upscale_factor
        # conv1..conv3 are the tutorial's names, so its checkpoints map key-for-key.
        self.conv1 = nn.Conv2d(3, 64, kernel_size=9, padding=4)
        self.conv2 = nn.Conv2d(64, 32, kernel_size=1, padding=0)
        self.conv3 = nn.Conv2d(32, 3, kernel_size=5, padding=2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float(): TorchScript scripting accepts only a float scale factor.
        x = F.interpolate(x, scale_factor=float(self.upscale_factor), mode="bicubic", align_corners=False)
        out = self.relu(self.conv1(x))
        out = self.relu(self.conv2(out))
        return self.conv3(out)


def build(seed: int = 0, upscale_factor: int = 3) -> nn.Module:
    """The network in eval mode, weights drawn from `seed` alone (the global RNG is untouched).

    He-scaled weights keep activations O(1) and the biases are non-zero, so an exporter that
    dropped a bias would show up as a mismatch.
    """
    with torch.device("meta"):
        net = SuperResolutionNet(upscale_factor)
    net = net.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for conv in (net.conv1, net.conv2, net.conv3):
            fan_in = conv.in_channels * math.prod(conv.kernel_size)
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.05)
    return net.eval()

"""A small token tagger: int64 inputs and int64-producing ops (arange, argmax).

Integer tensors are where exported graphs break in ways float models never show: dtype
promotion, int64 index ops, shape-dependent aranges and integer outputs judged by mismatch
rather than by a float tolerance.
"""

from __future__ import annotations

import math

import torch
from torch import nn

VOCAB_SIZE = 1000
MAX_LEN = 128
DIM = 64
HIDDEN = 128
NUM_TAGS = 17


class Tagger(nn.Module):
    """token + position embedding -> LayerNorm -> residual MLP -> LayerNorm -> tag logits.

    forward returns (logits, tags) with tags = logits.argmax(-1) as int64.
    """

    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        max_len: int = MAX_LEN,
        dim: int = DIM,
        hidden: int = HIDDEN,
        num_tags: int = NUM_TAGS,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_tags)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Positions come from the input's runtime length, so the arange stays in the graph.
        positions = torch.arange(tokens.shape[-1], device=tokens.device)
        h = self.norm1(self.tok(tokens) + self.pos(positions))
        h = self.norm2(h + self.mlp(h))
        logits = self.head(h)
        return logits, logits.argmax(-1)


def build(seed: int = 0) -> nn.Module:
    """The model in eval mode, weights drawn from `seed` alone (the global RNG is untouched).

    LayerNorm scales and shifts are kept away from (1, 0) and biases are non-zero so that an
    exporter that drops or folds them is caught.
    """
    with torch.device("meta"):
        net = Tagger()
    net = net.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(int(seed))

    def randn(shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=generator)

    with torch.no_grad():
        net.tok.weight.copy_(randn(net.tok.weight.shape))
        net.pos.weight.copy_(randn(net.pos.weight.shape) * 0.5)
        for norm in (net.norm1, net.norm2):
            norm.weight.copy_(1.0 + 0.1 * randn(norm.weight.shape))
            norm.bias.copy_(0.1 * randn(norm.bias.shape))
        for linear in (net.mlp[0], net.mlp[2], net.head):
            gain = math.sqrt(2.0) if linear is net.mlp[0] else 1.0
            linear.weight.copy_(randn(linear.weight.shape) * (gain / math.sqrt(linear.in_features)))
            linear.bias.copy_(0.1 * randn(linear.bias.shape))
    return net.eval()

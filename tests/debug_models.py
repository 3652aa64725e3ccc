"""Models with planted defects for `deployval debug`, importable as `debug_models:NAME` (tests/ is on
sys.path). Each defect sits in a middle layer and only exists in the exported graph (a branch on
`torch.onnx.is_in_onnx_export()`, the way exporter-only code paths go wrong in practice), except
`nan_guard`, whose difference is ONNX Runtime's own (see there), and the models of section 6, which
have none: their graphs are rewritten (ops merged into a conv), and nothing may be blamed. All run in
milliseconds."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import deployval


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


# ----------------------------------------------------------------------------- 1. a conv stack


class ChannelAffine(nn.Module):
    """Per-channel scale and shift (a folded normalization). The export path reads the parameters
    in reversed channel order: the BGR/RGB-style mix-up."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, channels))
        self.bias = nn.Parameter(torch.linspace(-0.2, 0.2, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if _exporting():
            weight, bias = weight.flip(0), bias.flip(0)  # the defect
        return x * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


class ConvStack(nn.Module):
    """conv → relu → conv → relu → ChannelAffine (the defect) → conv → relu → pool → linear; one
    ReLU module shared by every stage (called three times)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            ChannelAffine(8),
            nn.Conv2d(8, 8, 3, padding=1),
        )
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.features(x))
        x = self.act(x.mean(dim=(2, 3)))
        return self.act(self.head(x))


def conv_stack() -> nn.Module:
    torch.manual_seed(0)
    return ConvStack().eval()


# ----------------------------------------------------------------------------- 2. attention blocks


class Attention(nn.Module):
    """Single-head self-attention. The export path scales the scores by 1/d instead of 1/sqrt(d)."""

    def __init__(self, dim: int, defect: bool = False) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dim = dim
        self.defect = defect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scale = 1.0 / self.dim if self.defect and _exporting() else 1.0 / math.sqrt(self.dim)  # the defect
        weights = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)
        return self.proj(weights @ v)


class Block(nn.Module):
    def __init__(self, dim: int, defect: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, defect)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """Three pre-norm blocks over 12 tokens; the defect is in blocks.1.attn's own code (between its
    qkv and proj layers), which only a comparison of the enclosing module can show."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.blocks = nn.ModuleList(Block(dim, defect=(i == 1)) for i in range(3))
        self.head = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def tiny_transformer() -> nn.Module:
    torch.manual_seed(0)
    return TinyTransformer().eval()


# ----------------------------------------------------------------------------- 3. a small U-Net


class Upsample2x(nn.Module):
    """Bilinear x2. The export path uses align_corners=True (the classic Resize mismatch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=_exporting())  # the defect


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class TinyUNet(nn.Module):
    """Two levels, skip connection, the defect in decoder.up (a leaf module in the middle)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = _double_conv(1, 8)
        self.down = nn.MaxPool2d(2)
        self.enc2 = _double_conv(8, 16)
        self.decoder = nn.ModuleDict({"up": Upsample2x(), "reduce": nn.Conv2d(16, 8, 1),
                                      "fuse": _double_conv(16, 8)})
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc1(x)
        x = self.enc2(self.down(skip))
        x = self.decoder["reduce"](self.decoder["up"](x))
        x = self.decoder["fuse"](torch.cat((x, skip), dim=1))
        return self.head(x)


def tiny_unet() -> nn.Module:
    torch.manual_seed(0)
    model = TinyUNet()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


# ----------------------------------------------------------------------------- 4. code between modules


class Between(nn.Module):
    """An activation written as a function call in the model's own forward, between two modules:
    no hook sees it. The export path swaps SiLU for hard-swish (a common "mobile-friendly" edit)."""

    def __init__(self, use_marks: bool) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1))
        self.dec = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
        self.use_marks = use_marks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.enc(x)
        if self.use_marks:
            h = deployval.debug.mark(h, "encoded")
        h = F.hardswish(h) if _exporting() else F.silu(h)  # the defect
        if self.use_marks:
            h = deployval.debug.mark(h, "activated")
        return self.dec(h)


def between_marked() -> nn.Module:
    torch.manual_seed(0)
    return Between(use_marks=True).eval()


def between_unmarked() -> nn.Module:
    torch.manual_seed(0)
    return Between(use_marks=False).eval()


def between_fixed() -> nn.Module:
    """The same network without the defect, with its marks: passes, and its export has no markers."""

    class Fixed(Between):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = deployval.debug.mark(self.enc(x), "encoded")
            h = deployval.debug.mark(F.silu(h), "activated")
            return self.dec(h)

    torch.manual_seed(0)
    return Fixed(use_marks=True).eval()


# ----------------------------------------------------------------------------- 5. a runtime difference


class NanSafeMax(nn.Module):
    """Global max pooling that maps channels holding NaN to 0: `amax` propagates NaN (torch, numpy,
    the ONNX spec's "similar to numpy", onnx.reference), then `nan_to_num`. ONNX Runtime's CPU
    ReduceMax (1.31) skips NaN instead, so the guard never fires there. Nothing is planted: the
    exported graph is right, the runtime computes something else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(torch.amax(x, dim=(2, 3)), nan=0.0)


class SqrtFeatures(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x)  # NaN where the features are negative: the signal the guard looks for


class NanGuard(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.features = SqrtFeatures()
        self.pool = NanSafeMax()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(self.conv(x))))


def nan_guard() -> nn.Module:
    torch.manual_seed(0)
    return NanGuard().eval()


# ----------------------------------------------------------------------------- 6. ops merged into a conv


def _non_trivial_statistics(norm: nn.BatchNorm2d, generator: torch.Generator) -> None:
    """Running statistics far from (0, 1), so that a value before the norm and after it differ a lot."""
    channels = norm.num_features
    norm.weight.data = torch.rand(channels, generator=generator) * 2.5 + 0.5
    norm.bias.data = torch.rand(channels, generator=generator) * 4 - 2
    norm.running_mean.data = torch.rand(channels, generator=generator) * 2 - 1
    norm.running_var.data = torch.rand(channels, generator=generator) * 0.45 + 0.05


class ConvBnRelu(nn.Module):
    """conv → batch norm → relu, twice: the exporter folds each norm into its conv."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        for norm in (self.bn1, self.bn2):
            _non_trivial_statistics(norm, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


def conv_bn_relu() -> nn.Module:
    torch.manual_seed(0)
    return ConvBnRelu().eval()


class ChannelScale(nn.Module):
    """A frozen per-channel scale (x * s): the exporter keeps the Mul, onnx-simplifier merges it into
    the conv before it and keeps the conv's output name."""

    def __init__(self, channels: int, generator: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("scale", torch.rand(channels, generator=generator) * 2.5 + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1)


class ConvScaleConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.conv1, self.scale, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), ChannelScale(8, generator), \
            nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.scale(self.conv1(x)))


def conv_scale_conv() -> nn.Module:
    torch.manual_seed(0)
    return ConvScaleConv().eval()

"""A learned image codec in the style of CompressAI's bmshj2018-hyperprior (Ballé et al. 2018,
"Variational image compression with a scale hyperprior"), written from scratch and small:

    y = g_a(x)                          analysis transform: 4 strided 5x5 convs with GDN
    z = h_a(|y|)                        hyper-analysis: 3x3 conv, two strided 5x5 convs, ReLU
    z_hat = entropy_bottleneck(z)       round(z - m) + m, m = the channel medians (quantiles[:, :, 1])
    scales_hat = h_s(z_hat)             hyper-synthesis: two transposed convs and a 3x3 conv, ReLU
    y_hat, y_likelihoods = gaussian_conditional(y, scales_hat)   round(y); Gaussian bin likelihoods
    x_hat = g_s(y_hat)                  synthesis transform: 4 transposed convs with inverse GDN

forward(x) returns (x_hat, y_likelihoods, z_hat) for a 1x3x64x64 image in [0, 1): x_hat 1x3x64x64,
y_likelihoods 1x48x4x4, z_hat 1x32x1x1. Deterministic (rounding is half-to-even in torch and in ONNX).

The sub-modules are what a deployment splits a codec into (encoder: g_a, h_a and the bottleneck;
decoder: h_s and g_s), so the spec lists them with their own input shapes (`SUBMODULES`) for
sub-module validation. The CompressAI incident this mirrors: the exported pieces dropped the
dequantization with the medians, so the hyper-decoder got round(z) instead of round(z - m) + m and
the entropy model (scales, likelihoods) went wrong; a real decoder then decodes y with the wrong
scales. `build(export_drops_medians=True)` (or `build_without_medians`) gives a bottleneck whose
*export* does exactly that: validated whole, z_hat and y_likelihoods fail without saying why;
validated per sub-module, `entropy_bottleneck` fails and the other four pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import HYPERPRIOR_IMAGE as IMAGE  # noqa: F401 (re-exported)
from . import HYPERPRIOR_M as M
from . import HYPERPRIOR_N as N
from . import HYPERPRIOR_SUBMODULES as SUBMODULES  # noqa: F401 (re-exported for callers and tests)

SCALE_MIN = 0.11  # CompressAI's lower bound on the Gaussian scales
# A trained codec's latents span several quantization bins and its reconstruction the image range;
# these gains give random weights the same character (y std ~3, x_hat within a few units).
OUTPUT_GAINS = {"g_a.6": 8.0, "h_a.4": 2.0, "g_s.0": 0.15, "g_s.6": 0.3}


class GDN(nn.Module):
    """Generalized divisive normalization: y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2); the
    inverse (IGDN) multiplies instead. Parameters are kept positive directly (no reparametrization)."""

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        norm = F.conv2d(x * x, self.gamma.view(channels, channels, 1, 1), self.beta)
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))


def _conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def _deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1)


class EntropyBottleneck(nn.Module):
    """The factorized prior's quantizer at inference: z_hat = round(z - medians) + medians, the
    medians being `quantiles[:, :, 1:2]` (CompressAI keeps the learned 0.5-quantile there)."""

    def __init__(self, channels: int, export_drops_medians: bool = False) -> None:
        super().__init__()
        self.quantiles = nn.Parameter(torch.zeros(channels, 1, 3))
        self.export_drops_medians = export_drops_medians

    def medians(self) -> torch.Tensor:
        return self.quantiles[:, :, 1:2].reshape(1, -1, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.export_drops_medians and torch.onnx.is_in_onnx_export():
            return torch.round(z)  # the deployment bug: the dequantization with the medians is lost
        medians = self.medians()
        return torch.round(z - medians) + medians


class GaussianConditional(nn.Module):
    """y_hat = round(y) (no means), and the likelihood of each quantization bin under a zero-mean
    Gaussian of the hyper-decoded scale: Phi((0.5 - |y_hat|) / s) - Phi((-0.5 - |y_hat|) / s).
    Phi is written with erf (CompressAI uses erfc, which the legacy ONNX exporter cannot export)."""

    def forward(self, y: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y_hat = torch.round(y)
        scales = torch.clamp(scales, min=SCALE_MIN) * math.sqrt(2.0)
        values = torch.abs(y_hat)
        upper = 0.5 * (1.0 + torch.erf((0.5 - values) / scales))
        lower = 0.5 * (1.0 + torch.erf((-0.5 - values) / scales))
        return y_hat, torch.clamp(upper - lower, min=1e-9)


class HyperpriorCodec(nn.Module):
    def __init__(self, export_drops_medians: bool = False) -> None:
        super().__init__()
        self.g_a = nn.Sequential(_conv(3, N), GDN(N), _conv(N, N), GDN(N), _conv(N, N), GDN(N), _conv(N, M))
        self.g_s = nn.Sequential(_deconv(M, N), GDN(N, inverse=True), _deconv(N, N), GDN(N, inverse=True),
                                 _deconv(N, N), GDN(N, inverse=True), _deconv(N, 3))
        self.h_a = nn.Sequential(_conv(M, N, 3, 1), nn.ReLU(), _conv(N, N), nn.ReLU(), _conv(N, N))
        self.h_s = nn.Sequential(_deconv(N, N), nn.ReLU(), _deconv(N, N), nn.ReLU(), _conv(N, M, 3, 1), nn.ReLU())
        self.entropy_bottleneck = EntropyBottleneck(N, export_drops_medians)
        self.gaussian_conditional = GaussianConditional()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.g_a(x)
        z = self.h_a(torch.abs(y))
        z_hat = self.entropy_bottleneck(z)
        scales_hat = self.h_s(z_hat)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales_hat)
        return self.g_s(y_hat), y_likelihoods, z_hat


@torch.no_grad()
def _init(net: HyperpriorCodec, generator: torch.Generator) -> None:
    """Variance-preserving convs (He for the ReLU stacks), non-zero biases, GDN parameters away from
    their identity values, and medians that are not integers (so losing them changes z_hat)."""
    for name, module in net.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            transposed = isinstance(module, nn.ConvTranspose2d)
            fan_in = (module.out_channels if transposed else module.in_channels) * math.prod(module.kernel_size)
            if transposed:
                fan_in = max(1, fan_in // math.prod(module.stride))
            gain = math.sqrt(2.0) if name.startswith(("h_a", "h_s")) else 1.0
            gain *= OUTPUT_GAINS.get(name, 1.0)
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * gain / math.sqrt(fan_in))
            module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.05)
        elif isinstance(module, GDN):
            channels = module.beta.numel()
            module.beta.copy_(1.0 + 0.2 * torch.rand(channels, generator=generator))
            off = 0.01 * torch.rand(channels, channels, generator=generator)
            module.gamma.copy_(0.1 * torch.eye(channels) + off)
        elif isinstance(module, EntropyBottleneck):
            medians = torch.rand(N, generator=generator) * 0.8 - 0.4
            spread = 2.0 + torch.rand(N, generator=generator)
            module.quantiles.copy_(torch.stack((medians - spread, medians, medians + spread), dim=-1).view(N, 1, 3))


def build(seed: int = 0, export_drops_medians: bool = False) -> nn.Module:
    """The codec in eval mode, weights drawn from `seed` alone (the global RNG is untouched)."""
    with torch.device("meta"):
        net = HyperpriorCodec(export_drops_medians)
    net = net.to_empty(device="cpu")
    _init(net, torch.Generator().manual_seed(int(seed)))
    return net.eval()


def build_without_medians(seed: int = 0) -> nn.Module:
    """The CompressAI-style deployment bug: the exported bottleneck rounds z without the medians."""
    return build(seed, export_drops_medians=True)

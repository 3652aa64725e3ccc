"""nnU-Net v1 3d_fullres-style network (Generic_UNet layout), written from scratch.

The module tree mirrors nnU-Net v1's attribute names exactly, so a real
`model_final_checkpoint.model` loads with strict=True and exported graphs can be compared
against the trained network. Only the parts a 3d_fullres plan uses are implemented:
strided-conv downsampling, transposed-conv upsampling, no dropout, identity final nonlinearity
(logits), optional deep-supervision outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ...errors import UsageError, first_line

IN_CHANNELS = 1
NUM_CLASSES = 14
BASE_FEATURES = 32
MAX_FEATURES = 320
CONVS_PER_STAGE = 2
# One kernel per downsampling; the product per axis (16, 16, 16) is what input sizes must divide by.
POOL_KERNELS: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 1, 1))
NEGATIVE_SLOPE = 1e-2
NORM_EPS = 1e-5

_Triple = tuple[int, int, int]


class ConvNormNonlin(nn.Module):
    """conv -> instance norm -> leaky ReLU, named like nnU-Net's ConvDropoutNormNonlin.

    nnU-Net registers no dropout module when p == 0, so none exists here either (its key set
    would otherwise differ). The activation is not in-place so that hooks capturing the norm's
    output for layer-wise comparison see the pre-activation values.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: _Triple = (1, 1, 1)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=True)
        self.instnorm = nn.InstanceNorm3d(out_channels, eps=NORM_EPS, affine=True)
        self.lrelu = nn.LeakyReLU(NEGATIVE_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lrelu(self.instnorm(self.conv(x)))


class StackedConvs(nn.Module):
    """`num_convs` conv blocks under `.blocks`, the first optionally strided (nnU-Net's
    StackedConvLayers): the extra `.blocks` level is part of the checkpoint key names."""

    def __init__(
        self, in_channels: int, out_channels: int, num_convs: int, first_stride: _Triple | None = None
    ) -> None:
        super().__init__()
        self.output_channels = out_channels
        first = ConvNormNonlin(in_channels, out_channels, first_stride or (1, 1, 1))
        rest = [ConvNormNonlin(out_channels, out_channels) for _ in range(num_convs - 1)]
        self.blocks = nn.Sequential(first, *rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class GenericUNet(nn.Module):
    """U-Net with nnU-Net v1's module names: `conv_blocks_context` (encoder, the last entry being
    the bottleneck), `tu` (transposed convs), `conv_blocks_localization` (decoder) and
    `seg_outputs` (one 1x1x1 head per decoder stage, lowest resolution first).

    With `do_ds` False (the export setting) forward returns the full-resolution logits only;
    with it True it returns nnU-Net's deep-supervision tuple, full resolution first.
    """

    __jit_unused_properties__ = ["size_divisor"]  # noqa: RUF012  (TorchScript reads this name)

    def __init__(
        self,
        in_channels: int = IN_CHANNELS,
        num_classes: int = NUM_CLASSES,
        base_features: int = BASE_FEATURES,
        max_features: int = MAX_FEATURES,
        pool_kernels: Sequence[_Triple] = POOL_KERNELS,
        convs_per_stage: int = CONVS_PER_STAGE,
    ) -> None:
        super().__init__()
        if convs_per_stage < 2:
            raise UsageError("fine_organs: convs_per_stage must be at least 2 (the bottleneck splits its convs)")
        pools = [tuple(int(k) for k in p) for p in pool_kernels]
        self.pool_kernels = pools
        self.num_classes = num_classes
        self.do_ds = False
        # nnU-Net keeps both flags: the heads exist because the net was trained with deep supervision.
        self._deep_supervision = True

        features = [min(base_features * 2**d, max_features) for d in range(len(pools) + 1)]
        self.conv_blocks_context = nn.ModuleList()
        for d in range(len(pools)):
            stride = pools[d - 1] if d > 0 else None
            in_ch = in_channels if d == 0 else features[d - 1]
            self.conv_blocks_context.append(StackedConvs(in_ch, features[d], convs_per_stage, stride))
        # Bottleneck: nnU-Net splits its convs into two stacks (the second would change the width
        # for non-transposed-conv upsampling); the key names keep that split.
        self.conv_blocks_context.append(
            nn.Sequential(
                StackedConvs(features[-2], features[-1], convs_per_stage - 1, pools[-1]),
                StackedConvs(features[-1], features[-1], 1),
            )
        )

        self.tu = nn.ModuleList()
        self.conv_blocks_localization = nn.ModuleList()
        self.seg_outputs = nn.ModuleList()
        down = features[-1]
        for u in range(len(pools)):
            skip = features[-(u + 2)]
            kernel = pools[-(u + 1)]
            self.tu.append(nn.ConvTranspose3d(down, skip, kernel_size=kernel, stride=kernel, bias=False))
            self.conv_blocks_localization.append(
                nn.Sequential(
                    StackedConvs(2 * skip, skip, convs_per_stage - 1),
                    StackedConvs(skip, skip, 1),
                )
            )
            self.seg_outputs.append(nn.Conv3d(skip, num_classes, kernel_size=1, bias=False))
            down = skip

    @property
    def size_divisor(self) -> tuple[int, ...]:
        """What every spatial input size must be a multiple of (the pooling product per axis)."""
        return tuple(math.prod(p[i] for p in self.pool_kernels) for i in range(3))

    def forward(self, x: torch.Tensor) -> Any:
        """Logits (Tensor), or with do_ds the deep-supervision tuple (a list under TorchScript).

        Annotated Any because TorchScript has no type for a tuple of run-time length.
        """
        skips: list[torch.Tensor] = []
        for d, stage in enumerate(self.conv_blocks_context):
            x = stage(x)
            if d < len(self.conv_blocks_context) - 1:
                skips.append(x)
        heads: list[torch.Tensor] = []
        last = len(self.tu) - 1
        decoder = zip(self.tu, self.conv_blocks_localization, self.seg_outputs, strict=True)
        for u, (up, local, head) in enumerate(decoder):
            x = up(x)
            x = torch.cat((x, skips[-(u + 1)]), dim=1)  # upsampled first, as nnU-Net v1 does
            x = local(x)
            # Lower-resolution heads only matter for deep supervision; skip them for export.
            if self.do_ds or u == last:
                heads.append(head(x))
        if self.do_ds:
            # nnU-Net's upscale_logits_ops are identities: full resolution first, then coarser.
            heads.reverse()
            if torch.jit.is_scripting():
                return heads  # TorchScript cannot build a tuple of run-time length
            return tuple(heads)
        return heads[-1]


def _fan_in(weight: torch.Tensor, transposed: bool, stride: Sequence[int]) -> int:
    if transposed:
        # Each output voxel of a kernel == stride transposed conv sees one input voxel per channel.
        return max(1, weight.shape[0] * math.prod(weight.shape[2:]) // math.prod(stride))
    return weight.shape[1] * math.prod(weight.shape[2:])


@torch.no_grad()
def _init_weights(net: nn.Module, generator: torch.Generator) -> None:
    """He-normal convs (what nnU-Net's InitWeights_He does), plus small non-zero biases and
    affine parameters away from (1, 0), so no exporter can fold them away as identities."""
    gain = math.sqrt(2.0 / (1.0 + NEGATIVE_SLOPE**2))
    done: set[int] = set()
    for module in net.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            transposed = isinstance(module, nn.ConvTranspose3d)
            fan_in = _fan_in(module.weight, transposed, module.stride)
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (gain / math.sqrt(fan_in)))
            done.add(id(module.weight))
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
                done.add(id(module.bias))
        elif isinstance(module, nn.InstanceNorm3d) and module.affine:
            module.weight.copy_(1.0 + 0.1 * torch.randn(module.weight.shape, generator=generator))
            module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            done.update((id(module.weight), id(module.bias)))
    missed = [name for name, p in net.named_parameters() if id(p) not in done]
    if missed:  # a parameter left as uninitialised memory would make runs irreproducible
        raise RuntimeError(f"fine_organs: no initialiser for {', '.join(missed[:5])}")


def build(seed: int = 0) -> nn.Module:
    """The network in eval mode, do_ds off, with weights drawn from `seed` alone.

    Modules are created on the meta device so construction neither spends time on default
    initialisation nor touches the global RNG; every parameter is then drawn from a local
    generator.
    """
    with torch.device("meta"):
        net = GenericUNet()
    net = net.to_empty(device="cpu")
    _init_weights(net, torch.Generator().manual_seed(int(seed)))
    net.do_ds = False
    return net.eval()


# ------------------------------------------------------------------------------ checkpoints


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape) or "scalar"


def _listing(what: str, items: list[str], limit: int = 5) -> str:
    """'2 missing keys (a, b)'; `what` is "singular|plural"."""
    singular, _, plural = what.partition("|")
    what = singular if len(items) == 1 else plural
    shown = ", ".join(items[:limit])
    more = f", … and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} {what} ({shown}{more})"


def _extract_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, nn.Module):
        checkpoint = checkpoint.state_dict()
    if not isinstance(checkpoint, Mapping):
        raise UsageError(
            "fine_organs checkpoint: expected a dict (an nnU-Net checkpoint or a state_dict), "
            f"got {type(checkpoint).__name__}"
        )
    if "network_weights" in checkpoint and "state_dict" not in checkpoint:
        raise UsageError(
            "fine_organs checkpoint: this looks like an nnU-Net v2 checkpoint ('network_weights'); "
            "fine_organs has the nnU-Net v1 Generic_UNet layout, whose parameter names differ"
        )
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise UsageError(f"fine_organs checkpoint: 'state_dict' is a {type(state).__name__}, not a dict")
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        keys = ", ".join(str(k) for k in list(checkpoint)[:8])
        raise UsageError(
            f"fine_organs checkpoint: no state_dict found ({_listing('non-tensor entry|non-tensor entries', bad)}; "
            f"top-level keys: {keys})"
        )
    # DataParallel prefixes every key with "module."; nnU-Net strips it the same way when loading.
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def load_checkpoint(module: nn.Module, checkpoint: Any) -> None:
    """Load an nnU-Net v1 checkpoint (or a bare state_dict) strictly.

    Any mismatch becomes one UsageError line naming the missing and unexpected keys and the
    shape mismatches, instead of torch's multi-line RuntimeError.
    """
    state = _extract_state_dict(checkpoint)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {_shape(v.shape)} vs model {_shape(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [
            _listing(what, items)
            for what, items in (
                ("missing key|missing keys", missing),
                ("unexpected key|unexpected keys", unexpected),
                ("shape mismatch|shape mismatches", mismatched),
            )
            if items
        ]
        hint = ""
        heads = [v for k, v in state.items() if k.startswith("seg_outputs.") and k.endswith(".weight")]
        num_classes = getattr(module, "num_classes", None)
        if heads and num_classes is not None and heads[0].shape[0] != num_classes:
            hint = f" (the checkpoint predicts {heads[0].shape[0]} classes, the model {num_classes})"
        raise UsageError(f"fine_organs checkpoint does not fit the model{hint}: " + "; ".join(parts))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied; keep the report to one line
        raise UsageError(f"fine_organs checkpoint could not be loaded: {first_line(exc, named=False)}") from None

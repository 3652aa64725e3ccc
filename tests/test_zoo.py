"""The zoo models: they build reproducibly, run at their catalog shapes, and fine_organs keeps
nnU-Net v1's checkpoint layout so real checkpoints load."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from torch import nn

from deployval.catalog.zoo import ZOO
from deployval.errors import UsageError
from deployval.model.spec import ModelSpec

# fine_organs at full size takes ~20 s on two cores; this still passes all five poolings
# (bottleneck 2x2x2) and keeps every decoder stage's concat shape-checked.
SMALL_ORGANS_SHAPE = (1, 1, 32, 32, 32)
NNUNET_KEYS = (
    "conv_blocks_context.0.blocks.0.conv.weight",
    "conv_blocks_context.0.blocks.1.instnorm.bias",
    "conv_blocks_context.4.blocks.0.conv.bias",
    "conv_blocks_context.5.0.blocks.0.conv.weight",
    "conv_blocks_context.5.0.blocks.0.instnorm.weight",
    "conv_blocks_context.5.1.blocks.0.instnorm.bias",
    "conv_blocks_localization.0.0.blocks.0.conv.weight",
    "conv_blocks_localization.4.1.blocks.0.conv.weight",
    "tu.0.weight",
    "tu.4.weight",
    "seg_outputs.0.weight",
    "seg_outputs.4.weight",
)


def _resolve(path: str | None):
    assert isinstance(path, str)
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _factory(spec: ModelSpec):
    return _resolve(spec.factory)


def _inputs(spec: ModelSpec, seed: int = 0, shape: tuple[int, ...] | None = None) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tensors = []
    for inp in spec.inputs:
        size = shape or inp.shape
        if inp.is_integer:
            dtype = getattr(torch, inp.dtype)
            tensors.append(torch.randint(int(inp.low), int(inp.high), size, generator=g, dtype=dtype))
        else:
            tensors.append(torch.rand(size, generator=g) * (inp.high - inp.low) + inp.low)
    return tensors


def _run(model: nn.Module, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        out = model(*inputs)
    return out if isinstance(out, tuple) else (out,)


@pytest.fixture(scope="module")
def organs() -> nn.Module:
    return _factory(ZOO["fine_organs"])(seed=0)


@pytest.fixture(scope="module")
def organs_input() -> torch.Tensor:
    spec = ZOO["fine_organs"]
    spec.inputs[0].check_shape(SMALL_ORGANS_SHAPE)
    return _inputs(spec, shape=SMALL_ORGANS_SHAPE)[0]


@pytest.mark.parametrize("name", ["srcnn", "convs", "tagger"])
def test_small_models_build_and_forward(name: str) -> None:
    spec = ZOO[name]
    rng = torch.get_rng_state()
    model = _factory(spec)(seed=0)
    assert torch.equal(torch.get_rng_state(), rng), "building must not touch the global RNG"
    assert not model.training
    outputs = _run(model, _inputs(spec))
    assert len(outputs) == len(spec.output_names or ())
    for out in outputs:
        if out.is_floating_point():
            assert out.dtype == torch.float32 and torch.isfinite(out).all()
            assert 0.05 < out.std().item() < 20


@pytest.mark.parametrize("name", ["srcnn", "convs", "tagger"])
def test_small_models_are_deterministic_per_seed(name: str) -> None:
    build = _factory(ZOO[name])
    a, b, c = build(seed=0).state_dict(), build(seed=0).state_dict(), build(seed=1).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", ["srcnn", "convs", "tagger", "fine_organs"])
def test_biases_and_affine_params_are_nontrivial(name: str, organs: nn.Module) -> None:
    model = organs if name == "fine_organs" else _factory(ZOO[name])(seed=0)
    for module_name, module in model.named_modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            assert (bias != 0).all(), f"{module_name}.bias has zeros"
        if isinstance(module, (nn.LayerNorm, nn.InstanceNorm3d)):
            assert not torch.allclose(module.weight, torch.ones_like(module.weight)), module_name
            assert (module.weight - 1).abs().max() < 0.6


def test_srcnn_upscales_three_times() -> None:
    spec = ZOO["srcnn"]
    (out,) = _run(_factory(spec)(seed=0), _inputs(spec))
    n, c, h, w = spec.inputs[0].shape
    assert out.shape == (n, c, 3 * h, 3 * w) == (1, 3, 768, 768)


def test_convs_shape() -> None:
    spec = ZOO["convs"]
    model = _factory(spec)(seed=0)
    assert [name for name, _ in model.named_children()] == ["convs1", "convs2", "convs3", "convs4"]
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 12
    (out,) = _run(model, _inputs(spec))
    assert out.shape == spec.inputs[0].shape


def test_tagger_outputs() -> None:
    spec = ZOO["tagger"]
    model = _factory(spec)(seed=0)
    (tokens,) = _inputs(spec)
    logits, tags = _run(model, [tokens])
    assert tokens.dtype == torch.int64
    assert logits.shape == (*tokens.shape, 17) and logits.dtype == torch.float32
    assert tags.dtype == torch.int64 and torch.equal(tags, logits.argmax(-1))
    assert tags.unique().numel() > 3
    # the longest supported sequence, and a batch
    logits, tags = _run(model, [torch.randint(0, 1000, (2, 128))])
    assert logits.shape == (2, 128, 17) and tags.shape == (2, 128)


def test_fine_organs_forward(organs: nn.Module, organs_input: torch.Tensor) -> None:
    assert not organs.training and organs.do_ds is False
    (out,) = _run(organs, [organs_input])
    assert out.shape == (1, 14, *SMALL_ORGANS_SHAPE[2:]) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert 0.5 < out.std().item() < 5
    assert out.argmax(1).unique().numel() >= 4


def test_fine_organs_deep_supervision(organs: nn.Module, organs_input: torch.Tensor) -> None:
    organs.do_ds = True
    try:
        outs = _run(organs, [organs_input])
    finally:
        organs.do_ds = False
    assert len(outs) == 5
    assert [tuple(o.shape[2:]) for o in outs] == [(32, 32, 32), (32, 16, 16), (16, 8, 8), (8, 4, 4), (4, 2, 2)]
    (full,) = _run(organs, [organs_input])
    assert torch.equal(outs[0], full)


def test_fine_organs_build_is_deterministic(organs: nn.Module) -> None:
    rng = torch.get_rng_state()
    build = _factory(ZOO["fine_organs"])
    again, other = build(seed=0).state_dict(), build(seed=1).state_dict()
    assert torch.equal(torch.get_rng_state(), rng), "building must not touch the global RNG"
    ref = organs.state_dict()
    assert all(torch.equal(ref[k], again[k]) for k in ref)
    assert all(not torch.equal(ref[k], other[k]) for k in ref)


def test_fine_organs_nnunet_layout(organs: nn.Module) -> None:
    keys = set(organs.state_dict())
    assert set(NNUNET_KEYS) <= keys
    assert not any("dropout" in k for k in keys)
    assert not any(k.startswith("conv_blocks_context.6") or k.startswith("tu.5") for k in keys)
    sd = organs.state_dict()
    assert sd["tu.0.weight"].shape == (320, 320, 2, 1, 1)
    assert sd["conv_blocks_localization.0.0.blocks.0.conv.weight"].shape[:2] == (320, 640)
    assert sd["seg_outputs.4.weight"].shape == (14, 32, 1, 1, 1)
    n_params = sum(p.numel() for p in organs.parameters())
    assert abs(n_params - 30.6e6) < 0.01 * 30.6e6


@pytest.mark.parametrize("prefix", ["", "module."])
def test_fine_organs_checkpoint_round_trip(
    prefix: str, organs: nn.Module, organs_input: torch.Tensor, tmp_path: Path
) -> None:
    spec = ZOO["fine_organs"]
    load = _resolve(spec.checkpoint_loader)  # type: ignore[arg-type]
    sd = {prefix + k: v for k, v in organs.state_dict().items()}
    path = tmp_path / "model_final_checkpoint.model"
    torch.save({"state_dict": sd, "epoch": 1, "plot_stuff": ([0.1], [0.2])}, path)
    fresh = _factory(spec)(seed=1)
    load(fresh, torch.load(path, weights_only=True))
    (expected,) = _run(organs, [organs_input])
    (got,) = _run(fresh, [organs_input])
    assert torch.equal(expected, got)


def test_fine_organs_bare_state_dict_loads(organs: nn.Module) -> None:
    from deployval.catalog.zoo.fine_organs import load_checkpoint

    fresh = _factory(ZOO["fine_organs"])(seed=2)
    load_checkpoint(fresh, organs.state_dict())
    assert torch.equal(fresh.state_dict()["tu.0.weight"], organs.state_dict()["tu.0.weight"])


def test_fine_organs_bad_checkpoint_is_one_usage_line(organs: nn.Module) -> None:
    from deployval.catalog.zoo.fine_organs import load_checkpoint

    sd = dict(organs.state_dict())
    del sd["tu.3.weight"]
    sd["seg_outputs.5.weight"] = torch.zeros(14, 32, 1, 1, 1)
    sd["conv_blocks_context.0.blocks.0.conv.weight"] = torch.zeros(32, 2, 3, 3, 3)
    with pytest.raises(UsageError) as info:
        load_checkpoint(organs, {"state_dict": sd})
    message = str(info.value)
    assert "\n" not in message
    assert "missing" in message and "tu.3.weight" in message
    assert "unexpected" in message and "seg_outputs.5.weight" in message
    assert "conv_blocks_context.0.blocks.0.conv.weight: checkpoint 32x2x3x3x3 vs model 32x1x3x3x3" in message
    # the model was left untouched
    assert organs.state_dict()["conv_blocks_context.0.blocks.0.conv.weight"].abs().sum() > 0


def test_fine_organs_checkpoint_without_state_dict(organs: nn.Module) -> None:
    from deployval.catalog.zoo.fine_organs import load_checkpoint

    with pytest.raises(UsageError, match="no state_dict"):
        load_checkpoint(organs, {"epoch": 3, "plot_stuff": ([0.1], [0.2])})

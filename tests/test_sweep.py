"""Weight fake-quantization sweep: the quantizer's arithmetic, the sweep's trends, the command."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from deployval.catalog.registry import resolve_model
from deployval.model.inputs import make_inputs
from deployval.model.loading import build_module
from deployval.precision.sweep import fake_quantize_weight, quantizable_layers, weight_sweep


def test_fake_quantization_rounds_to_the_symmetric_grid():
    torch.manual_seed(0)
    weight = torch.randn(6, 4, 3, 3)
    q8 = fake_quantize_weight(weight, 8, per_channel=False)
    scale = weight.abs().max() / 127
    assert (q8 - weight).abs().max() <= scale / 2 + 1e-7
    q2 = fake_quantize_weight(weight, 2, per_channel=False)
    assert set(torch.unique(torch.round(q2 / weight.abs().max())).tolist()) <= {-1.0, 0.0, 1.0}
    skewed = weight * torch.tensor([100.0, 1, 1, 1, 1, 0.01]).view(6, 1, 1, 1)
    skewed[2] = 0
    per_tensor = fake_quantize_weight(skewed, 4, per_channel=False)
    per_channel = fake_quantize_weight(skewed, 4, per_channel=True)
    assert torch.equal(per_channel[2], torch.zeros_like(skewed[2]))  # a zero channel stays zero (no 0/0)
    small = slice(3, 6)
    assert (per_channel - skewed)[small].norm() < 0.25 * (per_tensor - skewed)[small].norm()
    transposed = torch.randn(4, 6, 3, 3) * torch.tensor([1.0, 1, 1, 1, 1, 50]).view(1, 6, 1, 1)
    by_out = fake_quantize_weight(transposed, 4, per_channel=True, axis=1)
    assert (by_out - transposed)[:, :5].abs().max() <= transposed[:, :5].abs().max() / 7 / 2 + 1e-6


def test_sweep_on_the_zoo_model_shrinks_error_with_bits_and_leaves_weights_alone():
    spec = resolve_model("convs")
    module = build_module(spec)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    result = weight_sweep(module, make_inputs(spec.inputs, 0), bits=range(2, 9))
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert result.layers == len(quantizable_layers(module)) == 12
    for scheme in ("per-tensor", "per-channel"):
        errors = [r.rel_l2 for r in result.rows if r.scheme == scheme]
        assert len(errors) == 7 and errors[-1] < 0.02 < errors[0]
        assert all(later <= 1.1 * earlier for earlier, later in itertools.pairwise(errors))
    json.dumps(result.to_dict(), allow_nan=False)


def test_per_channel_beats_per_tensor_on_skewed_channels():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        model[0].weight[0] *= 100.0  # one loud channel sets the per-tensor scale...
        model[2].weight[:, 0] = 0.0  # ...and does not reach the output
    feeds = {"x": np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)}
    result = weight_sweep(model, feeds, bits=[4])
    by_scheme = {r.scheme: r.rel_l2 for r in result.rows}
    assert by_scheme["per-channel"] < 0.5 * by_scheme["per-tensor"]


def test_sweep_command_prints_the_table_and_writes_json_and_plot(cli, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib")
    report_path, plot_path = tmp_path / "sweep.json", tmp_path / "sweep.png"
    result = cli("precision", "dv_test_models:hot_layer", "--input-shape", "x=1x3x16x16", "--sweep", "--bits", "3-8",
                 "--json", report_path, "--plot", plot_path, "-q")
    assert result.code == 0, result.out + result.err
    data = json.loads(report_path.read_text())
    assert [r["bits"] for r in data["rows"]] == [3, 4, 5, 6, 7, 8] * 2 and data["layers"] == 3
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "per-channel" in result.out and "output rel L2" in result.out

"""Sensitivity analysis: layers lowered one at a time, ranked, and the smallest exclusion verified."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error

from deployval.export.mixed import half_except, half_only, matching_modules
from deployval.precision.sensitivity import Trial, prefix_lengths, search_exclusions


def test_int8_sensitivity_finds_and_verifies_the_layers_to_keep(cli, tmp_path):
    report_path = tmp_path / "s.json"
    result = cli("precision", "dv_test_models:outlier_channel", "--input-shape", "x=1x3x16x16", "-p", "int8",
                 "--json", report_path)
    assert result.code == 0, result.out + result.err
    data = json.loads(report_path.read_text())
    assert data["status"] == "fixed" and not data["baseline"]["passed"]
    by_module = {layer["module"]: layer for layer in data["layers"]}
    assert set(by_module) == {"stem", "mix", "head"}
    # Only mix reads the tensor with the outlier channel (Q/DQ go on inputs, never on a Conv's output).
    assert data["layers"][0]["module"] == "mix" and not by_module["mix"]["passed"]
    assert by_module["stem"]["passed"] and by_module["head"]["passed"]
    assert by_module["mix"]["score"] > 10 * max(by_module["stem"]["score"], by_module["head"]["score"])
    assert 400 < max(by_module["mix"]["input_ranges"].values()) < 600  # the outlier's ~500, step ~4
    assert data["proposal"] == [by_module["mix"]["layer"]] and data["op_types"] == []  # one op type: no groups
    verification = data["verification"]
    assert verification["status"] == "pass" and "--int8-exclude" in verification["reproduce"]
    assert data["apply"] in verification["reproduce"]
    assert "FIXED" in result.out and "apply with: --int8-exclude" in result.out


def test_int8_sensitivity_finds_a_culprit_without_weights(cli, tmp_path):
    """The residual Add is quantized on its shortcut input (TensorRT fuses it into the main branch's
    conv); that shortcut carries a channel of ~500, so the Add alone breaks int8."""
    report_path = tmp_path / "s.json"
    result = cli("precision", "dv_test_models:outlier_shortcut", "--input-shape", "x=1x3x16x16", "-p", "int8",
                 "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    data = json.loads(report_path.read_text())
    assert data["status"] == "fixed" and not data["baseline"]["passed"]
    top = data["layers"][0]
    assert top["op_type"] == "Add" and top["module"] is None and not top["passed"]
    assert all(layer["passed"] for layer in data["layers"][1:])  # a, b and shortcut quantize well
    assert data["proposal"] == [top["layer"]] and data["verification"]["status"] == "pass"
    groups = {group["layer"]: group for group in data["op_types"]}
    assert set(groups) == {"op:Conv", "op:Add"} and groups["op:Conv"]["passed"] and not groups["op:Add"]["passed"]
    assert "max |x| 500" in data["reason"] or "max |x| 501" in data["reason"]


def test_fp16_sensitivity_keeps_the_overflowing_layers(cli, tmp_path):
    report_path = tmp_path / "s.json"
    result = cli("precision", "dv_test_models:hot_layer", "--input-shape", "x=1x3x16x16", "-p", "fp16",
                 "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    data = json.loads(report_path.read_text())
    assert data["executor"].startswith("torch eager CPU half")
    # amplify overflows in half; norm overflows when amplify's fp32 output is cast to half for it.
    assert [layer["layer"] for layer in data["layers"][:2]] == ["amplify", "norm"]
    assert data["proposal"] == ["amplify", "norm"] and data["verification"]["status"] == "pass"
    # the prefix search (1, 2), then backward elimination tries each alone: neither suffices
    assert [len(t["kept"]) for t in data["search"]] == [1, 2, 1, 1] and data["dropped"] == []
    assert [e["layer"] for e in data["exclusions"]] == ["amplify", "norm"]
    assert all(float(e["score_without"]) > float(e["score_with"]) for e in data["exclusions"])  # inf as "inf"


def test_healthy_model_needs_no_exclusion(cli, tmp_path):
    report_path = tmp_path / "s.json"
    result = cli("precision", "convs", "-p", "fp16", "--json", report_path, "-q")
    assert result.code == 0, result.out
    data = json.loads(report_path.read_text())
    assert data["status"] == "pass" and data["proposal"] == [] and data["search"] == []
    assert len(data["layers"]) == 12 and all(layer["passed"] for layer in data["layers"])


def test_precision_command_refuses_bad_input(cli):
    assert cli("precision", "convs", "-p", "fp32", "-q").code == 2
    assert cli("precision", "convs", "--plot", "x.png", "-q").code == 2
    result = cli("precision", "convs", "--sweep", "--bits", "1-4", "-q")
    assert result.code == 2 and "bit widths go from 2 to 16" in result.err


def _trial(kept: list[str], passed: bool) -> Trial:
    return Trial(kept=kept, lowered=None, passed=passed, score=0.0 if passed else 1.0)


@pytest.mark.parametrize("needed", [1, 2, 5, 7, 20])
def test_search_finds_the_shortest_passing_prefix(needed):
    ranked = [f"l{i}" for i in range(20)]
    tried: list[int] = []

    def evaluate(kept: list[str]) -> Trial:
        tried.append(len(kept))
        return _trial(kept, len(kept) >= needed)

    proposal, trials = search_exclusions(ranked, evaluate)
    assert proposal == ranked[:needed]
    assert len(set(tried)) == len(tried) == len(trials)  # no prefix is built twice
    assert len(trials) <= 9  # 1, 2, 3, 4, 8, 16, 20, then bisection


def test_search_reports_none_when_nothing_passes():
    proposal, trials = search_exclusions(["a", "b", "c"], lambda kept: _trial(kept, False))
    assert proposal is None and [len(t.kept) for t in trials] == [1, 2, 3]
    assert prefix_lengths(40) == [1, 2, 3, 4, 8, 16, 32, 40]


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x) * 1000.0)


def test_mixed_precision_copies_run_the_asked_precisions():
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(3, 4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    mixed = half_except(net, ["b"])
    assert mixed.a.weight.dtype == torch.float16 and mixed.b[0].weight.dtype == torch.float32
    assert torch.equal(mixed.b[2].weight, net.b[2].weight)  # kept layers keep their fp32 weights exactly
    out = mixed(x.half())
    assert out.dtype == torch.float32  # b runs in fp32 and its output is not squeezed back to half
    np.testing.assert_allclose(out.detach().numpy(), net(x).detach().numpy(), rtol=2e-2, atol=2.0)
    only = half_only(net, ["a"])
    assert only.a.inner.weight.dtype == torch.float16 and only.b[0].weight.dtype == torch.float32
    assert only(x).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the original is untouched
    assert matching_modules(net, ["b*"]) == ["b"]  # inner matches are covered by the outer module


def test_torch_fp16_honours_keep_fp32(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:hot_layer", "--input-shape", "x=1x3x16x16", "-b", "torch", "-p", "fp16",
                 "--keep-fp32", "amplify", "--keep-fp32", "norm", "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    row = json.loads(report_path.read_text())["results"][0]
    assert row["status"] == "pass" and row["details"]["kept_fp32"] == ["amplify", "norm"]


def test_sensitivity_over_a_data_set_judges_every_sample(cli, tmp_path):
    """convs takes fp16 on ordinary inputs (above), but not on a sample whose activations pass fp16's
    65504: over the data set, lowering everything fails, and the failure names that sample."""
    data = tmp_path / "set"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.savez(data / "a_ordinary.npz", x=rng.random((1, 3, 32, 32), dtype=np.float32))
    np.savez(data / "b_bright.npz", x=rng.random((1, 3, 32, 32), dtype=np.float32) * 60000)
    np.savez(data / "c_small.npz", x=rng.random((1, 3, 16, 16), dtype=np.float32))  # another shape: left out
    report_path = tmp_path / "s.json"
    result = cli("precision", "convs", "-p", "fp16", "--dataset", data, "--no-verify", "--json", report_path, "-q")
    report = json.loads(report_path.read_text())
    assert report["baseline"]["samples"] == 2 and not report["baseline"]["passed"], report["baseline"]
    assert "1 of 2 inputs fail; b_bright.npz" in report["baseline"]["failures"][0]
    failing = [t for t in report["search"] if t["failures"]]  # each trial names the sample, not a layer
    assert failing and all("inputs fail; b_bright.npz:" in t["failures"][0] for t in failing), report["search"]
    assert all(layer["summary"] for layer in report["layers"])
    assert report["notes"] and report["notes"][0].startswith("1 of 3 samples could not be used")
    assert "c_small.npz" in report["notes"][0]
    assert result.code in (0, 1) and report["status"] != "pass"
    only_first = cli("precision", "convs", "-p", "fp16", "--inputs", data / "a_ordinary.npz", "--json",
                     tmp_path / "one.json", "-q")
    assert only_first.code == 0 and json.loads((tmp_path / "one.json").read_text())["status"] == "pass"


def test_sensitivity_refuses_labels(cli, tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    np.savez(data / "a.npz", x=np.zeros((1, 3, 32, 32), np.float32))
    labels = tmp_path / "labels.csv"
    labels.write_text("a.npz,0\n")
    result = cli("precision", "convs", "--dataset", data, "--labels", labels)
    assert_one_line_error(result, 2, "--labels goes with --sweep")


def _exported(cli, tmp_path, *model: str):
    """The model's ONNX file, as `deployval export` writes it."""
    assert cli("export", *model, "--out", tmp_path / "out", "--kinds", "onnx", "-q").code == 0
    return tmp_path / "out" / "model.onnx"


def test_an_onnx_files_int8_sensitivity_ends_with_a_verified_proposal(cli, tmp_path):
    """The same model as an ONNX file: the reference is ONNX Runtime fp32, the candidates its nodes, the
    module names read from its initializers; the proposal is verified on the file itself."""
    path = _exported(cli, tmp_path, "dv_test_models:outlier_channel", "--input-shape", "x=1x3x16x16")
    report_path = tmp_path / "s.json"
    result = cli("precision", path, "-p", "int8", "--json", report_path)
    assert result.code == 0, result.out + result.err
    data = json.loads(report_path.read_text())
    assert data["status"] == "fixed" and not data["baseline"]["passed"]
    assert data["layers"][0]["module"] == "mix" and len(data["layers"]) == 3
    assert data["proposal"] == [data["layers"][0]["layer"]] and data["dropped"] == []
    assert [e["layer"] for e in data["exclusions"]] == data["proposal"]
    assert data["exclusions"][0]["score_without"] > 0.1 > data["exclusions"][0]["score_with"]
    verification = data["verification"]
    assert verification["status"] == "pass"
    assert verification["reproduce"].startswith(f"deployval compare {path}")


def test_an_onnx_files_fp16_sensitivity_keeps_the_node_whose_weights_fp16_cannot_hold(cli, tmp_path):
    """A BatchNorm's running_var of 5e5 (> 65504) in an ONNX file: the fp16 conversion clamps it. Kept
    fp32 one node at a time, only that BatchNormalization matters; `--keep-fp32 node:NAME` is verified."""
    path = _exported(cli, tmp_path, "test_weight_ranges:hot_norm", "--input-shape", "x=1x3x8x8")
    report_path = tmp_path / "s.json"
    result = cli("precision", path, "-p", "fp16", "--json", report_path)
    assert result.code == 0, result.out + result.err
    data = json.loads(report_path.read_text())
    assert data["status"] == "fixed" and not data["baseline"]["passed"]
    assert data["layers"][0]["op_type"] == "BatchNormalization" and not data["layers"][0]["passed"]
    assert all(layer["passed"] for layer in data["layers"][1:])
    assert data["proposal"] == [data["layers"][0]["layer"]] and data["prefix"] == "node:"
    assert data["verification"]["status"] == "pass"
    assert f"--keep-fp32 node:{data['proposal'][0]}" in data["verification"]["reproduce"]
    assert f"apply with: --keep-fp32 node:{data['proposal'][0]}" in " ".join(result.out.split())


def test_each_subgraph_of_an_onnx_file_is_lowered_alone_and_the_hot_one_named(cli, tmp_path):
    """The dynamo exporter's nodes carry no scope; their weights name the modules, so the blocks are found:
    the stem (whose BatchNorm fp16 cannot hold) fails alone, the body passes."""
    path = _exported(cli, tmp_path, "test_weight_ranges:hot_blocks", "--input-shape", "x=1x3x8x8")
    report_path = tmp_path / "s.json"
    result = cli("precision", path, "-p", "fp16", "--json", report_path)
    assert result.code == 0, result.out + result.err
    data = json.loads(report_path.read_text())
    blocks = {block["module"]: block for block in data["subgraphs"]}
    assert sorted(blocks) == ["body", "stem"] and all(b["op_type"] == "subgraph" for b in blocks.values())
    assert not blocks["stem"]["passed"] and blocks["body"]["passed"], blocks
    modules = {layer["layer"]: layer["module"] for layer in data["layers"]}
    assert sorted(modules[m] for m in blocks["stem"]["members"]) == ["stem.0", "stem.2"]
    assert sorted(modules[m] for m in blocks["body"]["members"]) == ["body.0", "body.2"]
    assert {group["layer"] for group in data["op_types"]} == {"op:Conv", "op:BatchNormalization"}
    assert "subgraph stem (2 layers)" in " ".join(result.out.split())


def test_subgraphs_are_the_shallowest_scope_level_that_splits_the_layers():
    from deployval.precision.lowerings import MAX_SUBGRAPHS, onnx_scope, subgraphs

    names = ["/model/enc/a/Conv", "/model/enc/b/Conv", "/model/dec/MatMul", "/model/dec/c/Gemm", "/model/x/Add",
             "Gemm_7"]
    assert onnx_scope("/model/enc/a/Conv") == ("model", "enc", "a") and onnx_scope("Gemm_7") == ()
    # one scope at the top ('model'): one level down, where 'x' alone is left to the per-layer table
    assert subgraphs(names, onnx_scope) == [(("model", "enc"), names[:2]), (("model", "dec"), names[2:4])]
    assert subgraphs(["Gemm_1", "Gemm_2"], onnx_scope) == []
    many = [f"/b{i}/{j}/Conv" for i in range(MAX_SUBGRAPHS + 1) for j in range(2)]
    assert subgraphs(many, onnx_scope) == []


def test_a_keep_fp32_node_that_matches_nothing_is_one_line(cli, tmp_path):
    assert_one_line_error(cli("compare", _exported(cli, tmp_path, "convs"), "-b", "ort", "-p", "fp16",
                              "--keep-fp32", "node:no_such_node", "-q"), 2,
                          "--keep-fp32 'node:no_such_node' matches no node of the ONNX graph")


def test_a_sweep_of_an_onnx_file_fake_quantizes_its_initializers_as_torch_does_its_weights(cli, tmp_path):
    """The same model as a module and as its exported file: the same weights, so the same weight error at
    every width and scheme, and the same output error (ONNX Runtime against ONNX Runtime fp32)."""
    model = ["dv_test_models:outlier_channel", "--input-shape", "x=1x3x16x16"]
    path = _exported(cli, tmp_path, *model)
    assert cli("precision", *model, "--sweep", "--bits", "3-6", "--json", tmp_path / "t.json", "-q").code == 0
    result = cli("precision", path, "--sweep", "--bits", "3-6", "--json", tmp_path / "o.json")
    assert result.code == 0, result.out + result.err
    module, onnx_file = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("t", "o"))
    assert (onnx_file["layers"], onnx_file["parameters"]) == (module["layers"], module["parameters"]) == (3, 424)
    for a, b in zip(module["rows"], onnx_file["rows"], strict=True):
        assert (a["scheme"], a["bits"]) == (b["scheme"], b["bits"])
        assert b["weight_rel_l2"] == pytest.approx(a["weight_rel_l2"], rel=1e-6)
        assert b["rel_l2"] == pytest.approx(a["rel_l2"], rel=1e-3)
    assert "per-channel" in result.out

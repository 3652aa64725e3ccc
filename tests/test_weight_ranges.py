"""Weights fp16 cannot hold: named at once on every fp16 row (torch by module path, the fp16 ONNX by the
nodes reading them), with a --keep-fp32 value that the CLI takes and that fixes the row."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from deployval.export.fp16 import convert_fp16
from deployval.judge.weight_ranges import (
    ONNX,
    WeightFinding,
    module_findings,
    name_onnx_findings,
    tensor_findings,
)
from deployval.report.html import render_html
from deployval.report.markdown import to_markdown

pytest.importorskip("onnxruntime")

RUN = ("--input-shape", "x=1x3x16x16", "--precisions", "fp16", "--iterations", "1")


# ----------------------------------------------------------------------------- models (factories for the CLI)


class HotNorm(nn.Module):
    """Conv -> ReLU -> BatchNorm whose running_var (5e5) is beyond fp16, as in a trained pitch CNN: the
    ReLU keeps the BatchNorm from being folded into the Conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.norm.running_var.fill_(5e5)
            self.norm.running_mean.fill_(0.1)
            self.norm.weight.fill_(700.0)  # the output keeps its scale: the variance matters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.act(self.conv(x))))


def hot_norm() -> nn.Module:
    torch.manual_seed(0)
    return HotNorm().eval()


class HotBlocks(nn.Module):
    """Two blocks of two weighted layers: the `stem` holds HotNorm's BatchNorm, the `body` two Convs."""

    def __init__(self) -> None:
        super().__init__()
        hot = HotNorm()
        self.stem = nn.Sequential(hot.conv, hot.act, hot.norm)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(x))


def hot_blocks() -> nn.Module:
    torch.manual_seed(0)
    return HotBlocks().eval()


class Scale(nn.Module):
    def __init__(self, channels: int, value: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1)


class TinyGain(nn.Module):
    """A per-channel gain of 1e-8, below fp16's smallest subnormal (the exporter folds it into the Conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gain = Scale(4, 1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain(self.conv(x))


def tiny_gain() -> nn.Module:
    torch.manual_seed(0)
    return TinyGain().eval()


def _row(report: dict, backend: str) -> dict:
    return next(r for r in report["results"] if r["backend"] == backend)


def _flat(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines


# ----------------------------------------------------------------------------- pure functions


def test_tensor_findings_count_overflow_and_flush():
    values = np.array([1.0, -7e5, 70000.0, 3.0, np.inf, 0.0], np.float32)
    [over] = tensor_findings(values, "w")
    assert (over.kind, over.count, over.max_abs, over.nonzero, over.elements) == ("overflow", 2, 7e5, 5, 6)
    assert "half() makes them inf" in over.describe() and "no --keep-fp32 value" in over.describe()
    # Just above 65504 rounds to 65504 in half(): said so, not inf.
    [near] = tensor_findings(np.array([65510.0], np.float32), "w", module="m", keep_fp32=("m",))
    assert "rounds them to 65504" in near.describe() and near.describe().endswith("--keep-fp32 m keeps it fp32")
    assert tensor_findings(np.array([65504.0, -65504.0], np.float32), "w") == []


def test_flush_is_named_above_one_percent_of_the_non_zero_values():
    few = np.ones(1000, np.float32)
    few[:5] = 1e-9  # 0.5 % of the non-zero values
    assert tensor_findings(few, "w") == []
    many = np.zeros(1000, np.float32)  # zeros are not counted
    many[:100] = 1.0
    many[100:103] = -1e-9  # 3 of 103 non-zero
    [flush] = tensor_findings(many, "w", source=ONNX)
    assert (flush.kind, flush.count, flush.nonzero) == ("flush", 3, 103)
    assert "raises them to ±5.96e-08" in flush.describe()
    assert tensor_findings(np.arange(5), "ids") == []  # integers are not lowered


def test_module_findings_name_module_and_exempt_kept_modules():
    model = hot_norm()
    model.root_scale = nn.Parameter(torch.full((2,), 1e6))  # the root module cannot be kept
    found = module_findings(model)
    assert [(f.module, f.tensor, f.keep_fp32) for f in found] == [("", "root_scale", ()), ("norm", "running_var",
                                                                                           ("norm",))]
    assert found[1].count == 8 and found[1].max_abs == 5e5
    assert [f.module for f in module_findings(model, kept=["norm"])] == [""]
    nested = nn.Sequential(nn.Sequential(model.norm))
    assert module_findings(nested, kept=["0"]) == []
    assert [f.module for f in module_findings(nested)] == ["0.0"]


def test_onnx_findings_are_kept_by_module_or_op_type():
    found = [WeightFinding("w", "overflow", 1e5, 1, 1, 1, source=ONNX, nodes=("a", "b", "c"),
                           ops=("Mul", "Add", "Mul"))]
    [named] = name_onnx_findings(found, {"a": "blocks.0[x]"})
    assert named.keep_fp32 == ("blocks.0[[]x]", "op:Add", "op:Mul") and named.module == ""
    [one] = name_onnx_findings([WeightFinding("w", "overflow", 1e5, 1, 1, 1, source=ONNX, nodes=("a",),
                                              ops=("Mul",))], {"a": "m"})
    assert one.module == "m" and one.keep_fp32 == ("m",)
    assert "initializer 'w' read by node 'a' (Mul) in module 'm'" in one.describe()


def _graph(nodes, initializers, outputs=("y",)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2, 4]) for o in outputs],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_converter_names_the_nodes_reading_a_weight_in_fp16():
    big = numpy_helper.from_array(np.full((4, 1), 1e5, np.float32), "big")
    shape = numpy_helper.from_array(np.array([1, 4], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["big", "shape"], ["big_row"], name="reshape"),
             helper.make_node("Mul", ["x", "big_row"], ["m"], name="scale"),
             helper.make_node("Add", ["m", "big_row"], ["y"], name="shift"),
             helper.make_node("Sub", ["x", "big_row"], ["z"], name="kept")]
    model = _graph(nodes, [big, shape], outputs=("y", "z"))
    _, details = convert_fp16(model, node_block_list=["kept"])
    [finding] = details.weights
    # The Reshape is followed to its fp16 readers; the node kept fp32 reads the fp32 original.
    assert (finding.tensor, finding.nodes, finding.ops) == ("big", ("scale", "shift"), ("Mul", "Add"))
    assert finding.count == 4 and details.overflow == 4
    _, details = convert_fp16(model, node_block_list=["scale", "shift", "kept"])
    assert details.weights == [] and details.overflow == 0  # no fp16 reader: the weight stays fp32


def test_converter_names_constants_by_their_output():
    tiny = helper.make_tensor("v", TensorProto.FLOAT, [4], [1e-9] * 4)
    nodes = [helper.make_node("Constant", [], ["c"], name="const", value=tiny),
             helper.make_node("Mul", ["x", "c"], ["y"], name="scale")]
    _, details = convert_fp16(_graph(nodes, []))
    [finding] = details.weights
    assert (finding.tensor, finding.kind, finding.nodes) == ("c", "flush", ("scale",))


# ----------------------------------------------------------------------------- end to end


def test_overflowing_running_var_is_named_on_both_fp16_rows_and_the_suggestion_fixes_them(cli, tmp_path):
    report_path, html_path = tmp_path / "r.json", tmp_path / "r.html"
    result = cli("compare", "test_weight_ranges:hot_norm", "--backends", "torch,ort", *RUN, "--json", report_path,
                 "--html", html_path)
    assert result.code == 1, result.out + result.err
    report = json.loads(report_path.read_text())
    torch_row, ort_row = _row(report, "torch"), _row(report, "ort")
    assert torch_row["status"] == "fail" and ort_row["status"] == "fail"
    [mine] = torch_row["details"]["fp16_weights"]
    assert {"module": "norm", "tensor": "running_var", "kind": "overflow", "count": 8, "keep_fp32": ["norm"],
            "max_abs": 5e5}.items() <= mine.items()
    [onnx_side] = ort_row["details"]["fp16_weights"]
    assert {"module": "norm", "tensor": "norm.running_var", "ops": ["BatchNormalization"],
            "keep_fp32": ["norm"]}.items() <= onnx_side.items()
    out = _flat(result.out)
    assert "torch:fp16 fp16 weights: module 'norm' running_var: 8 of 8 values beyond fp16's largest 65504" in out
    assert f"ort:fp16 fp16 weights: initializer 'norm.running_var' read by node '{onnx_side['nodes'][0]}'" in out
    assert "--keep-fp32 norm keeps it fp32" in out
    assert "fp16 weights: initializer 'norm.running_var'" in _flat(result.err)  # said when the fp16 ONNX is made
    assert "<h2>fp16 weight ranges</h2>" in html_path.read_text() and "running_var" in html_path.read_text()
    assert "torch:fp16: fp16 weights: module 'norm' running_var" in to_markdown(report)
    # The suggested value, as printed: both rows pass, nothing left to name.
    fixed_path = tmp_path / "fixed.json"
    result = cli("compare", "test_weight_ranges:hot_norm", "--backends", "torch,ort", *RUN, "--json", fixed_path,
                 "--keep-fp32", *mine["keep_fp32"])
    assert result.code == 0, result.out + result.err
    fixed = json.loads(fixed_path.read_text())
    assert all(r["status"] == "pass" and r["details"]["fp16_weights"] == [] for r in fixed["results"])
    assert "fp16 weights" not in result.out and "<h2>fp16 weight ranges" not in render_html(fixed)


def test_tiny_weights_are_named_where_each_row_holds_them(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "test_weight_ranges:tiny_gain", "--backends", "torch,ort", *RUN, "--json", report_path)
    assert result.code == 1, result.out + result.err
    report = json.loads(report_path.read_text())
    # torch halves the gain module's own parameter; the exporter folded the gain into the Conv's weights.
    [mine] = _row(report, "torch")["details"]["fp16_weights"]
    assert (mine["module"], mine["tensor"], mine["kind"], mine["keep_fp32"]) == ("gain", "scale", "flush", ["gain"])
    assert "module 'gain' scale: 4 of its 4 non-zero values (100%) below fp16's smallest subnormal" in _flat(result.out)
    onnx_side = _row(report, "ort")["details"]["fp16_weights"]
    assert onnx_side and all(f["module"] == "conv" and f["keep_fp32"] == ["conv"] and f["kind"] == "flush"
                             for f in onnx_side)
    for backend, keep in (("torch", mine["keep_fp32"]), ("ort", onnx_side[0]["keep_fp32"])):
        fixed_path = tmp_path / f"{backend}.json"
        result = cli("compare", "test_weight_ranges:tiny_gain", "--backends", backend, *RUN, "--json", fixed_path,
                     *[a for k in keep for a in ("--keep-fp32", k)])
        assert result.code == 0, (backend, result.out + result.err)
        assert json.loads(fixed_path.read_text())["results"][0]["details"]["fp16_weights"] == []


def _norm_file() -> onnx.ModelProto:
    """x -> Relu -> BatchNormalization with a variance of 5e5 (and a scale to match): an ONNX file."""
    inits = [numpy_helper.from_array(np.full(4, 700.0, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(4, np.float32), "beta"),
             numpy_helper.from_array(np.full(4, 0.1, np.float32), "mean"),
             numpy_helper.from_array(np.full(4, 5e5, np.float32), "var")]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act"),
             helper.make_node("BatchNormalization", ["r", "gamma", "beta", "mean", "var"], ["y"], name="norm")]
    graph = helper.make_graph(nodes, "norm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_file_weight_is_named_by_node_and_kept_by_op_type(cli, tmp_path):
    path = tmp_path / "norm.onnx"
    onnx.save(_norm_file(), str(path))
    args = ("compare", path, "--backends", "ort", "--precisions", "fp16", "--input-shape", "x=1x4x8x8",
            "--iterations", "1")
    report_path = tmp_path / "r.json"
    result = cli(*args, "--json", report_path)
    assert result.code == 1, result.out + result.err
    [finding] = json.loads(report_path.read_text())["results"][0]["details"]["fp16_weights"]
    assert {"tensor": "var", "nodes": ["norm"], "module": "", "keep_fp32": ["op:BatchNormalization"]}.items() \
        <= finding.items()
    assert ("initializer 'var' read by node 'norm' (BatchNormalization): 4 of 4 values beyond fp16's largest 65504"
            in _flat(result.out))
    fixed_path = tmp_path / "fixed.json"
    result = cli(*args, "--json", fixed_path, "--keep-fp32", "op:BatchNormalization")
    assert result.code == 0, result.out + result.err
    assert json.loads(fixed_path.read_text())["results"][0]["details"]["fp16_weights"] == []

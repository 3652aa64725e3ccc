"""An inputs file defines the run (shapes and dtypes, every command), and --arg passes non-tensor
arguments to forward() for factories and TorchScript files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error

from deployval.errors import UsageError
from deployval.model.arguments import parse_argument, parse_arguments


def _two_inputs_file(tmp_path, batch=3):
    path = tmp_path / "in.npz"
    rng = np.random.default_rng(0)
    np.savez(path, features=rng.random((batch, 4)).astype(np.float32),
             ids=rng.integers(0, 20, size=(batch, 6)).astype(np.int64))
    return path


def test_inputs_file_defines_a_factory_run(cli, tmp_path):
    inputs = _two_inputs_file(tmp_path)
    report = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:two_inputs", "--inputs", inputs, "--backends", "torch,ort",
                 "--iterations", "1", "--json", report, "-q")
    assert result.code == 0, result.err
    data = json.loads(report.read_text())
    shapes = {i["name"]: (i["shape"], i["dtype"]) for i in data["inputs"]}
    assert shapes == {"features": ([3, 4], "float32"), "ids": ([3, 6], "int64")}
    ort = next(r for r in data["results"] if r["backend"] == "ort")
    assert ort["status"] == "pass"
    assert "--inputs" in ort["reproduce"] and "--input-shape" not in ort["reproduce"]


def test_input_shape_that_contradicts_the_file_is_one_line(cli, tmp_path):
    inputs = _two_inputs_file(tmp_path)
    result = cli("compare", "dv_test_models:two_inputs", "--inputs", inputs, "--input-shape", "features=1x4",
                 "--input-shape", "ids=3x6:int64", "-q")
    assert_one_line_error(result, 2, "differs from")
    same = cli("compare", "dv_test_models:two_inputs", "--inputs", inputs, "--input-shape", "features=3x4",
               "--backends", "torch", "--precisions", "fp32,fp16", "--iterations", "1", "-q")
    assert same.code == 0, same.err  # agreeing with the file is allowed


def test_float64_file_feeds_a_float32_model(cli, tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(1).random((2, 3, 8, 8)))  # numpy's default float64
    result = cli("compare", "dv_test_models:tiny_conv", "--inputs", tmp_path / "x.npy", "--backends", "torch,ort",
                 "--iterations", "1", "-q")
    assert result.code == 0, result.err
    assert "2x3x8x8" in result.out


def test_export_takes_inputs(cli, tmp_path):
    inputs = _two_inputs_file(tmp_path, batch=2)
    result = cli("export", "dv_test_models:two_inputs", "--inputs", inputs, "--out", tmp_path / "out",
                 "--kinds", "onnx", "-q")
    assert result.code == 0, result.err
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims == {"features": [2, 4], "ids": [2, 6]}


def test_debug_and_precision_take_the_file_shapes(cli, tmp_path):
    inputs = _two_inputs_file(tmp_path)
    debug = cli("debug", "dv_test_models:two_inputs", "--inputs", inputs, "--backend", "ort", "--no-triage", "-q")
    assert debug.code == 0, debug.err
    sweep = cli("precision", "dv_test_models:two_inputs", "--inputs", inputs, "--sweep", "--bits", "8", "-q")
    assert sweep.code == 0, sweep.err


def test_onnx_with_dynamic_and_scalar_inputs_runs_from_the_file(cli, tmp_path):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["rate"], ["rate_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "rate_f"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t"]),
                                           helper.make_tensor_value_info("rate", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t"])])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.ones((2, 7), np.float32), rate=np.asarray(3, np.int64))
    report = tmp_path / "r.json"
    result = cli("compare", path, "--inputs", inputs, "--backends", "ort", "--precisions", "fp32,fp16",
                 "--iterations", "1", "--json", report, "-q")
    assert result.code == 0, result.err
    data = json.loads(report.read_text())
    assert {i["name"]: i["shape"] for i in data["inputs"]} == {"x": [2, 7], "rate": []}


def test_parse_argument_types():
    assert parse_argument("sr=16000") == ("sr", 16000)
    assert parse_argument("scale=0.5") == ("scale", 0.5)
    assert parse_argument("flag=true") == ("flag", True)
    assert parse_argument("mode='tanh'") == ("mode", "tanh")
    assert parse_argument("mode=tanh") == ("mode", "tanh")
    with pytest.raises(UsageError, match="bad --arg"):
        parse_argument("2x=1")
    with pytest.raises(UsageError, match="twice"):
        parse_arguments(["a=1", "a=2"])


def test_arg_reaches_forward_and_every_export(cli, tmp_path):
    report = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:scaled", "--input-shape", "x=2x4", "--arg", "scale=3.5",
                 "--arg", "mode=tanh", "--backends", "torch,torchscript,ort", "--iterations", "1",
                 "--save-inputs", tmp_path / "in.npz", "--json", report, "-q")
    assert result.code == 0, result.err
    data = json.loads(report.read_text())
    assert data["model"]["arguments"] == {"scale": 3.5, "mode": "tanh"}
    assert all(r["status"] in ("reference", "pass") for r in data["results"]), data["results"]
    assert "--arg scale=3.5 --arg mode=tanh" in data["results"][-1]["reproduce"]
    # The arguments changed what was computed: the reference is tanh(proj(x) * 3.5).
    import dv_test_models
    import torch

    x = torch.from_numpy(np.load(tmp_path / "in.npz")["x"])
    model = dv_test_models.scaled()
    expected = torch.tanh(model.proj(x) * 3.5)
    from deployval.catalog.registry import resolve_model
    from deployval.model.loading import build_module

    spec = resolve_model("dv_test_models:scaled", inputs_file=tmp_path / "in.npz",
                         arguments={"scale": 3.5, "mode": "tanh"})
    bound = build_module(spec)
    assert torch.allclose(bound(x), expected)
    assert [n for n, _ in bound.named_modules()] == ["", "proj"]  # module names stay the model's own


def test_arg_for_a_torchscript_file(cli, tmp_path):
    import dv_test_models

    path = dv_test_models.rate_dependent_script(str(tmp_path / "vad.pt"))
    np.save(tmp_path / "audio.npy", np.random.default_rng(0).random((1, 64)).astype(np.float32))
    report = tmp_path / "r.json"
    result = cli("compare", path, "--inputs", tmp_path / "audio.npy", "--arg", "sr=16000",
                 "--backends", "torch,torchscript,ort", "--iterations", "1", "--json", report, "-q")
    assert result.code == 0, result.err
    rows = {r["backend"]: r for r in json.loads(report.read_text())["results"]}
    assert rows["torchscript"]["status"] == "pass" and rows["ort"]["status"] == "pass", rows
    missing = cli("compare", path, "--inputs", tmp_path / "audio.npy", "--backends", "torch,torchscript", "-q")
    assert missing.code == 2 and "sr" in missing.err  # forward(x, sr) without --arg: the reference cannot run
    unknown = cli("compare", path, "--inputs", tmp_path / "audio.npy", "--arg", "rate=8000", "-q")
    assert_one_line_error(unknown, 2, "--arg rate: forward() has no such argument")


def test_arg_is_refused_for_onnx_files(cli, tmp_path):
    from corpus import _onnx_model

    path = _onnx_model(tmp_path, "m.onnx")
    result = cli("compare", path, "--arg", "sr=1", "-q")
    assert_one_line_error(result, 2, "ONNX model takes tensors only")


def test_precision_takes_nonfinite_inputs_only_when_allowed(cli, tmp_path):
    values = np.random.default_rng(0).random((1, 3, 8, 8)).astype(np.float32)
    values[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", values)
    refused = cli("precision", "dv_test_models:tiny_conv", "--inputs", tmp_path / "x.npy", "--sweep", "--bits", "8",
                  "-q")
    assert_one_line_error(refused, 2, "NaN/Inf")
    allowed = cli("precision", "dv_test_models:tiny_conv", "--inputs", tmp_path / "x.npy", "--sweep", "--bits", "8",
                  "--allow-nonfinite-inputs", "-q")
    assert allowed.code == 0, allowed.err

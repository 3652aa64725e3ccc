"""One run-record header for every report: `compare` and `debug` (of a PyTorch model or of an ONNX file)
record the same model, inputs (with their digests), seed, device and versions for the same run, and
write the same header keys in the same order, filled by `Session.run_record`."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from onnx import helper as h

from deployval.catalog.registry import resolve_model
from deployval.debug.report import DebugReport
from deployval.debug.run import run_debug
from deployval.judge.record import FORMAT_VERSION, RunRecord
from deployval.judge.results import Report
from deployval.model import inputs as inputs_mod
from deployval.model.arguments import parse_input_shape
from deployval.model.spec import RunConfig
from deployval.run.pipeline import compare
from deployval.run.session import Session

HEADER = ["format_version", "complete", "created", "command", "versions", "device", "model", "inputs", "seed",
          "inputs_source"]  # what `report merge` and the renderers read, in the order the JSON has always had
SAME = ("inputs", "seed", "inputs_source", "device", "versions")


def _module_spec():
    return resolve_model("dv_test_models:tiny_conv", input_shapes=[parse_input_shape("1x3x8x8")])


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("record") / "relu_matmul.onnx"
    x = h.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])
    y = h.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])
    weight = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    graph = h.make_graph([h.make_node("Relu", ["x"], ["r"], name="relu"),
                          h.make_node("MatMul", ["r", "w"], ["y"], name="matmul")],
                         "relu_matmul", [x], [y], initializer=[numpy_helper.from_array(weight, "w")])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


def _header(data: dict) -> dict:
    return {k: data[k] for k in HEADER}


def _json(report) -> dict:
    return json.loads(json.dumps(report.to_dict()))


@pytest.fixture(scope="module")
def module_reports():
    spec = _module_spec()
    return (compare(spec, ("torch", "ort"), ("fp32",), RunConfig(seed=7)),
            run_debug(spec, "ort", "fp32", RunConfig(seed=7)))


def test_compare_and_debug_of_a_module_record_the_same_header(module_reports):
    compared, debugged = map(_json, module_reports)
    assert list(compared)[:len(HEADER)] == HEADER
    assert list(debugged)[:len(HEADER) + 1] == [HEADER[0], "kind", *HEADER[1:]]
    assert debugged["kind"] == "debug" and "kind" not in compared
    for data in (compared, debugged):
        assert data["format_version"] == FORMAT_VERSION == "1.0" and data["complete"] is True
    for key in SAME:
        assert compared[key] == debugged[key], key
    assert compared["seed"] == 7 and compared["inputs_source"] == "random (seed 7)"
    assert compared["model"]["parameters"] == debugged["model"]["parameters"] == 122
    # compare also keys its artifacts by the module's digest; otherwise the model is recorded alike
    assert {k: v for k, v in compared["model"].items() if k != "sha256"} == debugged["model"]
    assert compared["command"].startswith("deployval compare ")
    assert debugged["command"].startswith("deployval debug ")


def test_debug_of_an_onnx_file_records_inputs_and_device_like_compare(onnx_file, tmp_path):
    feeds = {"x": np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)}
    np.savez(tmp_path / "x.npz", **feeds)
    spec = resolve_model(str(onnx_file), inputs_file=tmp_path / "x.npz")  # the file sizes the dynamic batch
    compared = _json(compare(spec, ("ort",), ("fp32", "fp16"), RunConfig(), inputs=tmp_path / "x.npz"))
    debugged = _json(run_debug(spec, "ort", "fp16", RunConfig(), inputs=tmp_path / "x.npz"))
    for key in SAME:
        assert compared[key] == debugged[key], key
    assert debugged["inputs_source"] == str(tmp_path / "x.npz") and debugged["seed"] is None
    assert debugged["inputs"][0]["shape"] == [3, 8]  # the spec followed the given inputs
    assert debugged["inputs"][0]["sha256"] == inputs_mod.digest(feeds)
    assert debugged["device"]["device"] == "cpu" and "platform" in debugged["device"]
    assert compared["model"]["sha256"] == debugged["model"]["sha256"]
    assert {k: v for k, v in debugged["model"].items() if k != "nodes"} == compared["model"]
    assert debugged["model"]["nodes"] == 2


def test_session_fills_the_record_and_reports_start_from_it():
    session = Session(_module_spec(), RunConfig(seed=3))
    before = session.run_record("deployval compare tiny_conv")
    assert "parameters" not in before.model  # the module is not built just to write a header
    session.module()
    after = session.run_record("deployval debug tiny_conv")
    assert after.model["parameters"] == 122
    assert after.inputs == session.inputs_info() and after.inputs[0]["sha256"] == session.input_digests["input"]
    assert (after.seed, after.inputs_source) == (3, "random (seed 3)")
    assert before.model is not after.model  # each report gets its own dict to add to
    assert after.complete is False

    report = Report.from_record(after, gate=["ort:fp32"])
    debug = DebugReport.from_record(after, backend="ort", precision="fp32")
    assert report.header_fields() == debug.header_fields() == after.header_fields()
    assert report.created == after.created and report.gate == ["ort:fp32"]
    assert report.record_dict() == {k: v for k, v in debug.record_dict(kind="debug").items() if k != "kind"}
    assert list(report.to_dict())[:len(HEADER)] == HEADER


def test_reports_hold_the_header_fields_only_once():
    header = [f.name for f in fields(RunRecord)]
    for cls in (Report, DebugReport):
        names = [f.name for f in fields(cls)]
        assert names[:len(header)] == header and len(set(names)) == len(names)
    with pytest.raises(TypeError):  # keyword-only: a positional call cannot shift the header silently
        Report("deployval compare x", {}, [], None, "given", {}, {})

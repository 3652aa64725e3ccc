"""`deployval debug FILE.onnx`: node by node against ONNX Runtime fp32 on the file. Hand-built graphs
whose divergent node is known in advance (fp16 rounding made visible by a cancellation, an int8
activation scale ruined by an outlier channel, fp16 rounding that only accumulates), an If node, the
command line (--input-shape and --inputs on dynamic dimensions, --json, --html, exit codes)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error
from onnx import TensorProto, numpy_helper
from onnx import helper as h

from deployval.catalog.registry import resolve_model
from deployval.debug.run import run_debug
from deployval.model.arguments import parse_input_shape
from deployval.model.spec import RunConfig

BATCH = h.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])
OUT = h.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])


def _save(path, nodes, initializers, opset=17, check=True):
    graph = h.make_graph(nodes, path.stem, [BATCH], [OUT],
                         initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k)
                                      for k, v in initializers.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx-files")
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((8, 8)) * 0.5
    mix[0, :] = 0.0  # the outlier channel does not reach the output: only the small channels matter
    return {
        # fp16 rounds the constant 1000.3 to 1000.5: invisible next to 1000, a 0.2 error once 1000 is taken off
        "cancel": _save(root / "cancel.onnx", [
            h.make_node("Relu", ["x"], ["r"], name="relu"),
            h.make_node("MatMul", ["r", "w"], ["m"], name="matmul"),
            h.make_node("Mul", ["m", "half"], ["s"], name="scale"),
            h.make_node("Add", ["s", "big"], ["a"], name="shift"),
            h.make_node("Sub", ["a", "thousand"], ["d"], name="unshift"),
            h.make_node("Tanh", ["d"], ["y"], name="tanh"),
        ], {"w": rng.standard_normal((8, 8)) * 0.3, "half": 0.5, "big": 1000.3, "thousand": 1000.0}),
        # int8: channel 0 of x is ~1000x the others, so the MatMul input's per-tensor scale zeroes the rest
        "outlier": _save(root / "outlier.onnx", [
            h.make_node("Abs", ["x"], ["a"], name="magnitude"),
            h.make_node("MatMul", ["a", "w"], ["m"], name="mix"),
            h.make_node("Tanh", ["m"], ["y"], name="squash"),
        ], {"w": mix}),
        # fp16 rounds 1.0004 to 1.0: 4e-4 per Mul, within tolerance alone, 1e-2 after ~25 of them (an Abs
        # between two Muls keeps the simplifier from folding them into one)
        "drift": _save(root / "drift.onnx", [
            h.make_node(op, [f"t{i - 1}" if i else "x", "k"][:2 if op == "Mul" else 1], [f"t{i}" if i < 79 else "y"],
                        name=f"{op.lower()}{i // 2}") for i, op in enumerate(["Mul", "Abs"] * 40)], {"k": 1.0004}),
        "branch": _save(root / "branch.onnx", [
            h.make_node("ReduceSum", ["x"], ["total"], name="total", keepdims=0),
            h.make_node("Greater", ["total", "zero"], ["positive"], name="positive"),
            h.make_node("If", ["positive"], ["b"], name="branch",
                        then_branch=h.make_graph([h.make_node("Mul", ["x", "two"], ["b_then"], name="double")],
                                                 "then", [], [h.make_tensor_value_info("b_then", 1, ["n", 8])]),
                        else_branch=h.make_graph([h.make_node("Neg", ["x"], ["b_else"], name="negate")],
                                                 "else", [], [h.make_tensor_value_info("b_else", 1, ["n", 8])])),
            h.make_node("Relu", ["b"], ["y"], name="relu"),
        ], {"zero": 0.0, "two": 2.0}),
        # an op no ONNX domain defines: the file loads, its artifacts cannot be built
        "broken": _save(root / "broken.onnx", [h.make_node("NoSuchOp", ["x"], ["y"], name="mystery")], {},
                        check=False),
    }


def debug(path, precision="fp16", shape="x=4x8", **kwargs):
    spec = resolve_model(str(path), input_shapes=[parse_input_shape(shape)] if shape else [])
    return run_debug(spec, "ort", precision, RunConfig(), **kwargs)


def test_fp16_names_the_cancelling_node(files):
    report = debug(files["cancel"])
    assert report.exit_code == 1
    assert report.first_divergent == "unshift", [(r.label, r.status, r.metrics.get("rel_l2")) for r in report.layers]
    labels = [r.label for r in report.layers]
    assert labels == ["relu", "matmul", "scale", "shift", "unshift", "tanh", "y"]
    assert all(r.status == "pass" for r in report.layers[:4])
    assert [r.type for r in report.layers[:6]] == ["Relu", "MatMul", "Mul", "Add", "Sub", "Tanh"]
    assert report.layer("unshift").tensor == "d" and report.layer("unshift").shape == [4, 8]
    # the error is new at the Sub; the Tanh after it only inherits it
    assert report.localized is not None and (report.localized.label, report.localized.kind) == ("unshift", "layer")
    assert report.layer("unshift").own["passed"] is False and report.layer("unshift").new_share > 0.5
    assert report.layer("tanh").own["passed"] is True and report.layer("tanh").new_share < 0.2
    assert report.triage is not None and report.triage.verdict == "export"
    assert report.layer("y").kind == "output" and report.layer("y").status == "fail"
    assert any("not faithful" in w for w in report.warnings)


def test_fp32_against_itself_passes(files):
    report = debug(files["cancel"], "fp32")
    assert report.exit_code == 0 and report.first_divergent is None
    assert [r.status for r in report.layers] == ["pass"] * 7
    assert all(r.metrics["max_abs"] == 0.0 for r in report.layers)


def test_int8_outlier_channel_breaks_the_matmul(files, tmp_path):
    x = np.random.default_rng(2).uniform(0, 1, (3, 8)).astype(np.float32)
    x[:, 0] *= 1000
    np.savez(tmp_path / "x.npz", x=x)
    spec = resolve_model(str(files["outlier"]), inputs_file=tmp_path / "x.npz")
    report = run_debug(spec, "ort", "int8", RunConfig(), inputs=tmp_path / "x.npz")
    assert report.exit_code == 1 and report.first_divergent == "mix"
    assert report.layer("magnitude").status == "pass" and report.layer("magnitude").metrics["max_abs"] == 0.0
    assert "QuantizeLinear" in report.layer("mix").ops  # its region in the Q/DQ artifact
    assert report.localized.label == "mix" and report.layer("mix").own["passed"] is False
    assert report.inputs[0]["shape"] == [3, 8]
    assert report.triage is not None and report.triage.verdict == "export", report.triage


def test_accumulated_error_and_chunks_give_the_same_numbers(files):
    whole = debug(files["drift"], own_errors="all")
    assert whole.exit_code == 1 and whole.first_divergent is not None
    first = whole.layer(whole.first_divergent)
    assert 30 <= first.index <= 70 and first.type in ("Mul", "Abs"), first.label
    assert first.own["passed"] is True  # each Mul is within tolerance by itself
    assert whole.localized.kind == "accumulated"
    chunked = debug(files["drift"], own_errors="all", memory_budget_bytes=512)
    assert chunked.memory["chunks"] > 5 and whole.memory["chunks"] == 1
    assert chunked.first_divergent == whole.first_divergent
    for a, b in zip(whole.layers, chunked.layers):
        assert (a.label, a.status, a.metrics) == (b.label, b.status, b.metrics)
        assert (a.own or {}).get("metrics") == (b.own or {}).get("metrics")


def test_if_node_is_compared_and_its_body_noted(files):
    report = debug(files["branch"], "fp32")
    assert report.exit_code == 0
    assert report.layer("branch").status == "pass" and report.layer("branch").own["passed"] is True
    assert any("2 nodes inside the bodies of 1 If nodes" in n for n in report.notes), report.notes


def test_debug_command_on_an_onnx_file(cli, files, tmp_path):
    json_path, html_path = tmp_path / "r.json", tmp_path / "r.html"
    result = cli("debug", files["cancel"], "--input-shape", "x=2x8", "--precision", "fp16", "--json", json_path,
                 "--html", html_path, "-q")
    assert result.code == 1, result.err
    assert "first divergent layer: unshift (Sub)" in result.out and "triage: export" in result.out
    data = json.loads(json_path.read_text())
    assert data["summary"]["exit_code"] == 1 and data["first_divergent"] == "unshift"
    nodes = [r for r in data["layers"] if r["kind"] == "node"]
    rows = [(r["label"], r["type"], r["tensor"]) for r in nodes]
    assert rows[3:5] == [("shift", "Add", "a"), ("unshift", "Sub", "d")]
    assert all(r["metrics"]["rel_l2"] >= 0 and r["own"] for r in nodes) and nodes[0]["shape"] == [2, 8]
    html = html_path.read_text()
    assert "unshift" in html and "First divergent layer" in html

    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).uniform(0, 1, (5, 8)).astype(np.float32))
    result = cli("debug", files["cancel"], "--inputs", tmp_path / "x.npz", "--modules", "shift,un*", "-q",
                 "--json", json_path)
    assert result.code == 0, result.err  # fp32
    data = json.loads(json_path.read_text())
    assert [r["label"] for r in data["layers"]] == ["shift", "unshift", "y"] and data["inputs"][0]["shape"] == [5, 8]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["cancel"], 2, "has dynamic dimensions"),  # no --input-shape for the dynamic batch
    (["cancel", "--input-shape", "x=4x8", "--backend", "torch"], 2, "is an ONNX file: the torch backend runs"),
    (["broken", "--input-shape", "x=4x8", "--precision", "fp16"], 2, "does not pass onnx.checker"),
])
def test_debug_command_errors_are_one_line(cli, files, args, code, message):
    assert_one_line_error(cli("debug", files[args[0]], *args[1:], "-q"), code, message)

"""int8 Q/DQ placement the way TensorRT's explicit quantization wants it, on small hand-built graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from deployval.errors import ExportError
from deployval.export.int8 import NothingToQuantize, activation_ranges, plan_placement, quantize_int8
from deployval.export.onnx_io import run_onnxruntime

WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _weights(name: str, shape, seed: int, scale: float = 0.3) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)


def mixed_model() -> onnx.ModelProto:
    """Conv -> Add(constant) -> Reshape -> MatMul(weights) -> Softmax -> MatMul(two activations) ->
    Reshape -> Gemm(weights, bias, beta 0.5): every kind of node the placement must tell apart."""
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "shift"], ["a"], name="add"),
        helper.make_node("Reshape", ["a", "shape3"], ["r"], name="flatten"),
        helper.make_node("MatMul", ["r", "mm_w"], ["m"], name="mm_weights"),
        helper.make_node("Softmax", ["m"], ["s"], name="softmax", axis=-1),
        helper.make_node("Transpose", ["m"], ["mt"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["s", "mt"], ["y"], name="mm_activations"),
        helper.make_node("Reshape", ["y", "shape2"], ["f"], name="flatten2"),
        helper.make_node("Gemm", ["f", "gemm_w", "gemm_b"], ["g"], name="gemm", transB=1, beta=0.5),
    ]
    initializers = [
        _weights("conv_w", (4, 3, 3, 3), 0), _weights("conv_b", (4,), 1),
        numpy_helper.from_array(np.array([0.1, -0.2, 0.3, 0.0], np.float32).reshape(1, 4, 1, 1), "shift"),
        numpy_helper.from_array(np.array([1, 4, 64], np.int64), "shape3"),
        _weights("mm_w", (64, 16), 2, 0.1),
        numpy_helper.from_array(np.array([1, 16], np.int64), "shape2"),
        _weights("gemm_w", (8, 16), 3), _weights("gemm_b", (8,), 4, 1.0),
    ]
    return _model(nodes, [("x", TP.FLOAT, [1, 3, 8, 8])], [("y", TP.FLOAT, [1, 4, 4]), ("g", TP.FLOAT, [1, 8])],
                  initializers)


def feeds(count: int, seed: int = 0, shape=(1, 3, 8, 8)) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(count)]


def _graph_facts(model: onnx.ModelProto) -> dict:
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    dq_outputs = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    readers = {n.name: n for n in model.graph.node if dq_outputs.keys() & set(n.input)}
    return {"producers": producers, "inits": inits, "dq_outputs": dq_outputs, "readers": readers}


@pytest.mark.parametrize(("activation_matmuls", "preprocess"), [(False, True), (True, False)])
def test_placement_is_tensorrts(tmp_path: Path, activation_matmuls: bool, preprocess: bool) -> None:
    model = mixed_model()
    out = tmp_path / "q.onnx"
    d = quantize_int8(model, feeds(8), out, quantize_activation_matmuls=activation_matmuls, preprocess=preprocess)
    expected = {"Conv": 1, "Gemm": 1, "MatMul": 2 if activation_matmuls else 1}
    assert d.quantized_per_op_type == expected and d.quantized_nodes == sum(expected.values())
    assert d.activation_matmuls == 1 and d.activation_matmuls_quantized is activation_matmuls
    assert d.qdq_pairs == (5 if activation_matmuls else 3)  # x, r, f (+ s, mt)
    assert d.weights_quantized == 3 and d.nonzero_zero_points == 0 and d.int32_dequantize_inputs == 0
    quantized = onnx.load(str(out))
    facts = _graph_facts(quantized)
    names = {n.name: n for n in quantized.graph.node}
    # Q/DQ feed only the compute-heavy ops: never Softmax, Add, Reshape or Transpose ...
    assert {n.op_type for n in facts["readers"].values()} <= WEIGHTED
    assert ("mm_activations" in facts["readers"]) is activation_matmuls
    # ... and no output of theirs is quantized
    for node in quantized.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in facts["producers"]:
            assert facts["producers"][node.input[0]].op_type not in WEIGHTED, node.name
    # biases stay float: no DequantizeLinear reads an int32 tensor (TensorRT takes INT8/FP8 only)
    for dq in facts["dq_outputs"].values():
        source = facts["inits"].get(dq.input[0])
        assert source is None or source.data_type == TP.INT8
    assert facts["inits"][names["conv"].input[2]].data_type == TP.FLOAT
    assert facts["inits"][names["gemm"].input[2]].data_type == TP.FLOAT
    # symmetric: every zero-point is 0; weights per output channel, activations per tensor
    for node in quantized.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert not numpy_helper.to_array(facts["inits"][node.input[2]]).any()
    weight_scales = {}
    for dq in facts["dq_outputs"].values():
        scale = numpy_helper.to_array(facts["inits"][dq.input[1]])
        if dq.input[0] in facts["inits"]:
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            weight_scales[dq.input[0].removesuffix("_quantized")] = (scale.shape, axis)
        else:
            assert scale.size == 1
    assert weight_scales == {"conv_w": ((4,), 0), "mm_w": ((16,), 1), "gemm_w": ((8,), 0)}
    # and it still computes the same (Gemm's beta 0.5 survives the quantizer, which resets it to 1)
    for feed in feeds(3, seed=7):
        ref, got = run_onnxruntime(model, feed), run_onnxruntime(out, feed)
        a, b = ref["y"].ravel(), got["y"].ravel()
        assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.99
        assert np.linalg.norm(got["g"] - ref["g"]) / np.linalg.norm(ref["g"]) < 0.1


def test_qdq_reaches_only_the_quantized_readers(tmp_path: Path) -> None:
    """ONNX Runtime hands a quantized tensor's DequantizeLinear output to all its readers: a UNet's skip
    Concat, a graph output, a Gather sharing a weight with a MatMul (tied embeddings) must read floats."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["h"], name="relu"),
        helper.make_node("Conv", ["h", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["h", "c2"], ["y"], name="skip", axis=1),
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("MatMul", ["e", "emb"], ["logits"], name="tied"),
    ]
    model = _model(nodes, [("x", TP.FLOAT, [1, 3, 8, 8]), ("ids", TP.INT64, [2])],
                   [("y", TP.FLOAT, [1, 8, 8, 8]), ("h", TP.FLOAT, [1, 4, 8, 8]), ("logits", TP.FLOAT, [2, 8])],
                   [_weights("w1", (4, 3, 3, 3), 0), _weights("w2", (4, 4, 3, 3), 1), _weights("emb", (8, 8), 2)])
    samples = [{**f, "ids": np.array([1, 5], np.int64)} for f in feeds(4)]
    out = tmp_path / "q.onnx"
    d = quantize_int8(model, samples, out, preprocess=False)
    assert d.quantized_per_op_type == {"Conv": 2, "MatMul": 1}
    facts = _graph_facts(onnx.load(str(out)))
    assert set(facts["readers"]) == {"conv1", "conv2", "tied"}
    names = {n.name: n for n in onnx.load(str(out)).graph.node}
    assert names["skip"].input[0] == "h" and names["embed"].input[0] == "emb" and names["relu"].output[0] == "h"
    assert facts["inits"]["emb"].data_type == TP.FLOAT
    feed = {**feeds(1, seed=5)[0], "ids": np.array([2, 7], np.int64)}
    got = run_onnxruntime(out, feed)
    steps = got["h"] / (activation_ranges(out)["h"] / 127)  # conv2 reads h in int8 steps ...
    assert np.abs(steps - np.round(steps)).max() > 0.1  # ... but the graph output is not rounded to them
    np.testing.assert_array_equal(got["y"][:, :4], got["h"])  # ... nor the skip half of the Concat


def residual_model(shortcut_conv: bool) -> onnx.ModelProto:
    """stem -> relu -> h; main: Conv a -> Relu -> Conv b -> BatchNorm; Add(main, shortcut) -> Relu.
    The shortcut is h itself, or a 1x1 Conv of h."""
    nodes = [
        helper.make_node("Conv", ["x", "stem_w"], ["s"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["h"], name="stem_relu"),
        helper.make_node("Conv", ["h", "a_w"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
        helper.make_node("Conv", ["ar", "b_w"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["b", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], name="bn"),
    ]
    initializers = [_weights("stem_w", (4, 3, 3, 3), 0), _weights("a_w", (4, 4, 3, 3), 1),
                    _weights("b_w", (4, 4, 3, 3), 2), _weights("sc_w", (4, 4, 1, 1), 3)]
    initializers += [numpy_helper.from_array(np.full(4, v, np.float32), n)
                     for n, v in (("bn_s", 1.1), ("bn_b", 0.1), ("bn_m", 0.05), ("bn_v", 0.9))]
    shortcut = "h"
    if shortcut_conv:
        nodes.append(helper.make_node("Conv", ["h", "sc_w"], ["sc"], name="conv_shortcut"))
        shortcut = "sc"
    nodes += [helper.make_node("Add", ["bn", shortcut], ["sum"], name="residual"),
              helper.make_node("Relu", ["sum"], ["y"], name="out_relu")]
    return _model(nodes, [("x", TP.FLOAT, [1, 3, 8, 8])], [("y", TP.FLOAT, [1, 4, 8, 8])], initializers)


@pytest.mark.parametrize("shortcut_conv", [False, True])
def test_residual_add_quantized_on_its_shortcut_only(tmp_path: Path, shortcut_conv: bool) -> None:
    model = residual_model(shortcut_conv)
    placement = plan_placement(model)
    assert placement.residual_adds == {"residual": 0}  # input 0 (Conv b -> BN) fuses; the shortcut is quantized
    out = tmp_path / "q.onnx"
    d = quantize_int8(model, feeds(4), out, preprocess=False)
    assert d.residual_adds == 1 and d.quantized_per_op_type["Add"] == 1
    quantized = onnx.load(str(out))
    facts = _graph_facts(quantized)
    add = next(n for n in quantized.graph.node if n.name == "residual")
    assert add.input[0] == "bn"  # the conv branch stays float (TensorRT fuses the Add into conv_b)
    dq = facts["dq_outputs"][add.input[1]]
    assert facts["producers"][dq.input[0]].input[0] == ("sc" if shortcut_conv else "h")
    assert d.nonzero_zero_points == 0 and d.int32_dequantize_inputs == 0
    feed = feeds(1, seed=3)[0]
    a, b = run_onnxruntime(model, feed)["y"].ravel(), run_onnxruntime(out, feed)["y"].ravel()
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.99


def test_adds_that_do_not_fuse_stay_float() -> None:
    """A transformer's residual sum (no Conv feeding it) and an Add reading the Conv's own output
    twice are no residual Adds TensorRT fuses."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="linear"),
        helper.make_node("Add", ["m", "x"], ["r"], name="transformer_residual"),
        helper.make_node("Conv", ["img", "cw"], ["c"], name="conv"),
        helper.make_node("Sigmoid", ["c"], ["g"], name="gate"),
        helper.make_node("Add", ["c", "g"], ["y"], name="same_conv"),
    ]
    model = _model(nodes, [("x", TP.FLOAT, [2, 4]), ("img", TP.FLOAT, [1, 2, 4, 4])],
                   [("r", TP.FLOAT, [2, 4]), ("y", TP.FLOAT, [1, 2, 4, 4])],
                   [_weights("w", (4, 4), 0), _weights("cw", (2, 2, 1, 1), 1)])
    placement = plan_placement(model)
    assert placement.nodes == {"linear": "MatMul", "conv": "Conv"} and placement.residual_adds == {}


def test_nothing_to_quantize_is_a_skipped_row(tmp_path: Path, cli) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "x"], ["y"], name="add")]
    model = _model(nodes, [("x", TP.FLOAT, [1, 8])], [("y", TP.FLOAT, [1, 8])])
    with pytest.raises(NothingToQuantize, match=r"no Conv, ConvTranspose, MatMul or Gemm \(the graph has Add, Relu\)"):
        quantize_int8(model, [{"x": np.ones((1, 8), np.float32)}], tmp_path / "q.onnx")
    path = tmp_path / "relu_add.onnx"
    onnx.save(model, str(path))
    report = tmp_path / "r.json"
    result = cli("compare", path, "--backends", "ort", "--precisions", "fp32,fp16,int8", "--json", report, "-q")
    assert result.code == 0, result.out + result.err
    rows = {(r["backend"], r["precision"]): r for r in json.loads(report.read_text())["results"]}
    assert rows[("ort", "int8")]["status"] == "skipped"
    assert "nothing to quantize in int8: no Conv" in rows[("ort", "int8")]["reason"]
    step = next(s for s in json.loads(report.read_text())["steps"] if s["name"] == "int8")
    assert step["status"] == "skipped"


def test_old_opset_is_upgraded_first(tmp_path: Path) -> None:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    model = _model(nodes, [("x", TP.FLOAT, [1, 3, 8, 8])], [("y", TP.FLOAT, [1, 4, 8, 8])],
                   [_weights("w", (4, 3, 3, 3), 0), _weights("b", (4,), 1)], opset=11)
    out = tmp_path / "q.onnx"
    d = quantize_int8(model, feeds(4), out)
    assert d.opset.startswith("upgraded from opset 11 to 13") and d.quantized_per_op_type == {"Conv": 1}
    quantized = onnx.load(str(out))
    assert next(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx")) >= 13
    onnx.checker.check_model(quantized)
    feed = feeds(1, seed=2)[0]
    a, b = run_onnxruntime(model, feed)["y"].ravel(), run_onnxruntime(out, feed)["y"].ravel()
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.99
    # an op the version converter does not know: one line that names the opset
    nodes.append(helper.make_node("FooBar", ["y"], ["z"], name="custom"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("z", TP.FLOAT, None)], list(model.graph.initializer))
    unknown = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    with pytest.raises(ExportError, match="opset-11 model failed") as caught:
        quantize_int8(unknown, feeds(1), tmp_path / "u.onnx")
    assert "\n" not in caught.value.one_line()


def test_inputs_the_calibrator_does_not_quantize(tmp_path: Path) -> None:
    """A bool flag and an int64 scalar next to the float input: fed as they are, not calibrated."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="linear"),
        helper.make_node("Cast", ["n"], ["nf"], name="cast", to=TP.FLOAT),
        helper.make_node("Mul", ["m", "nf"], ["scaled"], name="scale"),
        helper.make_node("Where", ["flag", "scaled", "m"], ["y"], name="choose"),
    ]
    model = _model(nodes, [("x", TP.FLOAT, [2, 4]), ("flag", TP.BOOL, []), ("n", TP.INT64, [])],
                   [("y", TP.FLOAT, [2, 3])], [_weights("w", (4, 3), 0)])
    rng = np.random.default_rng(0)
    samples = [{"x": rng.normal(size=(2, 4)), "flag": np.asarray(i % 2 == 0), "n": np.asarray(3)} for i in range(4)]
    out = tmp_path / "q.onnx"
    d = quantize_int8(model, samples, out)
    assert d.samples == 4 and d.quantized_per_op_type == {"MatMul": 1}
    feed = {"x": rng.normal(size=(2, 4)).astype(np.float32), "flag": np.asarray(True), "n": np.asarray(3, np.int64)}
    np.testing.assert_allclose(run_onnxruntime(out, feed)["y"], run_onnxruntime(model, feed)["y"], rtol=0.1, atol=0.1)


def test_ir3_opset9_graph_with_initializers_outside_the_inputs_is_upgraded(tmp_path):
    """IR 3 wants initializers listed as graph inputs and ONNX's version converter checks it; files in the
    wild often do not list them. The upgrade lists them first instead of failing the row."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from deployval.export.int8 import quantize_int8

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)
    feeds = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(2)]
    details = quantize_int8(model, feeds, tmp_path / "q.onnx")
    assert "upgraded from opset 9" in details.opset
    assert details.quantize_nodes > 0
    onnx.checker.check_model(onnx.load(str(tmp_path / "q.onnx")))

"""The fp16 pass on the graph shapes exporters and ONNX files in the wild produce: each artifact
must pass the full ONNX check, run in ONNX Runtime and stay within fp16 error of the fp32 model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from deployval.export.fp16 import convert_fp16
from deployval.export.graph import iter_graphs, iter_nodes
from deployval.export.onnx_io import run_onnxruntime

pytest.importorskip("onnxruntime")


def f32(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def graph(nodes, inputs, outputs, initializers=(), name="g", value_info=()) -> onnx.GraphProto:
    return helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        list(initializers),
        value_info=list(value_info),
    )


def model_of(g: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def converted_and_checked(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], rel: float = 2e-3, **kwargs):
    """Convert, require the full check, run both in ONNX Runtime, require fp32 outputs within fp16 error."""
    half, details = convert_fp16(model, **kwargs)
    onnx.checker.check_model(half, full_check=True)
    ref, out = run_onnxruntime(model, feeds), run_onnxruntime(half, feeds)
    assert out.keys() == ref.keys()
    for name, expected in ref.items():
        assert out[name].dtype == expected.dtype, name  # graph io keeps its types
        scale = max(float(np.abs(expected).max()), 1e-6)
        assert float(np.abs(out[name].astype(np.float64) - expected).max()) <= rel * scale + 1e-3, name
    return half, details


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value the artifact declares (value_info, io, initializers, all graphs)."""
    types = {}
    for g in iter_graphs(model.graph):
        for vi in [*g.input, *g.output, *g.value_info]:
            types[vi.name] = vi.type.tensor_type.elem_type
        types.update({t.name: t.data_type for t in g.initializer})
    return types


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in iter_nodes(model.graph) if n.name == name)


def attr(n: onnx.NodeProto, key: str):
    return helper.get_attribute_value(next(a for a in n.attribute if a.name == key))


RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 8)).astype(np.float32)
W = RNG.normal(size=(8, 8)).astype(np.float32) * 0.3


def test_cast_to_float_inside_the_converted_region_becomes_fp16() -> None:
    """Exporters cast int64 sizes and copies (`_to_copy`) to FLOAT: left as is, the value is fp32
    where the converter declared it fp16 ("Inferred elem type differs: (1) vs (10)")."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "one"], ["width"], name="width", axis=0),
        helper.make_node("Cast", ["width"], ["width_f"], name="node__to_copy", to=TP.FLOAT),
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Cast", ["h"], ["h_copy"], name="node__to_copy_1", to=TP.FLOAT),  # float -> float copy
        helper.make_node("Div", ["h_copy", "width_f"], ["y"], name="div"),
        helper.make_node("Cast", ["width"], ["width_out"], name="cast_out", to=TP.FLOAT),  # read as an output
    ]
    model = model_of(graph(nodes, [("x", TP.FLOAT, [2, 8])], [("y", TP.FLOAT, [2, 8]), ("width_out", TP.FLOAT, [])],
                           [f32("w", W), numpy_helper.from_array(np.array(1, np.int64), "one")]))
    half, d = converted_and_checked(model, {"x": X})
    assert attr(node(half, "node__to_copy"), "to") == TP.FLOAT16
    assert attr(node(half, "node__to_copy_1"), "to") == TP.FLOAT16
    assert attr(node(half, "cast_out"), "to") == TP.FLOAT  # a graph output stays fp32
    assert elem_types(half)["h"] == TP.FLOAT16 and d.kept_fp32 == []


def test_if_branches_reading_outer_values() -> None:
    """Bodies read fp16 values and weights of the outer graph: the If keeps an fp32 interface,
    each body computes in fp16 and casts what it returns."""
    then_branch = graph([helper.make_node("Add", ["h", "b"], ["t"], name="then_add")], [], [("t", TP.FLOAT, [2, 8])],
                        name="then")
    else_branch = graph([helper.make_node("Identity", ["h"], ["e"], name="else_identity")], [],
                        [("e", TP.FLOAT, [2, 8])], name="else")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("If", ["cond"], ["branch"], name="if", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Mul", ["branch", "h"], ["y"], name="mul"),
    ]
    model = model_of(graph(nodes, [("x", TP.FLOAT, [2, 8]), ("cond", TP.BOOL, [])], [("y", TP.FLOAT, [2, 8])],
                           [f32("w", W), f32("b", np.linspace(-1, 1, 8))]))
    for cond in (True, False):
        half, d = converted_and_checked(model, {"x": X, "cond": np.array(cond)})
    types = elem_types(half)
    assert types["h"] == TP.FLOAT16 and types["b"] == TP.FLOAT16 and types["branch"] == TP.FLOAT
    assert d.kept_fp32 == []


def test_stale_value_info_inside_subgraphs_is_rewritten() -> None:
    """value_info the exporter left (fp32, in the top graph and in a Loop body) must follow the
    conversion, or the full check fails."""
    body = graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"], name="keep_going"),
         helper.make_node("Mul", ["acc_in", "w"], ["scaled"], name="body_mul"),
         helper.make_node("Tanh", ["scaled"], ["acc_out"], name="body_tanh")],
        [("i", TP.INT64, []), ("c_in", TP.BOOL, []), ("acc_in", TP.FLOAT, [2, 8])],
        [("c_out", TP.BOOL, []), ("acc_out", TP.FLOAT, [2, 8])],
        name="body", value_info=[helper.make_tensor_value_info("scaled", TP.FLOAT, [2, 8])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Loop", ["trips", "", "r"], ["acc"], name="loop", body=body),
        helper.make_node("Sigmoid", ["acc"], ["y"], name="sigmoid"),
    ]
    stale = helper.make_tensor_value_info("r", TP.FLOAT, [2, 8])
    model = model_of(graph(nodes, [("x", TP.FLOAT, [2, 8]), ("trips", TP.INT64, [])], [("y", TP.FLOAT, [2, 8])],
                           [f32("w", np.full(8, 1.1))], value_info=[stale]))
    half, _ = converted_and_checked(model, {"x": X, "trips": np.array(3, np.int64)})
    types = elem_types(half)
    assert types["r"] == TP.FLOAT16 and types["scaled"] == TP.FLOAT16 and types["acc"] == TP.FLOAT


def test_int64_scalar_input_selects_a_branch() -> None:
    """Silero's `sr`: an int64 scalar compared and cast to float next to fp16 activations."""
    nodes = [
        helper.make_node("Equal", ["sr", "k16"], ["is16"], name="eq"),
        helper.make_node("Cast", ["sr"], ["sr_f"], name="sr_float", to=TP.FLOAT),
        helper.make_node("Div", ["x", "sr_f"], ["xs"], name="div"),
        helper.make_node("Mul", ["xs", "gain"], ["scaled"], name="gain"),
        helper.make_node("If", ["is16"], ["y"], name="pick",
                         then_branch=graph([helper.make_node("Relu", ["scaled"], ["a"], name="a")], [],
                                           [("a", TP.FLOAT, [2, 8])], name="t"),
                         else_branch=graph([helper.make_node("Neg", ["scaled"], ["b"], name="b")], [],
                                           [("b", TP.FLOAT, [2, 8])], name="e")),
    ]
    model = model_of(graph(nodes, [("x", TP.FLOAT, [2, 8]), ("sr", TP.INT64, [])], [("y", TP.FLOAT, [2, 8])],
                           [numpy_helper.from_array(np.array(16000, np.int64), "k16"), f32("gain", [4000.0])]))
    for sr in (16000, 8000):
        half, _ = converted_and_checked(model, {"x": X, "sr": np.array(sr, np.int64)})
    assert half.graph.input[1].type.tensor_type.elem_type == TP.INT64


def test_sequence_values_stay_fp32_around_fp16_tensors() -> None:
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["a"], name="mul"),
        helper.make_node("Sigmoid", ["x"], ["b"], name="sigmoid"),
        helper.make_node("SequenceConstruct", ["a", "b"], ["seq"], name="pack"),
        helper.make_node("ConcatFromSequence", ["seq"], ["cat"], name="concat", axis=0),
        helper.make_node("Tanh", ["cat"], ["y"], name="tanh"),
    ]
    model = model_of(graph(nodes, [("x", TP.FLOAT, [2, 8])], [("y", TP.FLOAT, [4, 8])], [f32("w", np.full(8, 0.7))]))
    half, d = converted_and_checked(model, {"x": X})
    assert set(d.kept_fp32) == set(d.unconvertible) == {"pack", "concat"}
    assert "sequence" in d.kept_fp32_reasons["pack"]
    types = elem_types(half)
    assert types["a"] == TP.FLOAT16 and types["y"] == TP.FLOAT


def test_nodes_the_converter_cannot_take_stay_fp32_and_are_listed() -> None:
    """Celu has no fp16 version in its schema; EyeLike's output follows its input's type, which
    the planned types get wrong: the full check refuses it, and the retry keeps it fp32."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Celu", ["h"], ["c"], name="celu"),
        helper.make_node("EyeLike", ["w"], ["eye"], name="eye"),
        helper.make_node("MatMul", ["c", "eye"], ["y"], name="project"),
    ]
    model = model_of(graph(nodes, [("x", TP.FLOAT, [2, 8])], [("y", TP.FLOAT, [2, 8])], [f32("w", W)]))
    half, d = converted_and_checked(model, {"x": X})
    assert d.kept_fp32 == d.unconvertible == ["celu", "eye"]
    assert "no fp16 version" in d.kept_fp32_reasons["celu"]
    assert "checker" in d.kept_fp32_reasons["eye"] and d.retries == 1
    assert elem_types(half)["h"] == TP.FLOAT16


def test_graph_output_read_inside_the_graph_and_duplicate_readers() -> None:
    """An output that other nodes read stays fp32 for the caller while its readers get fp16;
    a weight read in both precisions keeps its fp32 values for the fp32 reader."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
        helper.make_node("Add", ["w", "w"], ["w2"], name="kept_add"),
        helper.make_node("MatMul", ["h", "w2"], ["z"], name="matmul2"),
    ]
    model = model_of(graph(nodes, [("x", TP.FLOAT, [2, 8])], [("h", TP.FLOAT, [2, 8]), ("z", TP.FLOAT, [2, 8])],
                           [f32("w", W)]))
    half, d = converted_and_checked(model, {"x": X}, node_block_list=["kept_add"])
    assert d.kept_fp32 == ["kept_add"] and d.unconvertible == [] and d.initializers_converted == 1
    inits = {t.name: t.data_type for t in half.graph.initializer}
    assert inits["w"] == TP.FLOAT and TP.FLOAT16 in inits.values()  # an fp16 twin for the fp16 reader
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [TP.FLOAT, TP.FLOAT]


def test_old_opset_with_initializers_as_inputs() -> None:
    """IR 3 / opset 7 files (as the onnx package's pytorch-converted models): weights are also
    graph inputs and retyped with them."""
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm", transB=1)]
    g = graph(nodes, [("x", TP.FLOAT, [2, 8]), ("w", TP.FLOAT, [8, 8]), ("b", TP.FLOAT, [8])],
              [("y", TP.FLOAT, [2, 8])], [f32("w", W), f32("b", np.ones(8))])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    onnx.checker.check_model(model, full_check=True)
    half, _ = converted_and_checked(model, {"x": X})
    assert {vi.name: vi.type.tensor_type.elem_type for vi in half.graph.input} == {
        "x": TP.FLOAT, "w": TP.FLOAT16, "b": TP.FLOAT16}


def test_weights_reshaped_for_a_kept_node_stay_exact() -> None:
    """A weight transposed for a node kept fp32 moves in fp32: no fp16 round trip of its values."""
    nodes = [
        helper.make_node("Transpose", ["w"], ["w_t"], name="transpose", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "w_t"], ["h"], name="kept_matmul"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    w = (W + np.float32(1e-4)).astype(np.float32)  # not representable in fp16
    model = model_of(graph(nodes, [("x", TP.FLOAT, [2, 8])], [("y", TP.FLOAT, [2, 8])], [f32("w", w)]))
    half, d = converted_and_checked(model, {"x": X}, rel=1e-3, node_block_list=["kept_matmul"])
    assert d.kept_fp32 == ["kept_matmul"] and d.initializers_converted == 0
    assert {t.name: t.data_type for t in half.graph.initializer} == {"w": TP.FLOAT}
    types = elem_types(half)
    assert types["w_t"] == TP.FLOAT and types["h"] == TP.FLOAT


def test_constant_read_in_both_precisions_gets_an_fp16_twin() -> None:
    nodes = [
        helper.make_node("Constant", [], ["k"], name="k", value_float=3.0001),
        helper.make_node("Mul", ["x", "k"], ["y"], name="mul"),
        helper.make_node("Add", ["x", "k"], ["z"], name="kept_add"),
    ]
    model = model_of(graph(nodes, [("x", TP.FLOAT, [2, 8])], [("y", TP.FLOAT, [2, 8]), ("z", TP.FLOAT, [2, 8])]))
    half, d = converted_and_checked(model, {"x": X}, node_block_list=["kept_add"])
    assert d.constants_converted == 1
    original, twin = [n for n in half.graph.node if n.op_type == "Constant"]
    assert attr(original, "value_float") == pytest.approx(3.0001)  # the fp32 reader keeps it exactly
    assert numpy_helper.to_array(attr(twin, "value")).dtype == np.float16
    z = run_onnxruntime(half, {"x": np.zeros((2, 8), np.float32)})["z"]
    assert np.all(z == np.float32(3.0001))


def test_fp16_io_when_io_types_are_not_kept() -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
             helper.make_node("Sigmoid", ["h"], ["y"], name="sigmoid")]
    model = model_of(graph(nodes, [("x", TP.FLOAT, [2, 8])], [("y", TP.FLOAT, [2, 8])], [f32("w", W)]))
    half, d = convert_fp16(model, keep_io_types=False)
    onnx.checker.check_model(half, full_check=True)
    assert half.graph.input[0].type.tensor_type.elem_type == TP.FLOAT16
    assert half.graph.output[0].type.tensor_type.elem_type == TP.FLOAT16
    assert d.casts_added == 0
    out = run_onnxruntime(half, {"x": X.astype(np.float16)})["y"]
    ref = run_onnxruntime(model, {"x": X})["y"]
    assert out.dtype == np.float16 and np.abs(out - ref).max() < 5e-3


def test_opset_below_six_is_upgraded_first() -> None:
    """Cast-1 takes its target type as a string: the graph is raised to opset 6 before casts go in."""
    nodes = [helper.make_node("Mul", ["x", "w"], ["h"], name="mul", broadcast=1),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    g = graph(nodes, [("x", TP.FLOAT, [2, 8]), ("w", TP.FLOAT, [8])], [("y", TP.FLOAT, [2, 8])],
              [f32("w", np.linspace(-1, 1, 8))])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 5)])
    model.ir_version = 3
    half, _ = convert_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    assert half.opset_import[0].version == 6
    assert [attr(n, "to") for n in half.graph.node if n.op_type == "Cast"] == [TP.FLOAT16, TP.FLOAT]


def silero_files() -> Sequence[Path]:
    silero_vad = pytest.importorskip("silero_vad")
    data = Path(silero_vad.__file__).parent / "data"
    return [data / "silero_vad.onnx", data / "silero_vad_op18_ifless.onnx"]


@pytest.mark.parametrize("index", [0, 1], ids=["if-subgraphs", "op18-ifless"])
def test_silero_vad_fp16(index: int) -> None:
    """The whole network inside If bodies, LSTM state, int64 `sr`: builds, checks, runs, and
    the speech probability and state stay within fp16 error."""
    path = silero_files()[index]
    model = onnx.load(str(path))
    t = np.arange(512) / 16000.0
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * RNG.normal(size=512)).astype(np.float32)[None]
    feeds = {"input": audio, "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
    half, d = converted_and_checked(model, feeds, rel=5e-2)
    assert d.kept_fp32 == [] and d.retries == 0
    ref, out = run_onnxruntime(model, feeds), run_onnxruntime(half, feeds)
    for name in ref:
        rel_l2 = np.linalg.norm(out[name] - ref[name]) / max(np.linalg.norm(ref[name]), 1e-12)
        assert rel_l2 < 1e-2, name


def test_the_input_path_to_a_node_kept_fp32_stays_fp32() -> None:
    """A converted audio model pads, slices and reshapes its input before the first Conv. With the Convs
    kept fp32 (op:Conv), none of that path may be cast to fp16: the input reaches them exactly."""
    x = (RNG.normal(size=(1, 1, 64)) + np.float32(1e-4)).astype(np.float32)  # values fp16 cannot hold
    w = (RNG.normal(size=(4, 1, 3)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["padded"], name="pad", mode="reflect"),
        helper.make_node("Slice", ["padded", "starts", "ends", "axes"], ["sliced"], name="slice"),
        helper.make_node("Reshape", ["sliced", "shape"], ["frames"], name="reshape"),
        helper.make_node("Conv", ["frames", "w"], ["y"], name="conv", pads=[1, 1]),
    ]
    inits = [numpy_helper.from_array(np.array([0, 0, 2, 0, 0, 2], np.int64), "pads"),
             numpy_helper.from_array(np.array([1], np.int64), "starts"),
             numpy_helper.from_array(np.array([67], np.int64), "ends"),
             numpy_helper.from_array(np.array([2], np.int64), "axes"),
             numpy_helper.from_array(np.array([1, 1, 66], np.int64), "shape"), f32("w", w)]
    model = model_of(graph(nodes, [("x", TP.FLOAT, [1, 1, 64])], [("y", TP.FLOAT, [1, 4, 66])], inits))
    half, d = converted_and_checked(model, {"x": x}, op_block_list=["Conv"])
    types = elem_types(half)
    assert types["padded"] == types["sliced"] == types["frames"] == TP.FLOAT
    assert not any(n.op_type == "Cast" and n.input[0] == "x" for n in half.graph.node)
    assert d.kept_fp32 == ["conv"]  # the path settles to fp32 as data movement, not as a block list entry
    conv_out = run_onnxruntime(half, {"x": x})["y"]
    assert np.array_equal(conv_out, run_onnxruntime(model, {"x": x})["y"])  # exact: no fp16 on the way

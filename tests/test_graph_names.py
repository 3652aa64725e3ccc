"""One name allocator for every graph pass, shared initializers through fp16, int64 -> int32 and int8,
and the ONNX Runtime load check that stands between a pass and an "ok" step. The models are tiny
hand-made ONNX graphs that reproduce what converted (tf2onnx-style) models do: one bias read by many
Convs, a node output already called `BIAS0`, an embedding matrix a Gather and a MatMul both read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from deployval import api
from deployval.errors import ExportError
from deployval.export import int8 as int8_module
from deployval.export.builders import loads_in_runtime
from deployval.export.fp16 import convert_fp16
from deployval.export.int8 import quantize_int8
from deployval.export.int32 import cast_int64_to_int32
from deployval.export.names import Names
from deployval.export.onnx_io import run_onnxruntime, runtime_refusal
from deployval.progress import Step

C = 4
OPSET = 17


def _model(nodes, inputs, outputs, initializers, **extra) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers, **extra)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def shared_bias_model(convs: int = 3) -> onnx.ModelProto:
    """`convs` Convs in a chain, all reading one bias `BIAS`, and a Relu whose output is already named
    `BIAS0`: the name ONNX Runtime's quantizer gives its first copy of the shared bias."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.normal(size=(C, C, 3, 3)) * 0.3).astype(np.float32), f"W{i}")
             for i in range(convs)]
    inits.append(numpy_helper.from_array(rng.normal(size=(C,)).astype(np.float32), "BIAS"))
    nodes, current = [], "x"
    for i in range(convs):
        out = "BIAS0" if i == 0 else f"c{i}"
        nodes.append(helper.make_node("Conv", [current, f"W{i}", "BIAS"], [f"conv_out{i}"], name=f"conv{i}",
                                      pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv_out{i}"], [out], name=f"relu{i}"))
        current = out
    nodes.append(helper.make_node("Identity", [current], ["y"], name="out"))
    return _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [1, C, 8, 8])],
                  [helper.make_tensor_value_info("y", TP.FLOAT, [1, C, 8, 8])], inits)


def tied_embedding_model() -> onnx.ModelProto:
    """Token ids -> Gather(E) -> MatMul(E) + one bias read by two Adds, Reshape twice by one int64 shape:
    the embedding matrix is the output projection too (tied weights)."""
    rng = np.random.default_rng(1)
    d = 8
    inits = [numpy_helper.from_array((rng.normal(size=(d, d)) * 0.5).astype(np.float32), "E"),
             numpy_helper.from_array(rng.normal(size=(d,)).astype(np.float32), "B"),
             numpy_helper.from_array(np.array([1, 6, d], np.int64), "shape")]
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed"),
        helper.make_node("Add", ["emb", "B"], ["h0"], name="add0"),
        helper.make_node("Reshape", ["h0", "shape"], ["h1"], name="reshape0"),
        helper.make_node("MatMul", ["h1", "E"], ["logits"], name="project"),
        helper.make_node("Add", ["logits", "B"], ["h2"], name="add1"),
        helper.make_node("Reshape", ["h2", "shape"], ["y"], name="reshape1"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("ids", TP.INT64, [1, 6])],
                  [helper.make_tensor_value_info("y", TP.FLOAT, [1, 6, d])], inits)


def _feeds(n: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(1, C, 8, 8)).astype(np.float32)} for _ in range(n)]


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def _bare_ort_int8(source: onnx.ModelProto, out: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """The model through ONNX Runtime's quantizer as it is, without deployval's preparation."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    class Reader:
        def __init__(self) -> None:
            self.left = list(feeds)

        def get_next(self):
            return self.left.pop() if self.left else None

    model_path = out.with_suffix(".float.onnx")
    onnx.save(source, str(model_path))
    quantize_static(str(model_path), str(out), Reader(), quant_format=QuantFormat.QDQ)
    return out


# --------------------------------------------------------------------------- the allocator


def test_names_sees_every_name_in_graphs_bodies_and_functions() -> None:
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["inner_out"], name="inner_node")], "then_body",
                             [], [helper.make_tensor_value_info("inner_out", TP.FLOAT, [1])],
                             [numpy_helper.from_array(np.zeros(1, np.float32), "inner_init")])
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.ones(1, np.float32), "sparse_values"),
                                       numpy_helper.from_array(np.zeros(1, np.int64), "sparse_indices"), [4])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=then)],
        "main", [helper.make_tensor_value_info("cond", TP.BOOL, []), helper.make_tensor_value_info("x", TP.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TP.FLOAT, [1])],
        [numpy_helper.from_array(np.zeros(1, np.float32), "unused_init")],
        value_info=[helper.make_tensor_value_info("stale_info", TP.FLOAT, [1])], sparse_initializer=[sparse])
    model = helper.make_model(graph, functions=[helper.make_function(
        "local", "fn_name", ["fn_in"], ["fn_out"], [helper.make_node("Relu", ["fn_in"], ["fn_out"], name="fn_node")],
        [helper.make_opsetid("", OPSET)])])
    names = Names.of(model)
    for name in ("branch", "y", "cond", "x", "unused_init", "stale_info", "sparse_values", "sparse_indices",
                 "inner_node", "inner_out", "inner_init", "then_body", "main", "fn_name", "fn_in", "fn_node"):
        assert name in names, name
    assert names.fresh("y") == "y_1" and names.fresh("y") == "y_2" and names.fresh("new") == "new"
    assert "y_1" in names and "" not in names


def test_fp16_and_int32_passes_name_nothing_after_an_existing_name() -> None:
    """An unused initializer and a value_info entry named as the fp16 pass names its fp16 copy and
    its Cast: the artifact still has one tensor per name and computes what the float model does."""
    model = shared_bias_model()
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((2, 2), np.float32), "BIAS_fp16"))
    model.graph.value_info.append(helper.make_tensor_value_info("x_fp16", TP.FLOAT, [3]))
    converted, details = convert_fp16(model, node_block_list=["conv1"])  # conv1 keeps reading fp32 BIAS
    initializers = [t.name for t in converted.graph.initializer]
    assert len(initializers) == len(set(initializers))
    assert {"BIAS", "BIAS_fp16_1"} <= set(initializers) and details.initializers_converted >= 1
    produced = [o for n in converted.graph.node for o in n.output]
    assert len(produced) == len(set(produced)) and not set(produced) & set(initializers)
    assert runtime_refusal(converted) is None
    for feed in _feeds(2):
        assert _rel_l2(run_onnxruntime(converted, feed)["y"], run_onnxruntime(model, feed)["y"]) < 2e-3

    tied = tied_embedding_model()
    tied.graph.value_info.append(helper.make_tensor_value_info("shape__int64", TP.FLOAT, [3]))
    narrowed, _ = cast_int64_to_int32(tied)
    produced = [o for n in narrowed.graph.node for o in n.output]
    assert "shape__int64" not in produced and len(produced) == len(set(produced))


# --------------------------------------------------------------------------- shared initializers


def test_int8_shared_bias_next_to_a_node_output_named_like_its_copy(tmp_path: Path) -> None:
    model, feeds = shared_bias_model(), _feeds()
    bare = _bare_ort_int8(model, tmp_path / "bare.onnx", feeds)  # the collision is real: the runtime refuses it
    assert "conv1" in (runtime_refusal(bare) or "")

    details = quantize_int8(model, feeds, tmp_path / "int8.onnx")
    assert runtime_refusal(tmp_path / "int8.onnx") is None
    assert details.unshared_initializers == 2 and details.quantized_per_op_type == {"Conv": 3}
    quantized = onnx.load(str(tmp_path / "int8.onnx"))
    biases = [n.input[2] for n in quantized.graph.node if n.op_type == "Conv"]
    assert len(set(biases)) == 3 and "BIAS0" not in biases
    for feed in _feeds(3, seed=7):
        assert _rel_l2(run_onnxruntime(tmp_path / "int8.onnx", feed)["y"], run_onnxruntime(model, feed)["y"]) < 0.05


def test_tied_embedding_through_int8_fp16_and_int32(tmp_path: Path) -> None:
    model = tied_embedding_model()
    rng = np.random.default_rng(3)
    feeds = [{"ids": rng.integers(0, 8, size=(1, 6)).astype(np.int64)} for _ in range(6)]

    details = quantize_int8(model, feeds, tmp_path / "int8.onnx")
    quantized = onnx.load(str(tmp_path / "int8.onnx"))
    gather = next(n for n in quantized.graph.node if n.op_type == "Gather")
    float_initializers = {t.name for t in quantized.graph.initializer if t.data_type == TP.FLOAT}
    assert gather.input[0] in float_initializers  # the embedding stays float, the MatMul reads its int8 copy
    # pre-processing fuses the projection and the second Add into a Gemm reading its own copy of B too
    assert list(details.quantized_per_op_type.values()) == [1] and details.weights_quantized == 1
    converted, _ = convert_fp16(model)
    narrowed, int32_details = cast_int64_to_int32(model)
    assert int32_details.initializers == 1 and int32_details.int32_inputs == ["ids"]
    for artifact in (tmp_path / "int8.onnx", converted, narrowed):
        assert runtime_refusal(artifact) is None
    for feed in feeds[:3]:
        reference = run_onnxruntime(model, feed)["y"]
        assert _rel_l2(run_onnxruntime(tmp_path / "int8.onnx", feed)["y"], reference) < 0.05
        assert _rel_l2(run_onnxruntime(converted, feed)["y"], reference) < 2e-3
        np.testing.assert_array_equal(run_onnxruntime(narrowed, {"ids": feed["ids"].astype(np.int32)})["y"], reference)


def test_int8_renames_values_named_as_the_quantizer_names_its_own(tmp_path: Path) -> None:
    """`W_scale` read by a Mul next to a Conv weight `W`: ONNX Runtime's quantizer adds its per-channel
    scale under that name and the Mul would read it (the model then fails when it runs)."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((rng.normal(size=(C, C, 3, 3)) * 0.3).astype(np.float32), "W"),
             numpy_helper.from_array(np.full((1, C, 1, 1), 2.0, np.float32), "W_scale")]
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"], name="sigmoid"),
             helper.make_node("Mul", ["s", "W_scale"], ["y"], name="mul")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, [1, C, 8, 8])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, [1, C, 8, 8])], inits)
    details = quantize_int8(model, _feeds(), tmp_path / "int8.onnx")
    assert details.renamed_values == {"W_scale": "W_scale_orig"}
    for feed in _feeds(2, seed=5):
        assert _rel_l2(run_onnxruntime(tmp_path / "int8.onnx", feed)["y"], run_onnxruntime(model, feed)["y"]) < 0.05


# --------------------------------------------------------------------------- the load check


def test_load_check_names_the_pass_and_node_or_skips_when_the_source_is_refused_too(tmp_path: Path) -> None:
    model = shared_bias_model()
    bare = _bare_ort_int8(model, tmp_path / "bare.onnx", _feeds())
    source = tmp_path / "source.onnx"
    onnx.save(model, str(source))
    step = Step("int8")
    with pytest.raises(ExportError, match=r"the int8 pass made a model ONNX Runtime refuses at node 'conv1'"):
        loads_in_runtime(step, bare, source, "int8")
    assert step.details["load_check"]["status"] == "fail"

    ok = Step("int8")
    assert loads_in_runtime(ok, source, None, "int8") == "" and ok.details["load_check"]["status"] == "ok"
    skipped = Step("int8")  # the runtime refuses the source too: not the pass's doing
    assert loads_in_runtime(skipped, bare, bare, "int8") == ""
    assert skipped.details["load_check"]["status"] == "skipped"


def test_int8_step_fails_naming_the_pass_when_the_runtime_refuses_the_artifact(tmp_path: Path, monkeypatch) -> None:
    """With the shared bias left shared, ONNX Runtime's quantizer wires `BIAS0` (a Relu output) in as a
    bias: the int8 step fails, named, instead of saying ok and leaving the row a runtime error. Then, as
    built, the same model's int8 row is judged and its step says the artifact loaded."""
    path = tmp_path / "shared.onnx"
    onnx.save(shared_bias_model(), str(path))
    inputs = _feeds(1)[0]
    monkeypatch.setattr(int8_module, "own_initializers", lambda model, nodes, taken: [])
    report = api.compare(str(path), backends=("ort",), precisions=("fp32", "int8"), inputs=inputs,
                         iterations=1, cache_dir=tmp_path / "planted")
    step = next(s for s in report.steps if s.name == "int8")
    assert step.status == "fail" and "the int8 pass made a model ONNX Runtime refuses at node 'conv1'" in step.reason
    row = next(r for r in report.results if r.precision == "int8")
    assert row.status == "error" and "int8 pass" in row.reason

    monkeypatch.undo()
    report = api.compare(str(path), backends=("ort",), precisions=("fp32", "int8"), inputs=inputs,
                         iterations=1, cache_dir=tmp_path / "built")
    step = next(s for s in report.steps if s.name == "int8")
    assert step.status == "ok" and step.details["load_check"]["status"] == "ok"
    assert next(r for r in report.results if r.precision == "int8").status in ("pass", "fail")

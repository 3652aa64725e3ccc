"""`debug` after graph rewrites: a BatchNormalization (or a Mul by a constant) merged into the conv
before it keeps the conv's output name, and the tensor then holds the later value. Hand-built ONNX
files (Conv -> BatchNormalization with statistics far from (0, 1), so that the values before and after
the norm differ a lot) and PyTorch modules, at fp16 and int8 on ONNX Runtime: no layer may be blamed
for what the merged op does, and the merged op's layer is compared with the tensor holding its value.
The structural matching itself (meaning.py) on small graphs: a fold is recognised only when the
folded weights are the artifact's."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from onnx import helper as h

from deployval.catalog.registry import resolve_model
from deployval.debug.run import run_debug
from deployval.export.meaning import meanings
from deployval.model.arguments import parse_input_shape
from deployval.model.spec import RunConfig

# Far beyond int8's error (rel L2 below 0.05 on these graphs) and far below a pre- against a post-norm
# value (rel L2 above 0.5: checked on the files themselves).
HUGE = 0.3


def _norm(rng: np.random.Generator, name: str, channels: int = 8) -> dict[str, np.ndarray]:
    return {f"{name}_scale": rng.uniform(0.5, 3.0, channels), f"{name}_shift": rng.uniform(-2, 2, channels),
            f"{name}_mean": rng.uniform(-1, 1, channels), f"{name}_var": rng.uniform(0.05, 0.5, channels)}


def _conv(name: str, x: str, out: str) -> onnx.NodeProto:
    return h.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [out], name=name, pads=[1, 1, 1, 1])


def _bn(name: str, x: str, out: str) -> onnx.NodeProto:
    return h.make_node("BatchNormalization", [x, *(f"{name}_{k}" for k in ("scale", "shift", "mean", "var"))], [out],
                       name=name)


def _save(path, nodes, silent_channel=False):
    rng = np.random.default_rng(0)
    weights = {"conv1_w": rng.standard_normal((8, 3, 3, 3)) * 0.3, "conv1_b": rng.standard_normal(8) * 0.1,
               "conv2_w": rng.standard_normal((8, 8, 3, 3)) * 0.2, "conv2_b": rng.standard_normal(8) * 0.1,
               **_norm(rng, "bn1"), **_norm(rng, "bn2")}
    if silent_channel:  # input channel 0 does not reach the output: only the small channels matter
        weights["conv1_w"][:, 0] = 0.0
    used = {i for n in nodes for i in n.input}
    graph = h.make_graph(nodes, path.stem, [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
                         initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k)
                                      for k, v in weights.items() if k in used])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("rewrites")
    relu = [_conv("conv1", "x", "conv1_out"), _bn("bn1", "conv1_out", "bn1_out"),
            h.make_node("Relu", ["bn1_out"], ["relu1_out"], name="relu1"),
            _conv("conv2", "relu1_out", "conv2_out"), _bn("bn2", "conv2_out", "y")]
    return {
        # Conv -> BN -> Relu -> Conv -> BN, a detector's backbone
        "relu": _save(root / "conv_bn_relu.onnx", relu),
        "silent": _save(root / "silent_channel.onnx", relu, silent_channel=True),
        # no activation between: at int8 the next Conv reads the norm's value through Q/DQ
        "direct": _save(root / "conv_bn_conv.onnx", [
            _conv("conv1", "x", "conv1_out"), _bn("bn1", "conv1_out", "bn1_out"),
            _conv("conv2", "bn1_out", "conv2_out"), _bn("bn2", "conv2_out", "b2"),
            h.make_node("Add", ["b2", "bn1_out"], ["y"], name="residual")]),
    }


def _debug_file(path, precision):
    spec = resolve_model(str(path))
    return run_debug(spec, "ort", precision, RunConfig())


def _rows(report):
    return [(r.label, r.status, r.metrics.get("rel_l2"), r.reason) for r in report.layers]


def test_the_files_norms_change_the_values_a_lot(files):
    """The premise: a conv's value before its norm is far from the norm's output."""
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(files["relu"]))
    model.graph.output.extend([h.make_empty_tensor_value_info(n) for n in ("conv1_out", "bn1_out")])
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    before, after = ReferenceEvaluator(model).run(["conv1_out", "bn1_out"], {"x": x})
    assert np.linalg.norm(before - after) / np.linalg.norm(after) > 0.5


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("name", ["relu", "direct"])
def test_onnx_file_norm_merged_into_conv_is_not_blamed_on_the_conv(files, name, precision):
    report = _debug_file(files[name], precision)
    rows = _rows(report)
    assert report.exit_code == 0 and report.first_divergent is None, rows
    compared = [r for r in report.layers if r.compared]
    assert all(r.metrics["rel_l2"] < HUGE for r in compared), rows
    conv1, bn1 = report.layer("conv1"), report.layer("bn1")
    assert conv1.status == "vanished" and "BatchNormalization after it was merged" in conv1.reason, rows
    # the norm's row is compared with the tensor that holds its value, the merged conv's
    assert bn1.compared and bn1.tensor == "conv1_out" and "conv1_out" in bn1.reason, rows
    assert "Conv" in bn1.ops
    assert bn1.own is not None and bn1.own.get("passed") is True, bn1.own  # replayed from the file's input


def test_onnx_file_real_int8_error_is_still_found_after_the_merge(files, tmp_path):
    """Nothing hides a real divergence: with one input channel 1000 times the others (and without
    weights to the output), the first conv's int8 input scale wipes out the channels that matter; the
    merged norm's row (the conv's value) fails, and its error is its own. --repro cuts out the conv with
    its Q/DQ nodes and expects the norm's value."""
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    x[:, 0] *= 1000.0
    np.save(tmp_path / "x.npy", x)
    spec = resolve_model(str(files["silent"]), inputs_file=tmp_path / "x.npy")
    report = run_debug(spec, "ort", "int8", RunConfig(), inputs=tmp_path / "x.npy", repro=tmp_path / "repro")
    assert report.first_divergent == "bn1", _rows(report)
    assert report.localized is not None and report.localized.label == "bn1"
    assert report.repro["written"], report.repro
    cut = onnx.load(str(tmp_path / "repro" / "model.onnx"))
    assert "Conv" in [n.op_type for n in cut.graph.node] and [o.name for o in cut.graph.output] == ["conv1_out"]
    from onnx.reference import ReferenceEvaluator

    norm = onnx.load(str(files["silent"]))
    norm.graph.output.extend([h.make_empty_tensor_value_info("bn1_out")])
    (expected,) = ReferenceEvaluator(norm).run(["bn1_out"], {"x": x})
    with np.load(tmp_path / "repro" / "expected.npz") as saved:
        np.testing.assert_allclose(saved["conv1_out"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_module_scale_merged_into_conv_is_not_blamed_on_the_conv(precision):
    spec = resolve_model("debug_models:conv_scale_conv", input_shapes=[parse_input_shape("1x3x16x16")])
    report = run_debug(spec, "ort", precision, RunConfig())
    rows = _rows(report)
    assert report.exit_code == 0 and report.first_divergent is None, rows
    conv1, scale = report.layer("conv1"), report.layer("scale")
    assert conv1.status == "vanished" and "Mul after it was merged" in conv1.reason, rows
    assert scale.compared and scale.metrics["rel_l2"] < HUGE, rows
    assert scale.tensor and f"'{scale.tensor}'" in conv1.reason  # the conv's tensor holds the scaled value
    assert all(r.metrics["rel_l2"] < HUGE for r in report.layers if r.compared), rows


def test_module_conv_bn_relu_at_int8():
    spec = resolve_model("debug_models:conv_bn_relu", input_shapes=[parse_input_shape("1x3x16x16")])
    report = run_debug(spec, "ort", "int8", RunConfig())
    rows = _rows(report)
    assert report.exit_code == 0 and report.first_divergent is None, rows
    assert report.layer("bn1").compared and report.layer("bn2").compared, rows
    assert all(r.metrics["rel_l2"] < HUGE for r in report.layers if r.compared), rows


# ----------------------------------------------------------------------------- the matching itself


def _model(nodes, weights, output="y"):
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                         [h.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                         initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k)
                                      for k, v in weights.items()])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def _reference_and_fold():
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((4, 3, 1, 1)), rng.standard_normal(4)
    norm = _norm(rng, "bn", 4)
    reference = _model([h.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"), _bn("bn", "c", "n"),
                        h.make_node("Relu", ["n"], ["y"], name="relu")], {"w": w, "b": b, **norm})
    factor = norm["bn_scale"] / np.sqrt(norm["bn_var"] + 1e-5)
    folded_w, folded_b = w * factor[:, None, None, None], (b - norm["bn_mean"]) * factor + norm["bn_shift"]
    return reference, w, b, folded_w, folded_b


def _artifact(w, b):
    return _model([h.make_node("Conv", ["x", "w2", "b2"], ["c"], name="conv"),
                   h.make_node("Relu", ["c"], ["y"], name="relu")], {"w2": w, "b2": b})


def test_a_verified_fold_holds_the_norms_value():
    reference, _, _, folded_w, folded_b = _reference_and_fold()
    found = meanings(reference, _artifact(folded_w, folded_b))
    assert found.held["c"] == "n" and found.merged["c"].ops == "BatchNormalization"
    assert found.candidate("n") == "c" and found.candidate("c") is None
    assert found.candidate("y") == "y"


def test_a_fold_that_does_not_give_the_weights_holds_no_reference_value():
    reference, _, _, folded_w, folded_b = _reference_and_fold()
    found = meanings(reference, _artifact(folded_w * 1.5, folded_b))
    assert found.merged["c"].holds is None and "c" not in found.held
    assert found.candidate("n") is None and found.candidate("c") is None
    assert "another value" in found.why_not("c", "onnx-int8")


def test_weights_that_differ_for_no_structural_reason_are_still_compared():
    """A conv with nothing after it to fold and broken weights: compared by name, so the error shows."""
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal((4, 3, 1, 1)), rng.standard_normal(4)
    reference = _model([h.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")], {"w": w, "b": b})
    artifact = _model([h.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")], {"w": -w, "b": b})
    found = meanings(reference, artifact)
    assert not found.merged and found.candidate("y") == "y"


def test_int8_weights_and_q_dq_wrappers_are_seen_through():
    """The artifact's weights as int8 with per-channel scales, its activations through Q/DQ."""
    reference, _, _, folded_w, folded_b = _reference_and_fold()
    scale = np.abs(folded_w).reshape(4, -1).max(axis=1) / 127.0
    q = np.round(folded_w / scale[:, None, None, None]).astype(np.int8)
    graph = h.make_graph([
        h.make_node("DequantizeLinear", ["wq", "ws"], ["w_dq"], name="w_dq", axis=0),
        h.make_node("Conv", ["x", "w_dq", "b2"], ["c"], name="conv"),
        h.make_node("QuantizeLinear", ["c", "s", "z"], ["c_q"], name="c_q"),
        h.make_node("DequantizeLinear", ["c_q", "s", "z"], ["c_dq"], name="c_dq"),
        h.make_node("Relu", ["c_dq"], ["y"], name="relu"),
    ], "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(q, "wq"), numpy_helper.from_array(scale.astype(np.float32), "ws"),
                     numpy_helper.from_array(folded_b.astype(np.float32), "b2"),
                     numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.int8(0), "z")])
    found = meanings(reference, h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]))
    assert found.held["c"] == "n" and found.candidate("n") == "c"
    assert found.held["y"] == "y" and "y" in found.proven  # the Relu reads the norm's value through Q/DQ

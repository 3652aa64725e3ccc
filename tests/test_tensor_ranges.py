"""fp16 ranges at tensor level: an overflow in forward code between two modules (no module's output
shows it, and ONNX Runtime's CPU provider keeps it in fp32) fails the ORT fp16 row, named by module
and ONNX node; kept and saturating tensors are exempt; memory stays within the budget."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deployval.judge.ranges import array_stats
from deployval.run.tensor_ranges import findings, record_tensor_ranges

FUNCTIONAL = ("compare", "dv_test_models:functional_overflow", "--input-shape", "x=1x4x8x8", "--backends", "ort",
              "--precisions", "fp16", "--iterations", "1")


def _report(path) -> dict:
    return json.loads(path.read_text())


def test_functional_overflow_fails_ort_fp16_naming_layer_and_node(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli(*FUNCTIONAL, "--json", report_path, "-q")
    assert result.code == 1, result.out + result.err
    report = _report(report_path)
    row = report["results"][0]
    assert row["status"] == "fail" and row["faithful"] is False
    analysis = report["analysis"]["activation_ranges"]
    assert analysis["level"] == "tensor"
    [finding] = analysis["fp16"]
    assert finding["kind"] == "overflow" and finding["module"] == "block" and finding["value"] > 1e5
    node = finding["node"]
    assert node and "layer 'block' reaches" in row["reason"] and f"in node '{node}' (Mul)" in row["reason"]
    assert "65504" in row["reason"] and f"node '{node}'" in result.out
    # The module outputs alone (the check before) see nothing: boost and norm are small.
    assert analysis["module_level"]["fp16"] == []
    assert max(r["max_abs"] for r in analysis["module_level"]["largest"]) < 10


def test_same_model_without_the_overflow_passes(cli, tmp_path):
    inputs = tmp_path / "small.npz"
    np.savez(inputs, x=np.random.default_rng(0).uniform(0, 0.4, (1, 4, 8, 8)).astype(np.float32))
    report_path = tmp_path / "r.json"
    result = cli(*FUNCTIONAL, "--inputs", inputs, "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    analysis = _report(report_path)["analysis"]["activation_ranges"]
    assert analysis["level"] == "tensor" and analysis["fp16"] == []
    assert 3e4 < analysis["largest"][0]["max_abs"] < 65504  # measured on these inputs, not the random ones


def test_keep_fp32_exempts_the_kept_module_only(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli(*FUNCTIONAL, "--keep-fp32", "block", "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    analysis = _report(report_path)["analysis"]["activation_ranges"]
    assert analysis["fp16"] == [] and analysis["exempt"]["kept_fp32"] >= 3
    # Keeping the norm alone leaves the product in block's own code in fp16: still an overflow.
    result = cli(*FUNCTIONAL, "--keep-fp32", "block.norm", "-q")
    assert result.code == 1 and "layer 'block' reaches" in result.out


def test_module_overflow_and_forward_code_are_named(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:hot_layer", "--input-shape", "x=1x3x16x16", "--backends", "ort",
                 "--precisions", "fp16", "--iterations", "1", "--json", report_path, "-q")
    assert result.code == 1 and "layer 'amplify' reaches" in result.out
    analysis = _report(report_path)["analysis"]["activation_ranges"]
    assert [(f["module"], f["kind"]) for f in analysis["fp16"]] == [("amplify", "overflow")]  # as the module check
    # `relu(stem(x)) + 1.0` runs in the model's own forward: named by the module before it.
    assert {"module": "", "after": "stem", "op": "Add"}.items() <= next(
        r for r in analysis["largest"] if r["op"] == "Add").items()


def test_onnx_file_overflow_is_named_by_node(cli, tmp_path):
    path = tmp_path / "boost.onnx"
    onnx.save(_boost_graph(), str(path))
    result = cli("compare", path, "--backends", "ort", "--precisions", "fp16", "--input-shape", "x=1x4x8x8",
                 "--iterations", "1", "-q")
    assert result.code == 1, result.out + result.err
    assert "node 'scale' (Mul) reaches" in result.out


def _boost_graph() -> onnx.ModelProto:
    """x -> Conv (2x) -> Relu -> Mul 62500 -> InstanceNormalization: the functional overflow as a file."""
    weight = (2.0 * np.eye(4, dtype=np.float32)).reshape(4, 4, 1, 1)
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.float32(62500.0), "k"),
             numpy_helper.from_array(np.ones(4, np.float32), "g"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="boost"),
             helper.make_node("Relu", ["c"], ["r"], name="act"),
             helper.make_node("Mul", ["r", "k"], ["m"], name="scale"),
             helper.make_node("InstanceNormalization", ["m", "g", "b"], ["y"], name="norm")]
    graph = helper.make_graph(nodes, "boost", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _attention_graph() -> onnx.ModelProto:
    """An attention score path with a finfo(float32).min mask (saturating, not an overflow), a softmax
    (probabilities far below fp16's subnormals: not a flush finding) and a real overflow after it."""
    big = np.float32(np.finfo(np.float32).min)
    inits = [numpy_helper.from_array(np.float32(0.0), "zero"), numpy_helper.from_array(big, "minval"),
             numpy_helper.from_array(np.float32(300.0), "k")]
    nodes = [
        helper.make_node("Where", ["mask", "zero", "minval"], ["bias"], name="mask_bias"),
        helper.make_node("Add", ["scores", "bias"], ["masked"], name="add_mask"),
        helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=-1),
        helper.make_node("Transpose", ["probs"], ["probs_t"], name="transpose"),
        helper.make_node("Add", ["probs_t", "k"], ["warm"], name="warm"),
        helper.make_node("Mul", ["warm", "k"], ["heat"], name="heat"),
        helper.make_node("Tanh", ["heat"], ["y"], name="squash"),
    ]
    graph = helper.make_graph(
        nodes, "attention",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 64]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 2])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def attention(tmp_path):
    path = tmp_path / "attention.onnx"
    onnx.save(_attention_graph(), str(path))
    rng = np.random.default_rng(0)
    scores = (rng.standard_normal((2, 64)) * 10).astype(np.float32)
    mask = np.ones((2, 64), dtype=bool)
    mask[:, 40:] = False
    return path, {"scores": scores, "mask": mask}


def test_mask_constants_and_probabilities_raise_no_false_alarm(attention):
    path, feeds = attention
    check = record_tensor_ranges(path, feeds)
    assert check.saturating == 2  # bias and masked: finfo.min carried by Where and Add
    measured = {r.tensor: r for r in check.ranges}
    assert set(measured) == {"scores", "probs", "warm", "heat", "y"}  # probs_t is a copy of probs
    assert check.copies == 1
    assert measured["probs"].probability and measured["probs"].below["fp16"] > 0.01  # tiny, by design
    found = findings(check, "fp16")
    assert [(f.kind, f.node) for f in found] == [("overflow", "heat")]  # the real one, named by node
    assert "node 'heat' (Mul) reaches" in found[0].describe() and measured["heat"].max_abs > 65504


def test_kept_nodes_and_op_block_list_are_exempt(attention):
    path, feeds = attention
    check = record_tensor_ranges(path, feeds, fp16_details={"kept_fp32": ["heat", "squash"]})
    assert findings(check, "fp16") == []  # made and read in fp32
    check = record_tensor_ranges(path, feeds, fp16_details={"kept_fp32": ["heat"]})
    assert [f.node for f in findings(check, "fp16")] == ["heat"]  # read by an fp16 node: cast to fp16, inf
    check = record_tensor_ranges(path, feeds, keep_fp32=("op:Mul", "op:Tanh"))  # as the converter is told
    assert findings(check, "fp16") == []


def test_segments_keep_exposed_memory_within_budget_and_measure_the_same(tmp_path):
    path = tmp_path / "boost.onnx"
    onnx.save(_boost_graph(), str(path))
    feeds = {"x": np.random.default_rng(1).uniform(0, 1, (1, 4, 8, 8)).astype(np.float32)}
    whole = record_tensor_ranges(path, feeds)
    split = record_tensor_ranges(path, feeds, budget_bytes=1100)  # one 1 KiB activation per run
    assert whole.segments == 1 and split.segments == 4
    assert [(r.tensor, r.max_abs, r.below) for r in split.ranges] == [(r.tensor, r.max_abs, r.below)
                                                                     for r in whole.ranges]
    assert [f.node for f in findings(split, "fp16")] == ["scale"]


def test_array_stats_blocks_match_a_direct_count():
    rng = np.random.default_rng(2)
    values = rng.standard_normal(3_000_000).astype(np.float32) * np.float32(1e-4)
    values[::7] = 0.0
    values[5] = np.inf
    values[6] = 7e4
    peak, elements, nonzero, below, subnormal = array_stats(values, ("fp16",))
    magnitude = np.abs(values)
    assert peak == np.float32(7e4) and elements == values.size and nonzero == np.count_nonzero(values)
    assert below["fp16"] == np.count_nonzero((magnitude > 0) & (magnitude < 2.0**-24))
    assert subnormal["fp16"] == np.count_nonzero((magnitude >= 2.0**-24) & (magnitude < 2.0**-14))


@pytest.mark.slow  # ~20-30 s on 2 cores: the default suite stays near 10 minutes
def test_module_outputs_come_from_the_reference_hooks_and_match_onnx_runtime(cli, tmp_path):
    """A tensor that is a module's own output is measured by the reference run's hooks, not exposed on
    ONNX Runtime again: same module names and (to float rounding) the same values; tensors inside a
    module's own forward code are still run (the functional overflow stays caught)."""
    import torch

    from deployval.catalog.registry import resolve_model
    from deployval.judge.ranges import record_ranges
    from deployval.model.loading import build_module

    out = tmp_path / "export"
    assert cli("export", "fine_organs", "--input-shape", "input=1x1x16x32x32", "--out", out, "--no-cache",
               "-q").code == 0
    module = build_module(resolve_model("fine_organs")).eval()
    x = np.random.default_rng(0).standard_normal((1, 1, 16, 32, 32)).astype(np.float32)
    with torch.inference_mode(), record_ranges(module) as recorded:
        module(torch.from_numpy(x))
    names = [n for n, _ in module.named_modules() if n]
    kwargs = {"raw_path": out / "exported.onnx", "module_names": names}
    onnx_only = record_tensor_ranges(out / "model.onnx", {"input": x}, **kwargs)
    hooked = record_tensor_ranges(out / "model.onnx", {"input": x}, module_ranges=recorded, **kwargs)
    assert onnx_only.from_modules == 0 and onnx_only.segments >= 1
    assert hooked.from_modules == len(onnx_only.ranges) - 1 and hooked.segments == 0  # all but the input
    by_tensor = {r.tensor: r for r in onnx_only.ranges}
    for r in hooked.ranges:
        ort = by_tensor[r.tensor]
        assert r.module == ort.module and r.elements == ort.elements
        assert r.max_abs == pytest.approx(ort.max_abs, rel=1e-4)
        assert r.below["fp16"] == pytest.approx(ort.below["fp16"], abs=1e-3)


def test_forward_code_inside_a_module_is_still_run(cli, tmp_path):
    report_path = tmp_path / "r.json"
    assert cli(*FUNCTIONAL, "--json", report_path, "-q").code == 1
    analysis = _report(report_path)["analysis"]["activation_ranges"]
    assert analysis["from_module_outputs"] >= 2 and analysis["segments"] >= 1  # boost, norm; the products run

"""`deployval debug --repro DIR` and `--model-explorer FILE.json`: the first divergent layer cut out of
the artifact as a model of its own whose `compare --expected` command fails alone (and passes once the
layer is right), and per-node data in Model Explorer's format with the report's numbers."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error, run_deployval, unnamed_and_repeated_nodes
from onnx import TensorProto, numpy_helper
from onnx import helper as h

from deployval.catalog.registry import resolve_model
from deployval.debug.model_explorer import STATUS_CODES, node_ids, series_paths
from deployval.debug.run import run_debug
from deployval.export.onnx_io import run_onnxruntime
from deployval.judge.stats import compare_tensors
from deployval.model.arguments import parse_input_shape
from deployval.model.spec import RunConfig, Tolerance


def debug(model: str, shape: str, precision: str = "fp32", **kwargs):
    spec = resolve_model(model, input_shapes=[parse_input_shape(shape)])
    return run_debug(spec, "ort", precision, RunConfig(), **kwargs)


@pytest.fixture(scope="module")
def conv_stack(tmp_path_factory):
    """conv_stack's planted defect (features.4 reads its parameters reversed in the export only)."""
    root = tmp_path_factory.mktemp("repro")
    report = debug("debug_models:conv_stack", "x=1x3x16x16", repro=root / "repro",
                   model_explorer=root / "layers.json")
    return report, root


def readme_command(directory) -> list[str]:
    text = (directory / "README.md").read_text()
    command = re.search(r"```\n(deployval compare .*)\n```", text).group(1)
    return shlex.split(command)[1:]  # without "deployval"


def load_npz(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# ----------------------------------------------------------------------------- --repro


def test_repro_is_the_defective_layer_alone(conv_stack):
    report, root = conv_stack
    directory = root / "repro"
    model = onnx.load(str(directory / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Mul", "Add"]  # the ChannelAffine, nothing else
    inputs, expected = load_npz(directory / "inputs.npz"), load_npz(directory / "expected.npz")
    assert list(inputs) == [i.name for i in model.graph.input]
    assert list(expected) == [o.name for o in model.graph.output] == [report.layer("features.4").tensor]
    assert report.repro["written"] and report.repro["layer"] == "features.4" and report.repro["nodes"] == 2
    # what the cut gives is what the debug run measured for the layer (its own error is its whole error)
    got = run_onnxruntime(model, inputs)
    name = model.graph.output[0].name
    stats, failures = compare_tensors(expected[name], got[name], Tolerance(atol=1e-3, rtol=1e-3))
    assert failures and stats.metrics()["rel_l2"] == pytest.approx(report.layer("features.4").metrics["rel_l2"],
                                                                   rel=1e-4)
    assert "--atol 0.001 --rtol 0.001" in (directory / "README.md").read_text()


def test_readme_command_fails_alone_and_passes_on_a_correct_layer(conv_stack, tmp_path):
    _, root = conv_stack
    directory = root / "repro"
    failing = run_deployval(*readme_command(directory), "-q")
    assert failing.code == 1, failing.out[-2000:] + failing.err[-2000:]
    # the same command with the outputs the cut really computes as expected: nothing to report
    fixed = tmp_path / "fixed"
    shutil.copytree(directory, fixed)
    model = onnx.load(str(fixed / "model.onnx"))
    np.savez(fixed / "expected.npz", **run_onnxruntime(model, load_npz(fixed / "inputs.npz")))
    passing = run_deployval(*[a.replace(str(directory), str(fixed)) for a in readme_command(directory)], "-q")
    assert passing.code == 0, passing.out[-2000:] + passing.err[-2000:]


def test_a_cut_from_the_fp16_artifact_takes_float16(tmp_path):
    """An ONNX file at fp16: the cut comes from the fp16 artifact, the reference is ONNX Runtime fp32 on the file."""
    x = h.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])
    y = h.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])
    weights = {"w": np.random.default_rng(0).standard_normal((8, 8)) * 0.3, "big": 1000.3, "thousand": 1000.0}
    graph = h.make_graph([  # fp16 rounds 1000.3 to 1000.5: a 0.2 error once 1000 is taken off again
        h.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
        h.make_node("Add", ["m", "big"], ["a"], name="shift"),
        h.make_node("Sub", ["a", "thousand"], ["d"], name="unshift"),
        h.make_node("Tanh", ["d"], ["y"], name="tanh"),
    ], "cancel", [x], [y], initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k)
                                        for k, v in weights.items()])
    path = tmp_path / "cancel.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    report = debug(str(path), "x=4x8", "fp16", repro=tmp_path / "repro")
    assert report.repro["written"], report.repro
    model = onnx.load(str(tmp_path / "repro" / "model.onnx"))
    assert len(model.graph.node) <= 3, [n.op_type for n in model.graph.node]
    inputs = load_npz(tmp_path / "repro" / "inputs.npz")
    declared = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in model.graph.input}
    assert {k: v.dtype for k, v in inputs.items()} == declared and np.float16 in declared.values()
    result = run_deployval(*readme_command(tmp_path / "repro"), "-q")
    assert "--precisions fp16" in " ".join(readme_command(tmp_path / "repro"))
    assert result.code == 1, result.out[-2000:] + result.err[-2000:]


def test_a_layer_fed_by_functional_code_gets_a_bigger_cut_that_still_fails(tmp_path):
    """tiny_transformer: proj diverges first, the planted scale sits in attention's own code before it."""
    report = debug("debug_models:tiny_transformer", "x=1x12x8", repro=tmp_path)
    repro = report.repro
    assert repro["layer"] == "blocks.1.attn.proj" and repro["fails"], repro
    assert 2 < repro["nodes"] <= 12 and {"Softmax", "Mul"} <= set(repro["ops"])
    assert any("forces a bigger cut" in note for note in repro["notes"])
    assert "forces a bigger cut" in (tmp_path / "README.md").read_text()


def test_nothing_diverged_writes_nothing(cli, tmp_path):
    result = cli("debug", "convs", "--repro", tmp_path / "none", "-q")
    assert result.code == 0, result.err
    assert "no layer diverged: --repro wrote nothing" in result.out
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--model-explorer", "layers.txt", "use a .json file name"),
    ("--repro", "a_file", "is a file, not a directory"),
])
def test_bad_output_paths_are_refused_up_front(cli, tmp_path, option, value, message):
    (tmp_path / "a_file").write_text("")
    assert_one_line_error(cli("debug", "convs", option, tmp_path / value, "-q"), 2, message)


# ----------------------------------------------------------------------------- --model-explorer


def test_model_explorer_node_data_carries_the_report_numbers(conv_stack):
    report, root = conv_stack
    paths = series_paths(root / "layers.json")
    data = {series: json.loads(path.read_text()) for series, path in paths.items()}
    artifact = onnx.load(report.artifact["path"], load_external_data=False)
    producer = {o: n.name for n in artifact.graph.node for o in n.output}
    first = report.layer("features.4")
    node = producer[first.tensor]
    assert report.model_explorer["first_divergent_node"] == node
    for series in data.values():  # GraphNodeData: results by node id, colour rules
        assert set(series) >= {"results", "thresholds", "gradient"} and set(series["results"]) <= set(producer.values())
    # Model Explorer types a value float | int: the status is a code, coloured by one threshold per code
    assert data["status"]["results"][node]["value"] == STATUS_CODES["first divergent"]
    assert [t["value"] for t in data["status"]["thresholds"]] == sorted(STATUS_CODES.values())
    # features.4 (ChannelAffine) is two nodes, Mul and Add: both carry its numbers, not only the last
    affine = [n.name for n in artifact.graph.node if n.op_type in ("Mul", "Add")]
    assert len(affine) == 2 and node in affine
    for name in affine:
        assert data["status"]["results"][name]["value"] == STATUS_CODES["first divergent"]
        assert data["rel_l2"]["results"][name]["value"] == pytest.approx(first.metrics["rel_l2"])
    assert data["rel_l2"]["results"][node]["value"] == pytest.approx(first.metrics["rel_l2"])
    assert data["max_abs"]["results"][node]["value"] == pytest.approx(first.metrics["max_abs"])
    assert data["own_rel_l2"]["results"][node]["value"] == pytest.approx(first.own["metrics"]["rel_l2"])
    assert data["new_share"]["results"][node]["value"] == pytest.approx(first.new_share)
    before = producer[report.layer("features.2").tensor]
    assert data["status"]["results"][before]["value"] == STATUS_CODES["pass"]


def test_node_ids_follow_the_onnx_adapter_naming():
    """Unnamed and repeated node names get the ids onnx_ir's NameFixPass (run by the ONNX adapter) gives."""
    ir = pytest.importorskip("onnx_ir")
    from onnx_ir.passes.common import NameFixPass

    model = unnamed_and_repeated_nodes()
    fixed = ir.serde.deserialize_model(model)
    NameFixPass()(fixed)
    assert node_ids(model.graph) == [n.name for n in fixed.graph]


def test_the_repro_command_keeps_the_device_and_backend_settings(tmp_path):
    from deployval.debug.repro import compare_command, runtime_args
    from deployval.model.spec import RunConfig

    config = RunConfig(device="cuda", backend_options={"trt": {"workspace_mb": 64, "fp16_route": "flag",
                                                                "builder_optimization_level": 5}})
    args = runtime_args(config)
    assert args[:4] == ["--device", "cuda", "--backend-option", "trt.workspace_mb=64"]
    command = compare_command(tmp_path, "trt", "fp16", {"atol": 1e-3, "rtol": 1e-3}, args)
    assert command.endswith("--device cuda --backend-option trt.workspace_mb=64 --backend-option "
                            "trt.fp16_route=flag --backend-option trt.builder_optimization_level=5"), command
    assert runtime_args(RunConfig()) == []
    # an int8 layer judged by statistics: the cut is judged by exactly those bounds, not fp32's atol/rtol
    command = compare_command(tmp_path, "ort", "int8", {"rel_l2": 0.1, "cosine": 0.995, "atol": None})
    assert "--precisions fp32 --tolerance rel_l2=0.1,cosine=0.995" in command and "--atol" not in command

"""OpenVINO on ONNX files deployval did not export (tests/onnx_wild.py): the fp32 row, its hint pinned to
f32, matches ONNX Runtime fp32 or is an ERROR in OpenVINO's own words (never the line of its sources that
raised); the int8 row (NNCF) is judged, SKIPPED where NNCF places no quantizer, or an ERROR with NNCF's or
OpenVINO's reason. Opset < 10 files are converted to 13 for NNCF and nodes named uniquely first.

Measured over the whole corpus here (118 files ONNX Runtime runs, the large CNNs left out): openvino fp32
112 pass, 6 errors (sequence types, an If whose branch ranks are dynamic); none fails. The default suite
takes a sample of each kind; the rest is slow (make test-slow)."""

from __future__ import annotations

import importlib.util

import pytest
from onnx_wild import corpus, model_and_inputs, silero_inputs

from deployval import api
from deployval.backends.openvino import OpenVinoRunner, openvino_reason
from deployval.errors import UsageError

available, why = OpenVinoRunner.available()
if available and importlib.util.find_spec("nncf") is None:
    available, why = False, "nncf is not installed"
LARGE = ("light/light_vgg19", "light/light_zfnet512", "light/light_bvlc_alexnet")
# One of each kind in the default suite: opset 6-9 files NNCF needs converted, a model-zoo CNN, opset 21
# files, an If whose branches OpenVINO cannot convert, sequence types, and a file with duplicate node names.
SAMPLE = ("pytorch-converted/test_Conv2d", "pytorch-operator/test_operator_conv", "light/light_squeezenet",
          "opset21/test_Conv2d", "opset21/test_GLU", "silero/silero_vad", "silero/silero_vad_16k_sequence",
          "simple/test_sequence_model1")
MODELS = [pytest.param(*m, id=m[0], marks=[] if m[0] in SAMPLE else [pytest.mark.slow])
          for m in corpus() if m[0] not in LARGE]


@pytest.mark.skipif(not available, reason=why)
@pytest.mark.parametrize(("label", "path", "data"), MODELS)
def test_openvino_fp32_matches_onnx_runtime_and_int8_is_judged_or_says_why(label, path, data, tmp_path):
    path, inputs = model_and_inputs(label, path, data, tmp_path)
    if isinstance(inputs, str):
        pytest.skip(f"the model's test data cannot be fed: {inputs}")
    shapes = {k: v.shape for k, v in (inputs or {}).items() if v.ndim}
    try:
        report = api.compare(str(path), backends=("ort", "openvino"), precisions=("fp32", "int8"), inputs=inputs,
                             input_shapes=shapes, iterations=1, cache_dir=tmp_path)
    except UsageError as exc:
        pytest.skip(f"no fp32 reference: {exc.one_line()}")
    rows = {(r.backend, r.precision): r for r in report.results}
    fp32, int8 = rows[("openvino", "fp32")], rows[("openvino", "int8")]
    assert fp32.status in ("pass", "error"), f"{fp32.status}: {fp32.reason}"
    for row in (fp32, int8):
        if row.status == "error":
            assert "OpenVINO" in row.reason or "NNCF" in row.reason, row.reason
            assert "Exception from src/" not in row.reason and "failed at src/" not in row.reason, row.reason
    assert int8.status in ("pass", "fail", "skipped", "error"), int8.status
    if int8.status == "skipped":
        assert "nothing to quantize in int8" in int8.reason, int8.reason
    if int8.status in ("pass", "fail"):
        quantized = int(int8.details["int8_layers"].split(" of ")[0])
        assert quantized > 0, int8.details


def test_openvino_reasons_skip_the_source_locations():
    class Raised(Exception):
        pass

    conversion = Raised("Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'false' failed at src/frontends/"
                        "common_translators/src/unconverted_ops_report.cpp:151:\nFrontEnd API failed with "
                        "OpConversionFailure:\nModel wasn't fully converted.\n\nSummary:\n-- Conversion is failed "
                        "for: Conv-16, ReduceMean-16\n")
    assert openvino_reason(conversion) == ("FrontEnd API failed with OpConversionFailure: Conversion is failed for: "
                                           "Conv-16, ReduceMean-16")
    port = Raised("Exception from src/inference/src/cpp/infer_request.cpp:189:\nCheck '::getPort(port, name, "
                  "{_impl->get_inputs(), _impl->get_outputs()})' failed at src/inference/src/cpp/infer_request."
                  "cpp:191:\nPort for tensor name Y was not found.\n")
    assert openvino_reason(port) == "Port for tensor name Y was not found."


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf is not installed")
def test_an_old_opset_is_converted_and_duplicate_node_names_made_unique_for_nncf():
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from deployval.export.nncf_int8 import TARGET_OPSET, prepared

    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel())
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="same"),
             helper.make_node("Relu", ["a"], ["y"], name="same")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 7
    fixed, changes = prepared(model)
    assert changes == {"opset": f"9 -> {TARGET_OPSET} (NNCF needs 10 or later)", "nodes_named": 1}
    assert [n.name for n in fixed.graph.node] == ["same", "same_1"]
    onnx.checker.check_model(fixed)


@pytest.mark.skipif(not available, reason=why)
def test_where_nncf_int8_breaks_the_silero_vad_sequence_model_is_localized_without_blaming_the_layers_before(
        tmp_path):
    """silero_vad_16k_sequence at NNCF int8 on OpenVINO: the STFT's convolution still agrees (rel L2 ~0.01),
    then its power spectrum does not at all (rel L2 1), while that region alone on the reference inputs is
    within tolerance. The debugger says so, naming the slices OpenVINO fused in between, instead of calling
    it an error that builds up over the layers before."""
    import numpy as np

    from deployval.catalog.registry import resolve_model
    from deployval.debug.run import run_debug
    from deployval.model.spec import RunConfig

    path = next(p for label, p, _ in corpus() if label == "silero/silero_vad_16k_sequence")
    np.savez(tmp_path / "x.npz", **silero_inputs(path))
    spec = resolve_model(str(path), inputs_file=tmp_path / "x.npz")
    report = run_debug(spec, "openvino", "int8", RunConfig(cache_dir=tmp_path), inputs=tmp_path / "x.npz")
    if report.exit_code == 0:  # int8 kernels differ between CPUs: measured here on AVX512 (AMD EPYC)
        pytest.skip("NNCF's int8 of this model does not diverge on this CPU")
    assert report.exit_code == 1 and report.first_divergent == "/stft/Pow", report.first_divergent
    assert report.layer("/stft/Conv").status == "pass"
    assert report.localized.kind == "jump", report.localized
    assert "from at most" in report.localized.explanation and "(/stft/Conv)" in report.localized.explanation
    assert "/stft/Slice" in report.localized.explanation and "builds up" not in report.localized.explanation


def test_a_gradual_error_is_not_a_jump():
    from deployval.debug.triage import jump_explanation

    assert jump_explanation(0.02, 0.12, (0.09, "a"), "ort", []) is None  # grew gradually: accumulated
    text = jump_explanation(0.004, 1.0, (0.0106, "conv"), "openvino", ["s1", "s2"])
    assert text.startswith("its error jumps to rel L2 1 from at most 0.0106 before it (conv)")
    assert text.endswith("fused or removed (s1, s2)")

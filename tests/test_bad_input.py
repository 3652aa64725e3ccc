"""Bad input gets one clear line on stderr and exit code 2: never a traceback, never a long wait."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_deployval


def test_missing_model_file(cli, tmp_path):
    assert_one_line_error(cli("compare", tmp_path / "nope.onnx"), 2, "file not found: ")


def test_unknown_model_name(cli):
    assert_one_line_error(cli("compare", "resnet9000"), 2, "unknown model 'resnet9000'")


@pytest.mark.parametrize(
    "content, message",
    [(b"", "not a valid ONNX"), (os.urandom(2048), "not"), (b"\x08\x07\x12\x04junk", "")],
)
def test_malformed_onnx(cli, tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    result = cli("compare", path, "--backends", "ort")
    assert_one_line_error(result, 2, str(path))


def test_truncated_onnx(cli, tmp_path):
    out = tmp_path / "convs"
    assert cli("export", "convs", "--out", out, "--kinds", "onnx-raw", "-q").code == 0
    data = (out / "exported.onnx").read_bytes()
    broken = tmp_path / "truncated.onnx"
    broken.write_bytes(data[: len(data) // 2])
    assert_one_line_error(cli("compare", broken, "--backends", "ort"), 2, str(broken))


def test_input_shape_that_does_not_fit_the_model(cli):
    result = cli("compare", "convs", "--input-shape", "x=1x4x32x32", "--backends", "torch,ort")
    assert_one_line_error(result, 2, "the reference run failed on inputs x=1x4x32x32")


def test_shape_not_divisible_by_pooling_is_refused_up_front(cli):
    result = cli("compare", "fine_organs", "--input-shape", "input=1x1x40x80x80")
    assert_one_line_error(result, 2, "dim 2 = 40 is not a multiple of 16")


def test_unknown_backend_and_precision(cli):
    assert_one_line_error(cli("compare", "convs", "--backends", "torch,tflite"), 2, "unknown backend 'tflite'")
    assert_one_line_error(cli("compare", "convs", "--precisions", "fp8"), 2, "unknown precision 'fp8'")


def test_unknown_option_is_one_line(cli):
    assert_one_line_error(cli("compare", "convs", "--bakends", "torch"), 2, "--bakends")


def test_unwritable_report_path_is_refused_before_any_work(cli, tmp_path):
    result = cli("compare", "convs", "--json", tmp_path / "missing-dir" / "r.json")
    assert_one_line_error(result, 2, "does not exist")
    assert "building" not in result.err  # refused before the model was even built


def test_inputs_file_with_wrong_names(cli, tmp_path):
    path = tmp_path / "in.npz"
    np.savez(path, image=np.zeros((1, 3, 32, 32), np.float32))
    assert_one_line_error(cli("compare", "convs", "--inputs", path), 2, "missing x; unexpected image")


def test_inputs_file_with_nan(cli, tmp_path):
    path = tmp_path / "in.npy"
    np.save(path, np.full((1, 3, 32, 32), np.nan, np.float32))
    assert_one_line_error(cli("compare", "convs", "--inputs", path), 2, "NaN/Inf")


def test_factory_that_raises_or_returns_something_else(cli):
    result = cli("compare", "dv_test_models:raises", "--input-shape", "x=1x3x8x8")
    assert_one_line_error(result, 2, "weights server unreachable")
    result = cli("compare", "dv_test_models:not_a_module", "--input-shape", "x=1x3x8x8")
    assert_one_line_error(result, 2, "returned a dict, not a torch.nn.Module")
    result = cli("compare", "dv_test_models:missing", "--input-shape", "x=1x3x8x8")
    assert_one_line_error(result, 2, "has no attribute 'missing'")


def test_user_model_without_input_shape(cli):
    assert_one_line_error(cli("compare", "dv_test_models:tiny_conv"), 2, "needs its input shapes")


def test_checkpoint_that_does_not_fit(cli, tmp_path):
    from deployval.catalog.zoo.convs import build

    state = build().state_dict()
    state.pop("convs1.0.weight")
    state["extra.bias"] = torch.zeros(3)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": state}, path)
    result = cli("compare", "convs", "--checkpoint", path)
    assert_one_line_error(result, 2, "1 missing (convs1.0.weight); 1 unexpected (extra.bias)")


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/deployval-pwned",))


def test_pickle_with_code_is_refused(cli, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Payload()}, path)
    marker = "/tmp/deployval-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    result = cli("compare", "convs", "--checkpoint", path)
    assert_one_line_error(result, 2, "--trust-checkpoint")
    assert not os.path.exists(marker)


def test_torch_save_checkpoint_given_as_model(cli, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, path)
    assert_one_line_error(cli("compare", path, "--input-shape", "1x3"), 2, "not a TorchScript file")


def test_onnx_with_dynamic_dims_needs_shapes(cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    assert_one_line_error(cli("compare", path, "--backends", "ort"), 2, "--input-shape x=SHAPE")
    result = cli("compare", path, "--backends", "ort", "--precisions", "fp32,fp16", "--input-shape", "x=3x4", "-q")
    assert result.code == 0, result.err


def test_failing_backend_keeps_the_other_results(cli, tmp_path, monkeypatch):
    """A runtime that crashes is an error row (exit 3); every other row and the report survive."""
    from deployval.backends.torchscript import TorchScriptRunner

    def crash(self, feeds):
        raise RuntimeError("segmentation fault in the runtime (simulated)")

    monkeypatch.setattr(TorchScriptRunner, "infer_impl", crash)
    report_path = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "torch,torchscript,ort", "--json", report_path, "-q")
    assert result.code == 3
    rows = {r["backend"]: r for r in json.loads(report_path.read_text())["results"]}
    assert rows["torchscript"]["status"] == "error" and "simulated" in rows["torchscript"]["reason"]
    assert rows["ort"]["status"] == "pass"


def test_subprocess_bad_input_has_no_traceback():
    result = run_deployval("compare", "convs", "--backends", "nope")
    assert_one_line_error(result, 2, "unknown backend 'nope'")

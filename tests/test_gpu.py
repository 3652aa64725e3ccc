"""GPU backends on a CUDA machine (`make test-gpu`). Each test skips with its reason where the
device or the library is missing; nothing here is faked."""

from __future__ import annotations

import json

import pytest

from deployval.backends.base import check_available
from deployval.backends.onnxruntime import OnnxRuntimeRunner
from deployval.backends.onnxruntime_tensorrt import OnnxRuntimeTensorRTRunner
from deployval.backends.tensorrt import TensorRTRunner
from deployval.backends.torch_eager import TorchEagerRunner

TORCH_CUDA = check_available(TorchEagerRunner, "cuda")
ORT_CUDA = check_available(OnnxRuntimeRunner, "cuda")
TRT = check_available(TensorRTRunner, "cuda")
ORT_TRT = check_available(OnnxRuntimeTensorRTRunner, "cuda")

needs_cuda = pytest.mark.skipif(not TORCH_CUDA[0], reason=f"torch CUDA: {TORCH_CUDA[1]}")
needs_ort_cuda = pytest.mark.skipif(not ORT_CUDA[0], reason=f"ORT CUDA: {ORT_CUDA[1]}")
needs_trt = pytest.mark.skipif(not TRT[0], reason=f"TensorRT: {TRT[1]}")
needs_ort_trt = pytest.mark.skipif(not ORT_TRT[0], reason=f"ORT TensorRT provider: {ORT_TRT[1]}")


def _rows(cli, tmp_path, *args):
    report_path = tmp_path / "r.json"
    result = cli("compare", *args, "--device", "cuda", "--json", report_path, "-q")
    report = json.loads(report_path.read_text())
    return result, {(r["backend"], r["precision"]): r for r in report["results"]}, report


@pytest.mark.gpu
@needs_cuda
def test_torch_and_torchscript_on_cuda_fp32_fp16(cli, tmp_path):
    result, rows, report = _rows(cli, tmp_path, "convs", "--backends", "torch,torchscript", "--precisions", "fp32,fp16")
    assert result.code == 0, result.out + result.err
    assert report["device"]["gpu"]
    assert rows[("torchscript", "fp32")]["status"] == "pass"
    fp16 = rows[("torch", "fp16")]
    assert fp16["status"] == "pass" and fp16["outputs"][0]["metrics"]["max_abs"] > 0
    assert fp16["latency"]["device_median_ms"] > 0  # CUDA events around each run


@pytest.mark.gpu
@needs_ort_cuda
def test_ort_cuda_provider_is_really_used(cli, tmp_path):
    result, rows, _ = _rows(cli, tmp_path, "srcnn", "--input-shape", "image=1x3x64x64", "--backends", "torch,ort",
                            "--precisions", "fp32,fp16")
    assert result.code == 0, result.out + result.err
    ort = rows[("ort", "fp32")]
    assert ort["details"]["providers"][0] == "CUDAExecutionProvider"
    assert rows[("ort", "fp16")]["faithful"] is True  # real fp16 kernels on the GPU
    assert ort["latency"]["device_median_ms"] > 0


@pytest.mark.tensorrt
@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_builds_runs_and_is_cached(cli, tmp_path, precision):
    args = ("convs", "--backends", "torch,trt", "--precisions", precision, "--cache-dir", tmp_path / "cache")
    result, rows, _ = _rows(cli, tmp_path, *args)
    assert result.code == 0, result.out + result.err
    trt = rows[("trt", precision)]
    assert trt["details"]["engine_cache"] == "miss" and trt["details"]["route"]
    result, rows, _ = _rows(cli, tmp_path, *args)
    assert rows[("trt", precision)]["details"]["engine_cache"] == "hit"


@pytest.mark.tensorrt
@needs_trt
def test_tensorrt_on_the_int64_model(cli, tmp_path):
    result, _, _ = _rows(cli, tmp_path, "tagger", "--backends", "torch,trt")
    assert result.code == 0, result.out + result.err


@pytest.mark.tensorrt
@needs_ort_trt
def test_ort_tensorrt_provider(cli, tmp_path):
    result, rows, _ = _rows(cli, tmp_path, "convs", "--backends", "torch,ort-trt", "--cache-dir", tmp_path / "c")
    assert result.code == 0, result.out + result.err
    assert rows[("ort-trt", "fp32")]["details"]["providers"][0] == "TensorrtExecutionProvider"


# ---------------------------------------------------------------------------- ONNX Runtime providers
def _rel_l2(got, expected) -> float:
    import numpy as np

    return float(np.linalg.norm(got.astype("float64") - expected) / np.linalg.norm(expected.astype("float64")))


def _ort_outputs(path, device, feeds):
    from deployval.backends.base import ONNX, Artifact

    with OnnxRuntimeRunner(Artifact(ONNX, path=path), "fp32", device) as runner:
        return runner.infer(feeds), runner.details


def _flag(options, key) -> bool:
    return str(options[key]).lower() in ("1", "true")


@pytest.mark.gpu
@needs_ort_cuda
def test_ort_cuda_fp32_matches_cpu_with_tf32_off(tmp_path):
    """TF32 would move this MatMul/Conv by ~3e-4 relative L2; fp32 kernels by ~3e-7."""
    from test_ort_providers import tf32_sensitive_model

    feeds = tf32_sensitive_model(tmp_path / "m.onnx")
    cpu, _ = _ort_outputs(tmp_path / "m.onnx", "cpu", feeds)
    cuda, details = _ort_outputs(tmp_path / "m.onnx", "cuda", feeds)
    assert details["providers"][0] == "CUDAExecutionProvider"
    assert details["provider_options"]["CUDAExecutionProvider"]["use_tf32"] == "0"  # what the provider reports
    for name in ("y", "z"):
        assert _rel_l2(cuda[name], cpu[name]) < 1e-5, (name, _rel_l2(cuda[name], cpu[name]))


@pytest.mark.gpu
@needs_ort_cuda
def test_ort_cuda_binds_fortran_ordered_inputs(tmp_path):
    import numpy as np
    from test_ort_providers import tf32_sensitive_model

    feeds = tf32_sensitive_model(tmp_path / "m.onnx")
    cpu, _ = _ort_outputs(tmp_path / "m.onnx", "cpu", feeds)
    fortran = {name: np.asfortranarray(value) for name, value in feeds.items()}
    assert not any(value.flags.c_contiguous for value in fortran.values())
    cuda, _ = _ort_outputs(tmp_path / "m.onnx", "cuda", fortran)
    for name in ("y", "z"):
        assert _rel_l2(cuda[name], cpu[name]) < 1e-5, (name, _rel_l2(cuda[name], cpu[name]))


@pytest.mark.tensorrt
@needs_ort_trt
def test_ort_tensorrt_int8_builds_from_the_qdq_onnx(cli, tmp_path):
    _, rows, _ = _rows(cli, tmp_path, "convs", "--backends", "torch,ort-trt", "--precisions", "int8",
                       "--cache-dir", tmp_path / "c")
    row = rows[("ort-trt", "int8")]
    assert row["status"] in ("pass", "fail"), row["reason"]  # judged: the engine built and ran on TensorRT
    assert row["details"]["providers"][0] == "TensorrtExecutionProvider"
    options = row["details"]["provider_options"]["TensorrtExecutionProvider"]
    assert _flag(options, "trt_int8_enable") and not _flag(options, "trt_fp16_enable")
    assert row["faithful"] is True and any("Q/DQ" in warning for warning in row["warnings"])


@pytest.mark.tensorrt
@needs_ort_trt
def test_ort_tensorrt_fp16_row_is_judged(cli, tmp_path):
    _, rows, _ = _rows(cli, tmp_path, "convs", "--backends", "torch,ort-trt", "--precisions", "fp16",
                       "--cache-dir", tmp_path / "c")
    row = rows[("ort-trt", "fp16")]
    assert row["status"] in ("pass", "fail"), row["reason"]
    assert row["details"]["providers"][0] == "TensorrtExecutionProvider"
    assert _flag(row["details"]["provider_options"]["TensorrtExecutionProvider"], "trt_fp16_enable")
    assert row["outputs"][0]["metrics"]["max_abs"] > 0  # fp16 arithmetic shows
    assert any("weakly typed" in warning for warning in row["warnings"])


# ---------------------------------------------------------------------- TensorRT profiles, bindings, log
def _trt_pyramid3d():
    """A 4-level 3D U-Net (stride-2 convs down, transposed convs up, skips concatenated): like
    fine_organs, every spatial size must be a multiple of 16 (ONNX Runtime fails at 8^3)."""
    import torch
    from torch import nn

    class Pyramid3d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.ModuleList(nn.Conv3d(1 if i == 0 else 4, 4, 3, stride=2, padding=1) for i in range(4))
            self.up = nn.ModuleList(nn.ConvTranspose3d(4 if i == 0 else 8, 4, 2, stride=2) for i in range(4))
            self.head = nn.Conv3d(5, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = [x]
            for conv in self.down:
                skips.append(torch.relu(conv(skips[-1])))
            y = skips.pop()
            for up in self.up:
                y = torch.cat([up(y), skips.pop()], dim=1)
            return self.head(y)

    torch.manual_seed(0)
    return Pyramid3d().eval()


def _trt_onnx(path, nodes, inputs, outputs, initializers=()):
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.tensorrt
@needs_trt
def test_tensorrt_profile_of_dynamic_axes_starts_at_multiple_of(tmp_path):
    from deployval.api import compare
    from deployval.model.spec import ExportOptions, InputSpec, ModelSpec

    axes = {2: "d", 3: "h", 4: "w"}
    spec = ModelSpec(name="pyramid3d", factory=_trt_pyramid3d, output_names=("y",),
                     inputs=(InputSpec("x", (1, 1, 32, 48, 32), low=-1.0, high=1.0, multiple_of=(1, 1, 16, 16, 16)),),
                     export=ExportOptions(dynamic_axes={"x": axes, "y": axes}))
    report = compare(spec, ("torch", "trt"), ("fp32",), device="cuda", cache_dir=tmp_path / "cache")
    row = next(r for r in report.results if r.backend == "trt")
    assert row.status == "pass", row.reason
    assert row.details["profiles"] == {"x": [[1, 1, 16, 16, 16], [1, 1, 32, 48, 32], [1, 1, 32, 48, 32]]}


@pytest.mark.tensorrt
@needs_trt
def test_tensorrt_runs_a_shape_tensor_input(cli, tmp_path):
    """Reshape's target shape comes from an input: TensorRT makes it a shape tensor, bound from host
    memory, and the engine is built from the run's values."""
    import numpy as np
    from onnx import TensorProto, helper

    model = _trt_onnx(tmp_path / "reshape.onnx",
                      [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["y"])],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12]),
                       helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, x=np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 12), shape=np.array([4, 6]))
    result, rows, _ = _rows(cli, tmp_path, model, "--inputs", feeds, "--backends", "trt", "--cache-dir", tmp_path / "c")
    assert result.code == 0, result.out + result.err
    row = rows[("trt", "fp32")]
    assert row["status"] == "pass", row["reason"]
    assert "shape" in row["details"]["engine_built"]
    assert row["details"]["host_tensors"] == ["shape (shape tensor)"]


@pytest.mark.tensorrt
@needs_trt
def test_tensorrt_runs_empty_tensors(tmp_path):
    """Empty inputs and outputs have data_ptr() 0, which enqueueV3 refuses: they get a placeholder."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from deployval.backends.base import ONNX, Artifact
    from deployval.model.spec import InputSpec

    path = _trt_onnx(
        tmp_path / "empty.onnx",
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["e"], ["z"]),
         helper.make_node("Slice", ["x", "zero", "zero", "one"], ["w"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("e", TensorProto.FLOAT, [0, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [0, 4]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 0])],
        [numpy_helper.from_array(np.array([0]), "zero"), numpy_helper.from_array(np.array([1]), "one")],
    )
    feeds = {"x": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), "e": np.zeros((0, 4), np.float32)}
    options = {"input_specs": (InputSpec("x", (2, 3)), InputSpec("e", (0, 4)))}
    with TensorRTRunner(Artifact(ONNX, path=path), "fp32", "cuda", options) as runner:
        outputs = runner.infer(feeds)
    np.testing.assert_array_equal(outputs["y"], np.maximum(feeds["x"], 0))
    assert outputs["z"].shape == (0, 4) and outputs["w"].shape == (2, 0)


@pytest.mark.tensorrt
@needs_trt
def test_tensorrt_log_is_filtered_in_cpp_and_collected(tmp_path, capfd):
    """trt.Logger drops VERBOSE/INFO in C++ (a Python ILogger would be called for each); warnings and
    errors are still read back into error messages, and nothing reaches the terminal."""
    import tensorrt as trt
    from onnx import TensorProto, helper

    from deployval.backends.tensorrt import build_engine, trt_logger
    from deployval.backends.tensorrt_plan import plan_build
    from deployval.errors import BackendError

    assert type(trt_logger(trt)) is trt.Logger
    path = _trt_onnx(tmp_path / "dynamic.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    plan = plan_build("fp32", trt.__version__)
    with pytest.raises(BackendError) as info:  # a dynamic input without an optimization profile
        build_engine(trt, path, plan, {}, 1 << 28)
    message = info.value.one_line()
    assert "[ERROR]" in message and "profile" in message and "[VERBOSE]" not in message and "[INFO]" not in message
    assert build_engine(trt, path, plan, {"x": ((1, 3), (2, 3), (4, 3))}, 1 << 28)
    assert "[TRT]" not in capfd.readouterr().out

"""The parts of the TensorRT backend that need no GPU: version routing, shape profiles, engine-cache
keys and integrity, availability reasons, and the exit code when TensorRT is asked for but missing."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import run_deployval

from deployval.backends.base import ONNX, ONNX_FP16, ONNX_FP16_INT32, ONNX_INT8_INT32, ONNX_INT32
from deployval.backends.tensorrt import (
    EngineCache,
    TensorRTRunner,
    derive_profiles,
    engine_cache_key,
    plan_build,
)
from deployval.errors import BackendError, BackendUnavailable, UsageError

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.parametrize("version", ["10.8.0.43", "11.1.0"])
def test_precision_comes_from_the_artifact_on_both_majors(version):
    assert plan_build("fp32", version).artifact == ONNX_INT32
    fp16 = plan_build("fp16", version)
    assert fp16.artifact == ONNX_FP16_INT32 and fp16.strongly_typed and not fp16.fp16_flag
    assert plan_build("int8", version).artifact == ONNX_INT8_INT32
    assert not plan_build("fp32", version).tf32  # fp32 engines are compared with fp32 arithmetic


def test_builder_flag_route_exists_only_on_tensorrt_10():
    plan = plan_build("fp16", "10.16.0", fp16_route="flag")
    assert plan.fp16_flag and not plan.strongly_typed and plan.artifact == ONNX_INT32
    assert "builder flag" in plan.route
    with pytest.raises(UsageError, match="no FP16 builder flag"):
        plan_build("fp16", "11.0.0", fp16_route="flag")


def test_bf16_is_the_builder_flag_on_tensorrt_10_and_refused_with_its_reason_on_11():
    plan = plan_build("bf16", "10.16.0")
    assert plan.bf16_flag and not plan.fp16_flag and not plan.strongly_typed and plan.artifact == ONNX_INT32
    assert TensorRTRunner.artifact_for("bf16", {"trt": {"keep_int64": True}}) == ONNX
    with pytest.raises(BackendUnavailable, match="no BF16 builder flag"):
        plan_build("bf16", "11.4.0")


def test_keep_int64_skips_the_int32_pass():
    assert plan_build("fp32", "10.0.1", keep_int64=True).artifact == ONNX
    assert plan_build("fp16", "10.0.1", keep_int64=True).artifact == ONNX_FP16
    assert TensorRTRunner.artifact_for("fp16", {"trt": {"keep_int64": True}}) == ONNX_FP16
    assert TensorRTRunner.artifact_for("fp32", {}) == ONNX_INT32


def test_old_tensorrt_is_refused():
    with pytest.raises(BackendUnavailable, match="needs TensorRT 10 or 11"):
        plan_build("fp32", "8.6.1")


def test_profiles_for_dynamic_dims_only():
    dims = {"x": [None, 3, None, None], "mask": [1, 4]}
    profiles = derive_profiles(dims, {"x": (2, 3, 64, 64), "mask": (1, 4)},
                               min_shapes={"x": (1, 3, 32, 32)}, max_shapes={"x": (8, 3, 128, 128)})
    assert profiles == {"x": ((1, 3, 32, 32), (2, 3, 64, 64), (8, 3, 128, 128))}
    default = derive_profiles({"x": [None, 3]}, {"x": (4, 3)})
    assert default == {"x": ((1, 3), (4, 3), (4, 3))}


def test_profiles_refuse_shapes_the_onnx_cannot_take():
    with pytest.raises(UsageError, match="fixes it at 3"):
        derive_profiles({"x": [1, 3]}, {"x": (1, 4)})
    with pytest.raises(UsageError, match=r"min .* does not hold"):
        derive_profiles({"x": [None]}, {"x": (4,)}, max_shapes={"x": (2,)})


def test_engine_cache_key_changes_with_everything_an_engine_depends_on():
    gpu = {"gpu": "NVIDIA H100", "compute_capability": "9.0"}
    plan = plan_build("fp16", "10.8.0")
    base = engine_cache_key("abc", "10.8.0", gpu, plan, {}, 1 << 30)
    assert base == engine_cache_key("abc", "10.8.0", dict(gpu), plan, {}, 1 << 30)
    variants = [
        engine_cache_key("abd", "10.8.0", gpu, plan, {}, 1 << 30),
        engine_cache_key("abc", "10.9.0", gpu, plan, {}, 1 << 30),
        engine_cache_key("abc", "10.8.0", {"gpu": "NVIDIA A100", "compute_capability": "8.0"}, plan, {}, 1 << 30),
        engine_cache_key("abc", "10.8.0", gpu, plan_build("fp16", "10.8.0", fp16_route="flag"), {}, 1 << 30),
        engine_cache_key("abc", "10.8.0", gpu, plan, {"x": ((1,), (2,), (4,))}, 1 << 30),
        engine_cache_key("abc", "10.8.0", gpu, plan, {}, 1 << 31),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_engine_cache_detects_damage(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store("k" * 64, b"engine-bytes", {"tensorrt": "10.8.0"})
    assert cache.load("k" * 64) == b"engine-bytes"
    path = cache.path("k" * 64)
    path.write_bytes(b"engine-byteX")  # tampered
    assert cache.load("k" * 64) is None
    cache.store("k" * 64, b"engine-bytes", {})
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["key"] = "other"
    path.with_suffix(".json").write_text(json.dumps(meta))  # mismatched entry
    assert cache.load("k" * 64) is None
    cache.discard("k" * 64)
    assert not path.exists()
    assert EngineCache(None).load("k") is None  # caching off


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the message on machines without TensorRT")
def test_unavailable_reason_names_the_missing_package():
    ok, reason = TensorRTRunner.available("cuda")
    assert not ok and "tensorrt Python package is not installed" in reason


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the behaviour on machines without TensorRT")
def test_trt_requested_without_tensorrt_exits_3_after_reporting_torch(tmp_path):
    report_path = tmp_path / "r.json"
    result = run_deployval("compare", "convs", "--backends", "torch,trt", "--json", report_path, "-q")
    assert result.code == 3, result.err
    errors = [ln for ln in result.err.splitlines() if ln.startswith("deployval: error:")]
    assert len(errors) == 1 and "tensorrt Python package is not installed" in errors[0]
    rows = {r["backend"]: r for r in json.loads(report_path.read_text())["results"]}
    assert rows["torch"]["status"] == "reference" and rows["torch"]["latency"]["median_ms"] > 0
    assert rows["trt"]["status"] == "error"


def test_backends_lists_gpu_backends_with_reasons():
    result = run_deployval("backends")
    assert result.code == 0
    for name in ("trt", "ort-trt", "torch", "torchscript", "ort"):
        assert f"│ {name} " in result.out


def test_engine_cache_key_hashes_graphs_made_on_the_fly(tmp_path):
    """debug's exposed graphs come without the store's hash: two different files must not share a key."""
    from deployval.backends.base import Artifact
    from deployval.backends.tensorrt import onnx_digest

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"graph a")
    b.write_bytes(b"graph b")
    assert onnx_digest(Artifact("onnx", path=a)) != onnx_digest(Artifact("onnx", path=b))
    assert onnx_digest(Artifact("onnx", path=a, sha256="given")) == "given"


# ---------------------------------------------------------------------------- profiles and multiple_of
def test_profile_minimum_is_the_smallest_size_the_network_takes():
    """fine_organs needs multiples of 16: a profile minimum of 1 would make it unbuildable."""
    from deployval.catalog.zoo import FINE_ORGANS

    spec = FINE_ORGANS.inputs[0]
    dims = {"input": [1, 1, None, None, None]}  # exported with dynamic spatial axes
    profiles = derive_profiles(dims, {"input": spec.shape}, multiples={"input": spec.multiple_of})
    assert profiles == {"input": ((1, 1, 16, 16, 16), spec.shape, spec.shape)}
    # a dynamic batch with multiple 1 (or 0: "any") still starts at 1; static dims stay as the ONNX fixes them
    profiles = derive_profiles({"x": [None, 3, None]}, {"x": (4, 3, 64)}, multiples={"x": (0, 1, 32)})
    assert profiles == {"x": ((1, 3, 32), (4, 3, 64), (4, 3, 64))}


def test_declared_min_and_max_are_honoured_and_checked_against_multiple_of():
    dims, shape, step = {"x": [1, 1, None, None]}, {"x": (1, 1, 64, 96)}, {"x": (1, 1, 16, 16)}
    profiles = derive_profiles(dims, shape, min_shapes={"x": (1, 1, 32, 16)}, max_shapes={"x": (1, 1, 128, 160)},
                               multiples=step)
    assert profiles == {"x": ((1, 1, 32, 16), (1, 1, 64, 96), (1, 1, 128, 160))}
    for kwargs, what in (({"min_shapes": {"x": (1, 1, 24, 16)}}, "min_shape dim 2 = 24"),
                         ({"max_shapes": {"x": (1, 1, 128, 100)}}, "max_shape dim 3 = 100"),
                         ({"min_shapes": {"x": (1, 1, 0, 16)}}, "min_shape dim 2 = 0")):
        with pytest.raises(UsageError, match=what) as info:
            derive_profiles(dims, shape, multiples=step, **kwargs)
        assert "\n" not in info.value.message and "multiple of 16" in info.value.message
    with pytest.raises(UsageError, match="shape dim 3 = 40 is not a positive multiple of 16"):
        derive_profiles(dims, {"x": (1, 1, 64, 40)}, multiples=step)
    with pytest.raises(UsageError, match=r"min_shape \(1, 32\) has rank 2"):
        derive_profiles(dims, shape, min_shapes={"x": (1, 32)}, multiples=step)
    with pytest.raises(UsageError, match=r"min .* does not hold"):  # a declared min above the run's shape
        derive_profiles(dims, shape, min_shapes={"x": (1, 1, 128, 16)}, multiples=step)


def test_shape_tensor_values_and_candidates():
    import numpy as np

    from deployval.backends.tensorrt_plan import OnnxInput, shape_tensor_candidates, shape_value_profiles

    graph = {"x": OnnxInput((2, 12), "float32"), "shape": OnnxInput((2,), "int32"), "sr": OnnxInput((), "int64"),
             "ids": OnnxInput((1, 32), "int64"), "n": OnnxInput((None,), "int64")}
    assert shape_tensor_candidates(graph) == ("shape", "sr")  # int32/int64, rank <= 1, fixed dims
    assert shape_value_profiles({"shape": np.array([4, 6], dtype=np.int32), "sr": [16000]}) == {
        "shape": ((4, 6), (4, 6), (4, 6)), "sr": ((16000,), (16000,), (16000,))}
    gpu, plan = {"gpu": "NVIDIA H100", "compute_capability": "9.0"}, plan_build("fp32", "10.8.0")
    plain = engine_cache_key("abc", "10.8.0", gpu, plan, {}, 1 << 30)
    assert engine_cache_key("abc", "10.8.0", gpu, plan, {}, 1 << 30, {}) == plain  # old keys unchanged
    values = engine_cache_key("abc", "10.8.0", gpu, plan, {}, 1 << 30, shape_value_profiles({"shape": [4, 6]}))
    other = engine_cache_key("abc", "10.8.0", gpu, plan, {}, 1 << 30, shape_value_profiles({"shape": [6, 4]}))
    assert len({plain, values, other}) == 3


# ---------------------------------------------------------------------------- binding engine tensors
def test_bindings_put_shape_tensors_and_host_tensors_in_host_memory():
    from deployval.backends.tensorrt_plan import TensorIO, plan_bindings

    plan = plan_bindings([
        TensorIO("x", "input", "device", False, (2, 12), "FLOAT"),
        TensorIO("shape", "input", "host", True, (2,), "INT32"),
        TensorIO("scale", "input", "host", False, (), "FLOAT"),  # TensorRT chose the host for it
        TensorIO("y", "output", "device", False, (-1, -1), "FLOAT"),
        TensorIO("dims", "output", "host", True, (2,), "INT64"),
    ])
    assert [b.name for b in plan.inputs] == ["x", "shape", "scale"] and [b.name for b in plan.outputs] == ["y", "dims"]
    assert {n for n in ("x", "shape", "scale", "y", "dims") if plan.host(n)} == {"shape", "scale", "dims"}
    assert plan.shape_inputs == ("shape",) and plan.shape_outputs == ("dims",) and plan.infer_shapes
    assert dict((b.name, b.why) for b in plan.inputs)["scale"] == "TensorRT keeps it on the host"

    plain = plan_bindings([TensorIO("x", "input", "device", False, (1, 3), "FLOAT"),
                           TensorIO("y", "output", "device", False, (1, 3), "FLOAT")])
    assert not plain.infer_shapes and not plain.host("x") and not plain.host("y")
    with pytest.raises(BackendError, match="'w' is neither an input nor an output"):
        plan_bindings([TensorIO("w", "TensorIOMode.NONE", "device", False, (1,), "FLOAT")])
    with pytest.raises(BackendError, match="twice"):
        plan_bindings([TensorIO("x", "input", "device", False, (1,), "FLOAT")] * 2)


def test_empty_tensors_get_a_placeholder_address():
    """A tensor with no elements has no storage: torch reports data_ptr() 0, which enqueueV3 refuses."""
    import torch

    from deployval.backends.tensorrt_plan import bound_address

    empty, full = torch.empty((2, 0)), torch.empty((2, 3))
    assert empty.data_ptr() == 0
    assert bound_address("e", empty.data_ptr(), empty.numel(), placeholder=0x1000) == 0x1000
    assert bound_address("f", full.data_ptr(), full.numel(), placeholder=0x1000) == full.data_ptr()
    with pytest.raises(BackendError, match="'f' has 6 elements but no memory"):
        bound_address("f", 0, 6, placeholder=0x1000)


def test_a_refused_tensor_address_is_an_error_naming_the_tensor():
    from deployval.backends.tensorrt_plan import set_address

    class Context:  # stands in for IExecutionContext.set_tensor_address, which returns a bool
        def __init__(self, accept: bool) -> None:
            self.accept, self.calls = accept, []

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.calls.append((name, address))
            return self.accept

    accepting = Context(True)
    set_address(accepting, "x", 0x7F00, "device")
    assert accepting.calls == [("x", 0x7F00)]
    with pytest.raises(BackendError, match=r"refused the host address 0x7f00 for tensor 'shape'"):
        set_address(Context(False), "shape", 0x7F00, "host")


# ---------------------------------------------------------------------------- TensorRT's log
def test_trt_logger_lines_are_parsed_by_severity():
    from deployval.backends.tensorrt_plan import parse_trt_log

    printed = [
        "[07/07/2026-13:42:10] [TRT] [W] onnxOpImporters.cpp:123: weights outside the INT32 range",
        "[07/07/2026-13:42:11] [TRT] [E] IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error",
        "  (Network has dynamic or shape inputs, but no optimization profile has been defined.)",
        "",
        "[07/07/2026-13:42:11] [TRT] [F] Assertion failed",
    ]
    assert parse_trt_log(printed) == [
        "[WARNING] onnxOpImporters.cpp:123: weights outside the INT32 range",
        "[ERROR] IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (Network has dynamic or shape "
        "inputs, but no optimization profile has been defined.)",
        "[INTERNAL_ERROR] Assertion failed",
    ]
    assert parse_trt_log(["stray output"]) == ["stray output"]


def test_native_stdout_is_captured_and_restored(capfd):
    """trt.Logger filters by severity in C++ and prints to std::cout; the runner reads that back
    instead of printing it. Checked here with real writes to file descriptor 1, from C too."""
    import ctypes
    import os

    from deployval.backends.tensorrt import native_stdout_captured

    libc = ctypes.CDLL(None)
    with native_stdout_captured() as lines:
        os.write(1, b"[07/07/2026-13:42:10] [TRT] [W] from the file descriptor\n")
        libc.printf(b"[07/07/2026-13:42:10] [TRT] [E] from C stdio, buffered\n")
    os.write(1, b"after the block\n")
    assert lines == ["[07/07/2026-13:42:10] [TRT] [W] from the file descriptor",
                     "[07/07/2026-13:42:10] [TRT] [E] from C stdio, buffered"]
    out = capfd.readouterr().out
    assert "after the block" in out and "[TRT]" not in out

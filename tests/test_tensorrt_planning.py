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
from deployval.errors import BackendUnavailable, UsageError

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


def test_keep_int64_skips_the_int32_pass():
    assert plan_build("fp32", "10.0.1", keep_int64=True).artifact == ONNX
    assert plan_build("fp16", "10.0.1", keep_int64=True).artifact == ONNX_FP16
    assert TensorRTRunner.artifact_for("fp16", {"keep_int64": True}) == ONNX_FP16
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

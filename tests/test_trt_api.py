"""TensorRT API conformance without a GPU: deployval's TensorRT backend against the real Python bindings
of TensorRT 10.0, 10.13 and 11.4 (trt_bindings.py), version by version, in a subprocess each. Every name
the backend touches must exist where it is reached; the logger's output is parsed; a Builder or Runtime
that cannot start is a BackendError carrying TensorRT's own words. `make trt-api` runs this file alone.
Skips with its reason where no compiler or no package index is reachable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trt_bindings

ROOT = Path(__file__).parent.parent
SOURCES = [ROOT / "deployval" / "backends" / "tensorrt.py", ROOT / "deployval" / "backends" / "tensorrt_plan.py"]
PROBE = Path(__file__).parent / "trt_api_probe.py"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return tmp_path_factory.mktemp("trt-bindings")


def probe(lab: Path, version: str, sources: list[Path] = SOURCES) -> dict:
    try:
        env = {**os.environ, **trt_bindings.prepare(version, lab)}
    except trt_bindings.Unavailable as exc:
        pytest.skip(str(exc))
    proc = subprocess.run([sys.executable, str(PROBE), *map(str, sources)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("version", list(trt_bindings.VERSIONS))
def test_every_name_the_backend_touches_exists_where_it_is_reached(lab, version):
    found = probe(lab, version)
    assert found["version"] == version
    assert found["missing"] == [], found["missing"]
    # what the code reads is what was looked at: the builder, network, engine and context calls are there
    assert {"Builder.build_serialized_network", "IExecutionContext.execute_async_v3", "ITensor.is_shape_tensor",
            "OnnxParser.parse_from_file", "Runtime.deserialize_cuda_engine"} <= set(found["members"])
    assert {"BuilderFlag.FP16", "BuilderFlag.BF16", "MemoryPoolType.WORKSPACE", "TensorLocation.HOST"} <= set(
        found["chains"])
    major = version.split(".")[0]
    # 11 removed BuilderFlag.FP16 and BF16: the backend reaches them only on routes 11 refuses
    assert found["guarded_absent"] == (["BuilderFlag.BF16", "BuilderFlag.FP16"] if major == "11" else [])
    # the engine's device memory is read from whichever attribute this version has (10.0: no _v2; 11: no v1)
    assert found["device_memory"], found
    assert found["severities"] == {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2}
    if major == "10":  # the STRONGLY_TYPED network flag is bit 1 of create_network's flags
        assert found["strongly_typed_bit"] == 2


@pytest.mark.parametrize("version", list(trt_bindings.VERSIONS))
def test_a_builder_or_runtime_that_cannot_start_is_an_error_with_tensorrts_own_words(lab, version):
    found = probe(lab, version)
    # the real trt.Logger's lines are collected and parsed into the error
    assert found["logged"].startswith("BackendError: TensorRT could not create its logged")
    assert "[ERROR] conformance probe: logged by the real trt.Logger" in found["logged"]
    for what in ("builder", "runtime"):
        message = found[what]
        assert message.startswith(f"BackendError: TensorRT could not create its {what}"), message
        assert "factory function returned nullptr" in message
        if version.startswith("10."):  # what libnvinfer logged as it failed reaches the row
            assert "CUDA initialization failure with error: 35" in message, message
    assert found["build_engine"].startswith("BackendError: TensorRT could not create its builder")


@pytest.mark.parametrize(("planted", "name"), [
    ("    config.set_flag(trt.BuilderFlag.INT8)\n", "BuilderFlag.INT8"),  # removed in 11
    ("    flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)\n",
     "NetworkDefinitionCreationFlag.EXPLICIT_BATCH"),  # removed in 11
    ("    config.set_flag(trt.BuilderFlag.FP16)\n", "BuilderFlag.FP16"),  # outside its guard
])
def test_a_name_tensorrt_11_removed_fails_the_check(lab, tmp_path, planted, name):
    source = SOURCES[0].read_text()
    anchor = "    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)\n"
    assert anchor in source
    planted_copy = tmp_path / "tensorrt.py"
    planted_copy.write_text(source.replace(anchor, anchor + planted))
    assert name in probe(lab, "11.4.0.106", [planted_copy, SOURCES[1]])["missing"]
    assert name not in probe(lab, "10.13.3.9", [planted_copy, SOURCES[1]])["missing"]

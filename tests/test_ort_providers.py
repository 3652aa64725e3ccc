"""ONNX Runtime's CUDA and TensorRT providers: the options and decisions deployval makes, checked
without a GPU (what needs one is in tests/test_gpu.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployval.backends import onnxruntime_tensorrt as ort_trt
from deployval.backends._cuda import c_contiguous
from deployval.backends.onnxruntime import (
    OnnxRuntimeRunner,
    cuda_provider_options,
    fallback_message,
    provider_problem,
)
from deployval.backends.onnxruntime_tensorrt import (
    TF32_CAVEAT,
    OnnxRuntimeTensorRTRunner,
    elf_needed,
    ort_trt_available,
    ort_trt_caveats,
    tensorrt_provider_options,
)

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


# ---------------------------------------------------------------------------- provider options
def test_tensorrt_options_set_the_precision_flags():
    fp32, fp16, int8 = (tensorrt_provider_options(p) for p in ("fp32", "fp16", "int8"))
    assert (fp32["trt_fp16_enable"], fp32["trt_int8_enable"]) == (False, False)
    assert (fp16["trt_fp16_enable"], fp16["trt_int8_enable"]) == (True, False)
    # int8 from Q/DQ: explicit quantization, no calibration table, fp16 not enabled for the other layers
    assert (int8["trt_int8_enable"], int8["trt_fp16_enable"]) == (True, False)
    assert int8["trt_int8_use_native_calibration_table"] is False
    assert not any("calibration_table_name" in key for options in (fp32, fp16, int8) for key in options)
    # onnxruntime's Python layer sends str(value); its TensorRT parser accepts only "True"/"False"
    for options in (fp32, fp16, int8):
        flags = {str(v) for k, v in options.items() if k.startswith("trt_") and k.endswith("_enable")}
        assert flags <= {"True", "False"}
        assert "trt_engine_cache_enable" not in options and "user_compute_stream" not in options


def test_tensorrt_options_cache_workspace_and_stream(tmp_path):
    options = tensorrt_provider_options("int8", tmp_path / "engines", workspace_mb=512, stream=1234)
    assert options["trt_engine_cache_enable"] is True and options["trt_engine_cache_path"] == str(tmp_path / "engines")
    assert options["trt_max_workspace_size"] == 512 * 2**20 and options["user_compute_stream"] == "1234"


def test_engines_built_with_and_without_tf32_are_cached_apart(tmp_path):
    on = ort_trt.engine_cache_path(tmp_path, {})
    off = ort_trt.engine_cache_path(tmp_path, {"NVIDIA_TF32_OVERRIDE": "0"})
    assert on != off and on.parent == off.parent == tmp_path / "ort-trt"


def test_cuda_options_turn_tf32_off():
    options = cuda_provider_options()
    assert options["use_tf32"] == "0"  # a bool the CUDA provider parses from "0"/"1"; it defaults to on
    assert "user_compute_stream" not in options
    assert cuda_provider_options(stream=99)["user_compute_stream"] == "99"


# ---------------------------------------------------------------------------- caveats
def test_ort_trt_rows_state_their_arithmetic(monkeypatch):
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    assert OnnxRuntimeTensorRTRunner.faithful("fp32", "cuda") is False  # TF32 is not fp32
    assert OnnxRuntimeTensorRTRunner.faithful("fp16", "cuda") and OnnxRuntimeTensorRTRunner.faithful("int8", "cuda")
    assert OnnxRuntimeTensorRTRunner.caveats("fp32", "cuda") == [TF32_CAVEAT]
    fp16 = OnnxRuntimeTensorRTRunner.caveats("fp16", "cuda")
    assert "weakly typed" in fp16[0] and "hints" in fp16[0] and fp16[-1] == TF32_CAVEAT
    int8 = OnnxRuntimeTensorRTRunner.caveats("int8", "cuda")
    assert "Q/DQ" in int8[0] and "no calibration table" in int8[0] and int8[-1] == TF32_CAVEAT
    assert "TF32 is on by default in TensorRT's builder" in TF32_CAVEAT

    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")  # TensorRT honours it: TF32 off for the process
    assert OnnxRuntimeTensorRTRunner.faithful("fp32", "cuda") is True
    assert OnnxRuntimeTensorRTRunner.caveats("fp32", "cuda") == []
    assert TF32_CAVEAT not in ort_trt_caveats("int8", {"NVIDIA_TF32_OVERRIDE": "0"})
    assert TF32_CAVEAT in ort_trt_caveats("int8", {"NVIDIA_TF32_OVERRIDE": "1"})


def test_ort_cuda_rows_are_faithful_without_caveats():
    for precision in ("fp32", "fp16", "int8"):
        assert OnnxRuntimeRunner.faithful(precision, "cuda") and OnnxRuntimeRunner.caveats(precision, "cuda") == []


# ---------------------------------------------------------------------------- fallback detection
def test_a_session_without_the_required_provider_is_an_error():
    assert provider_problem(TRT, [TRT, CUDA, CPU]) is None
    problem = provider_problem(TRT, [CUDA, CPU])
    assert problem and f"did not enable {TRT}" in problem and f"active: {CUDA}, {CPU}" in problem
    hinted = provider_problem(TRT, [CUDA, CPU], hint="needs libnvinfer.so.10")
    assert hinted and hinted.endswith("needs libnvinfer.so.10")
    cause = "[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP could not build engine for fused node: X"
    fell_back = provider_problem(TRT, [CUDA, CPU], fallback=cause)
    assert fell_back and "fell back to" in fell_back and fell_back.endswith(cause)
    assert provider_problem(CUDA, [CPU]) and "libraries" in provider_problem(CUDA, [CPU])


def test_the_cause_onnxruntime_prints_when_it_falls_back_is_kept():
    # the text onnxruntime_inference_collection.py prints around a failed session creation
    cause = "[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP could not build engine for fused node: X"
    printed = ("*************** EP Error ***************\n"
               f"EP Error {cause} when using [('TensorrtExecutionProvider', {{'trt_int8_enable': 'True'}})]\n"
               "Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider'] and retrying.\n"
               "****************************************\n")
    assert fallback_message(printed) == cause
    assert fallback_message(f"EP Error: {cause} using ['TensorrtExecutionProvider']\n") == cause  # session.run
    assert fallback_message("nothing of the kind\n") == ""


# ---------------------------------------------------------------------------- availability
def _fake_library(path: Path, needed: list[str]) -> Path:
    """A minimal ELF64 shared object with a dynamic segment naming `needed`."""
    strtab = b"\0" + b"".join(name.encode() + b"\0" for name in needed)
    offsets = [1 + sum(len(n) + 1 for n in needed[:i]) for i in range(len(needed))]
    base, str_off = 0x400000, 64 + 2 * 56
    dyn_off = (str_off + len(strtab) + 7) // 8 * 8
    dynamic = b"".join(struct.pack("<qQ", 1, off) for off in offsets)
    dynamic += struct.pack("<qQqQqQ", 5, base + str_off, 10, len(strtab), 0, 0)  # DT_STRTAB, DT_STRSZ, DT_NULL
    total = dyn_off + len(dynamic)
    header = struct.pack("<4sBBBB8xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 3, 62, 1, 0, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 4, 0, base, base, total, total, 0x1000)
    dyn = struct.pack("<IIQQQQQQ", 2, 4, dyn_off, base + dyn_off, base + dyn_off, len(dynamic), len(dynamic), 8)
    body = header + load + dyn + strtab
    path.write_bytes(body + b"\0" * (dyn_off - len(body)) + dynamic)
    return path


def test_elf_needed_reads_the_linked_libraries(tmp_path):
    names = ["libcublas.so.13", "libnvinfer.so.10", "libnvonnxparser.so.10", "libc.so.6"]
    assert elf_needed(_fake_library(tmp_path / "lib.so", names)) == names
    (tmp_path / "text.so").write_bytes(b"not an ELF file at all")
    assert elf_needed(tmp_path / "text.so") == []


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) is not installed")
def test_elf_needed_agrees_with_readelf_on_onnxruntime():
    import onnxruntime

    library = next((Path(onnxruntime.__file__).parent / "capi").glob("onnxruntime_pybind11_state*.so"))
    listing = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    expected = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", listing)
    assert expected and elf_needed(library) == expected


def test_availability_names_a_tensorrt_version_mismatch():
    needs = ["libnvinfer.so.10", "libnvonnxparser.so.10"]
    assert ort_trt_available(needs, ["libnvinfer.so.10", "libnvonnxparser.so.10"]) == (True, "")
    ok, reason = ort_trt_available(needs, ["libnvinfer.so.11"])
    assert not ok and reason == ("onnxruntime-gpu's TensorRT provider needs libnvinfer.so.10, libnvonnxparser.so.10; "
                                 "this machine has libnvinfer.so.11 only")
    ok, reason = ort_trt_available(needs, [])
    assert not ok and "cannot be loaded (TensorRT 10 is not installed" in reason
    ok, reason = ort_trt_available(needs, ["libnvinfer.so.10", "libnvinfer.so.11"])  # the parser is what lacks
    assert not ok and reason.endswith("; libnvonnxparser.so.10 cannot be loaded (not installed, or not on "
                                      "LD_LIBRARY_PATH)")
    ok, reason = ort_trt_available(["libnvinfer.so.10"], ["libnvinfer.so.11"], assumed=True)
    assert not ok and "assumed for onnxruntime-gpu 1.x" in reason and "has libnvinfer.so.11 only" in reason


@pytest.mark.parametrize("machine, ok, says", [
    ({"libnvinfer.so.10", "libnvonnxparser.so.10"}, True, ""),
    ({"libnvinfer.so.11", "libnvonnxparser.so.11"}, False, "this machine has libnvinfer.so.11 only"),
    (set(), False, "cannot be loaded"),
])
def test_availability_on_simulated_library_sets(tmp_path, monkeypatch, machine, ok, says):
    """The provider library's own links decide which TensorRT is needed; the loader is simulated."""
    library = _fake_library(tmp_path / "libonnxruntime_providers_tensorrt.so",
                            ["libcudart.so.13", "libnvinfer.so.10", "libnvonnxparser.so.10", "libc.so.6"])
    probed: list[str] = []

    def loader(names):
        names = list(names)
        probed.extend(names)
        return [name for name in names if name in machine]

    monkeypatch.setattr(ort_trt, "loadable_libraries", loader)
    result = ort_trt.check_trt_libraries(library)
    assert result[0] is ok and says in result[1]
    assert probed[:2] == ["libnvinfer.so.10", "libnvonnxparser.so.10"]  # the CUDA libraries are not its business
    if ok:
        assert probed == ["libnvinfer.so.10", "libnvonnxparser.so.10"]  # no other TensorRT is loaded


def test_availability_assumes_tensorrt_10_without_the_provider_library(monkeypatch):
    monkeypatch.setattr(ort_trt, "loadable_libraries", lambda names: [n for n in names if n == "libnvinfer.so.11"])
    ok, reason = ort_trt.check_trt_libraries(None)
    assert not ok and "needs libnvinfer.so.10 (assumed" in reason and "libnvinfer.so.11 only" in reason


# ---------------------------------------------------------------------------- io binding feeds
def test_device_feeds_are_c_contiguous():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    assert c_contiguous(x) is x  # no copy when there is nothing to fix
    for strided in (np.asfortranarray(x), x.transpose(2, 0, 1), x[:, ::-1], x[..., ::2]):
        fixed = c_contiguous(strided)
        assert fixed.flags.c_contiguous and fixed.dtype == strided.dtype and np.array_equal(fixed, strided)
    scalar = np.array(16000, dtype=np.int64)
    assert c_contiguous(scalar).shape == ()  # unlike np.ascontiguousarray, a scalar stays 0-d


def tf32_sensitive_model(path: Path) -> dict[str, np.ndarray]:
    """A fp32 ONNX (MatMul with K=1024, a 3x3 Conv) whose results TF32 moves by ~1e-4 relative L2 and
    fp32 kernels by ~1e-6; returns feeds for it (also used by tests/test_gpu.py)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((1024, 256)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), "k")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]),
         helper.make_node("Conv", ["image", "k"], ["z"], pads=[1, 1, 1, 1])],
        "tf32_sensitive",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 1024]),
         helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 16, 20, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 256]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 32, 20, 24])],
        weights,
    )
    # IR version 8 (opset 17's own): the onnx package writes its newest, which older onnxruntime refuses
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return {"x": rng.standard_normal((8, 1024)).astype(np.float32),
            "image": rng.standard_normal((2, 16, 20, 24)).astype(np.float32)}


def test_ort_cpu_session_takes_fortran_ordered_feeds(tmp_path):
    """A real session, created without fallback: a Fortran-ordered feed gives the C-order result."""
    from deployval.backends.base import ONNX, Artifact

    feeds = tf32_sensitive_model(tmp_path / "m.onnx")
    with OnnxRuntimeRunner(Artifact(ONNX, path=tmp_path / "m.onnx"), "fp32", "cpu") as runner:
        assert runner.details["providers"] == [CPU]
        expected = runner.infer(feeds)
        got = runner.infer({name: np.asfortranarray(value) for name, value in feeds.items()})
    assert all(np.array_equal(got[name], expected[name]) for name in ("y", "z"))


# ---------------------------------------------------------------------------- TensorRT where pip puts it
TENSORRT_LIBS_INIT = """import ctypes, os
_here = os.path.dirname(__file__)
for _name in ("libnvinfer.so.10", "libnvonnxparser.so.10"):  # as NVIDIA's wheel does: loaded on import
    ctypes.CDLL(os.path.join(_here, _name), mode=ctypes.RTLD_GLOBAL)
"""
ORT_TRT_PROBE = """import ctypes, json, sys
from pathlib import Path
if sys.argv[2] == "import-first":
    import tensorrt_libs  # noqa: F401
from deployval.backends.onnxruntime_tensorrt import check_trt_libraries, preload_trt_libraries
library = Path(sys.argv[1])
ok, reason = check_trt_libraries(library)
loaded = preload_trt_libraries(library) if ok else []
try:
    ctypes.CDLL("libnvinfer.so.10")  # what the provider's dlopen asks for: by name
    by_name = True
except OSError:
    by_name = False
print(json.dumps({"ok": ok, "reason": reason, "loaded": loaded, "by_name": by_name}))
"""


@pytest.fixture(scope="module")
def pip_tensorrt(tmp_path_factory):
    """TensorRT 10 laid out as pip installs it (site/tensorrt_libs/libnvinfer.so.10, …; stub libraries
    built with cc), and a provider library that links it as onnxruntime-gpu's does."""
    import trt_bindings

    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build the stub TensorRT libraries")
    root = tmp_path_factory.mktemp("pip-tensorrt")
    libs = root / "site" / "tensorrt_libs"
    libs.mkdir(parents=True)
    (libs / "__init__.py").write_text(TENSORRT_LIBS_INIT)
    for source, name in ((trt_bindings.NVINFER, "libnvinfer.so.10"), (trt_bindings.NVONNXPARSER,
                                                                      "libnvonnxparser.so.10")):
        (root / f"{name}.c").write_text(source)
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(libs / name), str(root / f"{name}.c"),
                        f"-Wl,-soname,{name}"], check=True, capture_output=True)
    (root / "provider.c").write_text("int provider_stub(void) { return 0; }\n")
    provider = root / "libonnxruntime_providers_tensorrt.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(provider), str(root / "provider.c"), f"-L{libs}",
                    "-Wl,--no-as-needed", "-l:libnvinfer.so.10", "-l:libnvonnxparser.so.10"], check=True,
                   capture_output=True)
    assert ort_trt.tensorrt_libraries(elf_needed(provider)) == ["libnvinfer.so.10", "libnvonnxparser.so.10"]
    return root, provider


def _ort_trt_in_a_fresh_process(root: Path, provider: Path, order: str, with_wheel: bool = True) -> dict:
    tests = Path(__file__).parent
    path = [str(root / "site")] if with_wheel else []
    env = {**{k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"},
           "PYTHONPATH": os.pathsep.join([*path, str(tests.parent)])}
    proc = subprocess.run([sys.executable, "-c", ORT_TRT_PROBE, str(provider), order], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_ort_trt_availability_is_the_same_whatever_was_imported_first(pip_tensorrt):
    """Before: available once `import tensorrt` had loaded the libraries, unavailable in the fresh child that
    runs the row. Now both processes find the files where pip put them, and the row's process loads them."""
    root, provider = pip_tensorrt
    fresh = _ort_trt_in_a_fresh_process(root, provider, "fresh")
    imported = _ort_trt_in_a_fresh_process(root, provider, "import-first")
    assert fresh["ok"] and imported["ok"] and fresh["reason"] == imported["reason"] == ""
    libs = root / "site" / "tensorrt_libs"
    assert fresh["loaded"] == [str(libs / "libnvinfer.so.10"), str(libs / "libnvonnxparser.so.10")]
    assert fresh["by_name"]  # the provider's dlopen of libnvinfer.so.10 now succeeds in that process


def test_ort_trt_without_the_tensorrt_wheel_says_what_cannot_be_loaded(pip_tensorrt):
    root, provider = pip_tensorrt
    found = _ort_trt_in_a_fresh_process(root, provider, "fresh", with_wheel=False)
    assert not found["ok"] and not found["by_name"]
    assert "needs libnvinfer.so.10, libnvonnxparser.so.10" in found["reason"]
    assert "cannot be loaded (TensorRT 10 is not installed, or not on LD_LIBRARY_PATH)" in found["reason"]

"""ONNX Runtime's TensorRT execution provider: TensorRT engines built by ONNX Runtime from the same
ONNX artifacts, with the CUDA provider taking the nodes TensorRT cannot.

The provider builds a weakly typed network (the ONNX's float types are hints; precision comes from
builder flags), unlike the `trt` backend's strongly typed one, so each precision sets its flags:
fp16 `trt_fp16_enable`; int8 `trt_int8_enable` with no calibration table, so that the Q/DQ nodes
give the scales (explicit quantization; without the flag TensorRT refuses the int8 tensors the
parser makes: "int8 is not configured in the builder", onnxruntime issue 13381). fp16 is not
enabled for int8: the Q/DQ ONNX keeps its other layers in fp32, as the `trt` backend runs them.
TF32 cannot be turned off through the provider (no option, onnxruntime issues 26029 and 28177;
only NVIDIA_TF32_OVERRIDE=0 for the whole process), so rows say so.

onnxruntime-gpu lists the provider whether or not TensorRT's libraries can be loaded, so
availability reads which TensorRT libraries the provider library links (its ELF DT_NEEDED
entries: onnxruntime-gpu 1.31.1 links libnvinfer.so.10 and libnvonnxparser.so.10) and looks for
those files where the process running the row loads them from (LD_LIBRARY_PATH, the pip wheel's
tensorrt_libs folder, the loader's cache): the same answer in every process, whatever it imported.
That process loads them from there before the session starts (a pip-installed TensorRT is where no
loader looks), and activation checks that the provider is really active.
Provider options checked against onnxruntime's tensorrt_execution_provider_info.cc and the Python
bindings' parser (booleans must read "True"/"False"): device_id, user_compute_stream,
trt_fp16_enable, trt_int8_enable, trt_int8_use_native_calibration_table, trt_engine_cache_enable,
trt_engine_cache_path, trt_max_workspace_size.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import mmap
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import UsageError
from ..export.artifacts import ONNX, ONNX_FP16, ONNX_INT8
from .onnxruntime import OnnxRuntimeRunner, cuda_provider_options, onnxruntime_available

PROVIDER = "TensorrtExecutionProvider"
PROVIDER_LIBRARY = "libonnxruntime_providers_tensorrt.so"
# What onnxruntime-gpu 1.x's TensorRT provider links (TensorRT 10) when its library cannot be read.
ASSUMED_TRT_LIBRARIES = ("libnvinfer.so.10",)
TRT_LIBRARY = re.compile(r"^lib(nvinfer|nvonnxparser)(_plugin)?\.so\.(\d+)$")
NVINFER = re.compile(r"^libnvinfer\.so\.(\d+)$")
NVINFER_MAJORS = range(8, 13)  # probed to name what a machine has when the needed one is missing

TF32_CAVEAT = (
    "TF32 is on by default in TensorRT's builder and ONNX Runtime's TensorRT provider has no option to turn "
    "it off, so fp32 layers may round their inputs to 10 mantissa bits (NVIDIA_TF32_OVERRIDE=0 in the "
    "environment turns it off for the whole process)"
)
FP16_CAVEAT = (
    "weakly typed network with trt_fp16_enable: TensorRT picks fp16 or fp32 per layer by speed, so the fp16 "
    "ONNX's types are hints (layers it keeps in fp32 may run in fp16); the trt backend builds the same "
    "ONNX strongly typed"
)
INT8_CAVEAT = (
    "explicit quantization from the Q/DQ ONNX (trt_int8_enable, no calibration table) in a weakly typed "
    "network: the Q/DQ nodes decide which layers run in int8, the other layers run in fp32 (fp16 not enabled)"
)


# ---------------------------------------------------------------------------- provider options
def tensorrt_provider_options(precision: str, cache_dir: str | os.PathLike[str] | None = None,
                              workspace_mb: int | None = None, stream: int | None = None) -> dict[str, Any]:
    """The TensorRT provider's options for one precision (booleans as Python bools: the bindings
    read str(value) and accept only "True"/"False")."""
    options: dict[str, Any] = {
        "device_id": 0,
        "trt_fp16_enable": precision == "fp16",
        "trt_int8_enable": precision == "int8",
    }
    if precision == "int8":
        # No trt_int8_calibration_table_name: the scales come from the Q/DQ nodes (TensorRT refuses
        # dynamic ranges in a network with Q/DQ layers).
        options["trt_int8_use_native_calibration_table"] = False
    if cache_dir:
        options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
    if workspace_mb:
        options["trt_max_workspace_size"] = int(workspace_mb) * 2**20
    if stream is not None:
        options["user_compute_stream"] = str(stream)
    return options


def tf32_overridden(environ: Mapping[str, str]) -> bool:
    """Whether NVIDIA_TF32_OVERRIDE=0 turns TF32 off for the process (TensorRT honours it at build time)."""
    return environ.get("NVIDIA_TF32_OVERRIDE", "").strip() == "0"


def engine_cache_path(cache_dir: str | os.PathLike[str], environ: Mapping[str, str]) -> Path:
    """Where ort-trt's engines go: the provider names its cache files by graph and precision only, so
    engines built with and without TF32 (NVIDIA_TF32_OVERRIDE) get their own directories."""
    return Path(cache_dir) / "ort-trt" / ("tf32-off" if tf32_overridden(environ) else "tf32-on")


def ort_trt_caveats(precision: str, environ: Mapping[str, str]) -> list[str]:
    """What every ort-trt row at `precision` must say about its arithmetic."""
    caveats = {"fp16": [FP16_CAVEAT], "int8": [INT8_CAVEAT]}.get(precision, [])
    return caveats + ([] if tf32_overridden(environ) else [TF32_CAVEAT])


# ---------------------------------------------------------------------------- availability
def elf_needed(path: str | os.PathLike[str]) -> list[str]:
    """The DT_NEEDED entries (linked libraries) of an ELF shared library, read from its dynamic
    segment; [] if the file is not an ELF this can read."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
            return []
        wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
        # the header's e_phoff, e_phentsize, e_phnum; then per program header p_type, p_offset, p_vaddr, p_filesz
        phoff = struct.unpack_from(order + ("Q" if wide else "I"), data, 32 if wide else 28)[0]
        phentsize, phnum = struct.unpack_from(order + "HH", data, 54 if wide else 42)
        segments = []
        for i in range(phnum):
            at = phoff + i * phentsize
            if wide:
                p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(order + "IIQQQQ", data, at)
            else:
                p_type, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(order + "IIIII", data, at)
            segments.append((p_type, p_offset, p_vaddr, p_filesz))
        dynamic = next(((off, size) for kind, off, _, size in segments if kind == 2), None)  # PT_DYNAMIC
        if dynamic is None:
            return []
        entry = "qQ" if wide else "iI"
        step = struct.calcsize(order + entry)
        needed, strtab = [], None
        for at in range(dynamic[0], dynamic[0] + dynamic[1] - step + 1, step):
            tag, value = struct.unpack_from(order + entry, data, at)
            if tag == 0:  # DT_NULL
                break
            if tag == 1:  # DT_NEEDED: an offset into the string table
                needed.append(value)
            elif tag == 5:  # DT_STRTAB: the string table's virtual address
                strtab = value
        base = next((off + strtab - vaddr for kind, off, vaddr, size in segments
                     if kind == 1 and strtab is not None and vaddr <= strtab < vaddr + size), None)  # PT_LOAD
        if base is None:
            return []
        return [data[base + n:data.find(b"\0", base + n)].decode("ascii", "replace") for n in needed]


def provider_library() -> Path | None:
    """onnxruntime-gpu's TensorRT provider library, found without importing onnxruntime."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "capi" / PROVIDER_LIBRARY
    return path if path.is_file() else None


def tensorrt_libraries(needed: Iterable[str]) -> list[str]:
    """The TensorRT libraries among a library's DT_NEEDED entries (libnvinfer.so.N, libnvonnxparser.so.N...)."""
    return [name for name in needed if TRT_LIBRARY.match(name)]


SYSTEM_LIBRARY_DIRS = ("/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib64", "/lib")


def library_dirs() -> list[Path]:
    """Where TensorRT's libraries are looked for, the same in every process whatever it imported: the
    folders on LD_LIBRARY_PATH, then the `tensorrt_libs` wheel's folder (where pip puts TensorRT; found
    without importing it, since importing it loads the libraries into this process alone), then the
    system's. Loading a library by name would answer for this process only: a row runs in a child."""
    dirs = [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    spec = importlib.util.find_spec("tensorrt_libs")
    if spec is not None:
        dirs += [Path(p) for p in spec.submodule_search_locations or ()]
    return dirs + [Path(p) for p in SYSTEM_LIBRARY_DIRS]


@functools.cache
def _loader_cache() -> dict[str, str]:
    """soname -> path from the dynamic loader's cache (`ldconfig -p`), where the loader also looks."""
    ldconfig = shutil.which("ldconfig") or ("/sbin/ldconfig" if Path("/sbin/ldconfig").exists() else None)
    if ldconfig is None:
        return {}
    try:
        listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, str] = {}
    for line in listing.splitlines():
        name, arrow, path = line.strip().partition(" => ")
        if arrow:
            found.setdefault(name.split(" ", 1)[0], path.strip())
    return found


def locate_library(name: str) -> str | None:
    """The file a library name resolves to (library_dirs, then the loader's cache), or None."""
    for folder in library_dirs():
        if (folder / name).is_file():
            return str(folder / name)
    return _loader_cache().get(name)


def loadable_libraries(names: Iterable[str]) -> list[str]:
    """Those of `names` found where a process running the row will load them from (locate_library)."""
    return [name for name in names if locate_library(name) is not None]


def preload_trt_libraries(library: Path | None) -> list[str]:
    """Load the TensorRT libraries the provider links, from where they were found, into this process (the
    one that runs the row): the provider's own dlopen then finds them by name, a pip-installed TensorRT
    (in tensorrt_libs, where no loader looks) included. Returns the files loaded."""
    loaded = []
    for name in sorted(provider_trt_libraries(library)[0], key=lambda n: not n.startswith("libnvinfer.")):
        path = locate_library(name)
        if path is not None:
            with contextlib.suppress(OSError):  # what still fails is the provider's to say
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                loaded.append(path)
    return loaded


def ort_trt_available(required: Sequence[str], loadable: Collection[str], assumed: bool = False) -> tuple[bool, str]:
    """Whether the TensorRT libraries the provider links can be loaded, and a reason naming the
    mismatch when not (e.g. the provider needs libnvinfer.so.10 and the machine has only .so.11)."""
    missing = [name for name in required if name not in loadable]
    if not missing:
        return True, ""
    basis = " (assumed for onnxruntime-gpu 1.x: its provider library could not be read)" if assumed else ""
    needs = f"onnxruntime-gpu's TensorRT provider needs {', '.join(required)}{basis}"
    wanted = {int(m.group(1)) for m in map(NVINFER.match, required) if m}
    others = sorted(name for name in loadable if (m := NVINFER.match(name)) and int(m.group(1)) not in wanted)
    if others and not any(NVINFER.match(name) for name in required if name in loadable):
        return False, f"{needs}; this machine has {', '.join(others)} only"
    lacking = sorted({int(m.group(1)) for m in map(NVINFER.match, missing) if m})
    what = " or ".join(f"TensorRT {major}" for major in lacking) + " is " if lacking else ""
    return False, f"{needs}; {', '.join(missing)} cannot be loaded ({what}not installed, or not on LD_LIBRARY_PATH)"


def provider_trt_libraries(library: Path | None) -> tuple[list[str], bool]:
    """The TensorRT libraries the provider library links, and whether they were assumed (unreadable)."""
    required: list[str] = []
    if library is not None:
        try:
            required = tensorrt_libraries(elf_needed(library))
        except (OSError, ValueError, struct.error):
            required = []
    return (required, False) if required else (list(ASSUMED_TRT_LIBRARIES), True)


def check_trt_libraries(library: Path | None) -> tuple[bool, str]:
    """ort_trt_available for this machine: the provider library's TensorRT links, looked for where the
    process running the row will load them from."""
    required, assumed = provider_trt_libraries(library)
    loadable = loadable_libraries(required)
    if len(loadable) < len(required):  # name what the machine has instead
        loadable += loadable_libraries(f"libnvinfer.so.{major}" for major in NVINFER_MAJORS
                                       if f"libnvinfer.so.{major}" not in required)
    return ort_trt_available(required, loadable, assumed)


# ---------------------------------------------------------------------------- runner
class OnnxRuntimeTensorRTRunner(OnnxRuntimeRunner):
    name: ClassVar[str] = "ort-trt"
    description: ClassVar[str] = "ONNX Runtime with the TensorRT execution provider (CUDA provider as fallback)"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": ONNX, "fp16": ONNX_FP16, "int8": ONNX_INT8}
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    isolate_by_default: ClassVar[bool] = True
    builds_engine: ClassVar[bool] = True

    @dataclass(frozen=True)
    class Options:
        """The TensorRT provider's settings (`--backend-option ort-trt.FIELD=VALUE`, or --trt-workspace)."""

        workspace_mb: int | None = field(default=None, metadata={
            "help": "TensorRT workspace limit in MiB (none: the provider's default)",
            "flag": "--trt-workspace"})

        def __post_init__(self) -> None:
            if self.workspace_mb is not None and self.workspace_mb <= 0:
                raise UsageError("the TensorRT workspace must be a positive number of MiB")

    @classmethod
    def available(cls, device: str = "cuda") -> tuple[bool, str]:
        ok, reason = onnxruntime_available(PROVIDER, " (it comes with onnxruntime-gpu)")
        if not ok:
            return ok, reason
        ok, reason = check_trt_libraries(provider_library())
        if not ok:
            return ok, reason
        from .torch_common import torch_available

        return torch_available("cuda")

    @classmethod
    def faithful(cls, precision: str, device: str) -> bool:
        """fp32 with TF32 on is not fp32 arithmetic; fp16 and int8 layers run at their precision."""
        return precision != "fp32" or tf32_overridden(os.environ)

    @classmethod
    def caveats(cls, precision: str, device: str) -> list[str]:
        return ort_trt_caveats(precision, os.environ)

    def required_provider(self) -> str:
        return PROVIDER

    def provider_hint(self) -> str:
        ok, reason = check_trt_libraries(provider_library())
        return "" if ok else reason

    def provider_list(self) -> list[Any]:
        self.details["trt_libraries"] = preload_trt_libraries(provider_library())
        cache_dir = self.options.get("engine_cache_dir")
        if cache_dir:
            cache_dir = engine_cache_path(cache_dir, os.environ)
            cache_dir.mkdir(parents=True, exist_ok=True)
        trt_options = tensorrt_provider_options(self.precision, cache_dir, self.backend_options.workspace_mb,
                                                self.timer.handle)
        cuda_options = cuda_provider_options(self.timer.handle)
        return [(PROVIDER, trt_options), ("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]

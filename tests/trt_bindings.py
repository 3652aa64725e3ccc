"""The real TensorRT Python bindings without a GPU: NVIDIA's bindings wheels (~1.3 MB each, on the package
index) installed into a folder of their own, and three stub libraries built with `cc` that provide the
symbols the bindings link (`libnvinfer.so.N`, `libnvonnxparser.so.N`, `libnvinfer_plugin.so.N`).
`import tensorrt_bindings` then works: every enum, class and method is the real one, `trt.Logger` is the
real C++ logger, and `trt.Builder(...)` / `trt.Runtime(...)` fail as they do where TensorRT cannot start
(the stub logs an error through the logger it is given, then returns null).

`prepare(version, root)` gives the environment a subprocess imports them with, or raises `Unavailable`
with the reason (no compiler, no index). Wheels are kept under ~/.cache/deployval-test/trt-bindings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# The bindings versions the conformance test checks: the oldest and newest TensorRT 10 and TensorRT 11.
VERSIONS = {
    "10.0.1": "tensorrt-cu12-bindings",
    "10.13.3.9": "tensorrt-cu12-bindings",
    "11.4.0.106": "tensorrt-cu13-bindings",
}
CACHE = Path(os.environ.get("DEPLOYVAL_TRT_BINDINGS_CACHE", Path.home() / ".cache" / "deployval-test" / "trt-bindings"))

# What libnvinfer would log where the CUDA driver cannot start (Error Code 6 is TensorRT's API usage
# error); ILogger::log is the first entry of the logger's virtual table in TensorRT 10. In 11 that entry
# is not `log` (calling it prints nothing), so the TensorRT 11 stubs fail without logging.
NVINFER = r"""
#include <stddef.h>
#include <stdint.h>
#define FAILURE "Error Code 6: API Usage Error (CUDA initialization failure with error: 35)"
typedef void (*log_fn)(void *self, int32_t severity, const char *msg);
static void say(void *logger, const char *msg) {
    if (logger) { void **vtable = *(void ***)logger; ((log_fn)vtable[0])(logger, 1, msg); }
}
void *createInferBuilder_INTERNAL(void *logger, int32_t version) {
    if (version < 110000) say(logger, "createInferBuilder: " FAILURE);
    return NULL;
}
void *createInferRuntime_INTERNAL(void *logger, int32_t version) {
    if (version < 110000) say(logger, "createInferRuntime: " FAILURE);
    return NULL;
}
void *createInferRefitter_INTERNAL(void *engine, void *logger, int32_t version) { return NULL; }
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int32_t capability) { return NULL; }
int32_t getInferLibVersion(void) { return 0; }
"""
NVONNXPARSER = r"""
#include <stddef.h>
#include <stdint.h>
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int32_t version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int32_t version) { return NULL; }
int32_t getNvOnnxParserVersion(void) { return 0; }
"""
NVINFER_PLUGIN = r"""
#include <stdbool.h>
bool initLibNvInferPlugins(void *logger, const char *ns) { return true; }
"""


class Unavailable(Exception):
    """Why the bindings cannot be set up here (the test skips with it)."""


def _wheel(version: str) -> Path:
    package = VERSIONS[version]
    folder = CACHE / "wheels"
    name = package.replace("-", "_")
    found = sorted(folder.glob(f"{name}-{version}-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                           "--python-version", tag[2:], "--implementation", "cp", "--platform",
                           "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform",
                           "manylinux2014_x86_64", "-d", str(folder), f"{package}=={version}"],
                          capture_output=True, text=True, timeout=300)
    found = sorted(folder.glob(f"{name}-{version}-*.whl"))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise Unavailable(f"cannot download {package}=={version} for {tag}: {tail[0]}")
    return found[0]


def _compile(source: str, target: Path, soname: str) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise Unavailable("no C compiler (cc) to build the stub TensorRT libraries")
    code = target.with_suffix(".c")
    code.write_text(source)
    proc = subprocess.run([compiler, "-shared", "-fPIC", "-o", str(target), str(code), f"-Wl,-soname,{soname}"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise Unavailable(f"cc could not build {soname}: {proc.stderr.strip()[:300]}")


def prepare(version: str, root: Path) -> dict[str, str]:
    """The bindings of `version` installed under `root` with their stub libraries: the environment
    variables a subprocess needs to `import tensorrt_bindings`."""
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        raise Unavailable("the TensorRT bindings wheels are for Linux x86_64")
    major = version.split(".")[0]
    site, stubs = root / f"site-{version}", root / f"stubs-{major}"
    if not (site / "tensorrt_bindings").is_dir():
        wheel = _wheel(version)
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                               "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise Unavailable(f"cannot install {wheel.name}: {proc.stderr.strip()[-300:]}")
    if not (stubs / f"libnvinfer.so.{major}").exists():
        stubs.mkdir(parents=True, exist_ok=True)
        for source, name in ((NVINFER, "libnvinfer"), (NVONNXPARSER, "libnvonnxparser"),
                             (NVINFER_PLUGIN, "libnvinfer_plugin")):
            _compile(source, stubs / f"{name}.so.{major}", f"{name}.so.{major}")
    library_path = os.pathsep.join(p for p in (str(stubs), os.environ.get("LD_LIBRARY_PATH", "")) if p)
    return {"LD_LIBRARY_PATH": library_path, "PYTHONPATH": os.pathsep.join((str(site), str(Path(__file__).parent),
                                                                           str(Path(__file__).parent.parent)))}

"""The `gpu` extra installs a working pair: the TensorRT that onnxruntime-gpu's TensorRT provider links.
Read from the real wheels at the pinned versions (the provider library's and the TensorRT bindings'
ELF DT_NEEDED entries), without a GPU. Skips with its reason where the package index is unreachable."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from trt_bindings import CACHE

from deployval.backends.onnxruntime_tensorrt import PROVIDER_LIBRARY, elf_needed, tensorrt_libraries

ROOT = Path(__file__).parent.parent


def _extra(name: str) -> dict[str, str]:
    """An extra's requirements of pyproject.toml, by package name."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][name]
    return {re.split(r"[<>=!~ ]", r, maxsplit=1)[0]: r for r in requirements}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def _wheel(package: str, version: str) -> Path:
    folder = CACHE / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    if not found:
        tag = f"{sys.version_info.major}{sys.version_info.minor}"
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                               "--python-version", tag, "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                               "--platform", "manylinux_2_17_x86_64", "-d", str(folder), f"{package}=={version}"],
                              capture_output=True, text=True, timeout=600)
        found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
        if proc.returncode != 0 or not found:
            pytest.skip(f"cannot download {package}=={version}: {(proc.stderr or 'no wheel').strip()[-200:]}")
    return found[0]


def _needed(wheel: Path, member_suffix: str, tmp_path: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        member = next(n for n in archive.namelist() if n.endswith(member_suffix))
        target = tmp_path / Path(member).name
        target.write_bytes(archive.read(member))
    return elf_needed(target)


def test_the_gpu_extra_pins_the_tensorrt_its_onnxruntime_provider_links(tmp_path):
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    extra, pins = _extra("gpu"), _pins()
    assert set(extra) == {"onnxruntime-gpu", "tensorrt-cu13"}, extra
    ort_version, trt_version = pins["onnxruntime-gpu"], pins["tensorrt-cu13"]
    provider = _needed(_wheel("onnxruntime-gpu", ort_version), f"capi/{PROVIDER_LIBRARY}", tmp_path)
    linked = tensorrt_libraries(provider)
    majors = {int(name.rsplit(".", 1)[1]) for name in linked}
    assert linked and majors == {Version(trt_version).major}, (linked, trt_version)
    # the extra admits that major only: `pip install .[gpu]` cannot resolve to a TensorRT the provider cannot load
    specifier = SpecifierSet(extra["tensorrt-cu13"].removeprefix("tensorrt-cu13"))
    assert Version(trt_version) in specifier
    assert not any(Version(f"{m}.0.0") in specifier for m in range(8, 14) if m not in majors)
    # the same CUDA major on both sides: the provider's libcudart and the TensorRT wheel's variant (cu13)
    cudart = next(name for name in provider if name.startswith("libcudart.so."))
    assert cudart == "libcudart.so.13"
    # and the TensorRT bindings of that release link the very libraries the provider links
    bindings = _needed(_wheel("tensorrt-cu13-bindings", pins["tensorrt-cu13-bindings"]), "tensorrt.so", tmp_path)
    assert set(linked) <= set(tensorrt_libraries(bindings)), (linked, bindings)
    assert pins["tensorrt-cu13-bindings"] == pins["tensorrt-cu13-libs"] == trt_version


def test_the_trt11_extra_is_tensorrt_11_alone():
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    extra = _extra("trt11")
    assert set(extra) == {"tensorrt-cu13"}  # no onnxruntime-gpu: its TensorRT provider needs TensorRT 10
    specifier = SpecifierSet(extra["tensorrt-cu13"].removeprefix("tensorrt-cu13"))
    assert Version("11.4.0.106") in specifier and Version("10.16.1.11") not in specifier

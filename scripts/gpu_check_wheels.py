"""The wheels the lent GPU machine lacks (scripts/gpu-check.sh, read its header first): which they are,
`prepare` (here, with network: download them into .whl/), and installing the carried wheels (there, no
network). Standard library only; `packaging` is used where importable."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gpu_check_core import ROOT

CONSTRAINTS = ROOT / "requirements" / "constraints.txt"

# --- the wheels the machine lacks --------------------------------------------------------------------
# Distribution (as requirements/constraints.txt spells it) -> what needs it. typer >= 0.20 carries its
# own copy of click, so click is not among them.
CARRIED = {
    "typer": "deployval's command line",
    "annotated-doc": "typer",
    "shellingham": "typer",
    "pydantic": "typer",
    "pydantic_core": "pydantic",
    "annotated-types": "pydantic",
    "typing-inspection": "pydantic",
    "rich": "deployval's tables",
    "markdown-it-py": "rich",
    "mdurl": "markdown-it-py",
    "Pygments": "rich, pytest",
    "onnxsim": "the simplify pass of every ONNX artifact",
    "onnxscript": "torch's dynamo ONNX exporter",
    "onnx-ir": "onnxscript",
    "pytest": "the GPU tests",
    "pluggy": "pytest",
    "iniconfig": "pytest",
}
# Dependencies of torch, onnx or onnxruntime, so on the machine already; carried in case they are
# missing or older than the carried packages require, and installed only then.
FALLBACK = {
    "typing_extensions": "pydantic, onnxscript (torch has an older one maybe)",
    "packaging": "pytest, onnxscript (onnxruntime has it)",
    "ml_dtypes": "onnx-ir, onnxscript (onnx has it)",
}
# What the machine has (torch, onnx, onnxruntime, numpy and their own requirements).
MACHINE_HAS = {"torch", "numpy", "onnx", "onnxruntime", "protobuf", "sympy", "mpmath", "filelock", "networkx",
               "jinja2", "markupsafe", "fsspec", "setuptools", "flatbuffers"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
LIMIT_MIB = 60


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[norm(match.group(1))] = match.group(2)
    return pins


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str  # normalized
    version: str
    tags: tuple[str, str, str]  # python, abi, platform (each may be a dotted set)


def parse_wheel(path: Path) -> Wheel:
    parts = path.name[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        raise ValueError(f"not a wheel file name: {path.name}")
    return Wheel(path, norm(parts[0]), parts[1], (parts[-3], parts[-2], parts[-1]))


def wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        text = zf.read(name).decode("utf-8", "replace")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


@dataclass(frozen=True)
class Unmet:
    wheel: str
    requirement: str
    name: str
    have: str | None

    def __str__(self) -> str:
        there = f"{self.name} {self.have} there" if self.have else "neither carried nor installed"
        return f"{self.wheel} needs {self.requirement}: {there}"


def requirement_problems(wheels: Iterable[Wheel], installed: Callable[[str], str | None],
                         environment: dict[str, str] | None = None) -> list[Unmet]:
    """Requirements of the wheels (markers evaluated for `environment`, extras left out) that neither a
    wheel of the set nor `installed(name)` satisfies ("?": there, version unknown). Without `packaging`
    only the names are checked."""
    wheels = list(wheels)
    versions = {w.name: w.version for w in wheels}
    try:
        from packaging.requirements import Requirement
    except ImportError:  # the machine's python3 without packaging: names only
        Requirement = None
    problems = []
    for wheel in wheels:
        for text in wheel_requirements(wheel.path):
            if Requirement is None:
                if ";" in text:
                    continue
                name, spec = norm(re.split(r"[\s(<>=!~;\[]", text, maxsplit=1)[0]), None
            else:
                req = Requirement(text)
                if req.marker is not None and not req.marker.evaluate({**(environment or {}), "extra": ""}):
                    continue
                name, spec = norm(req.name), req.specifier
            have = versions.get(name) or installed(name)
            if have is None or (spec is not None and have != "?" and not spec.contains(have, prereleases=True)):
                problems.append(Unmet(f"{wheel.name} {wheel.version}", text, name, have))
    return problems


# --- prepare (here, with network) ----------------------------------------------------------------------


def target_environment(python_version: str) -> dict[str, str]:
    return {"python_version": python_version, "python_full_version": f"{python_version}.0", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def exclude_from_git(dest: Path) -> str:
    """Add DEST to .git/info/exclude (so the device tool carries it only when named in `carry`)."""
    try:
        rel = dest.resolve().relative_to(ROOT)
    except ValueError:
        return f"{dest} is outside the repository: nothing to exclude"
    proc = subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        return "not a git checkout: nothing to exclude"
    exclude = ROOT / proc.stdout.strip()
    line = f"/{rel.as_posix()}/"
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if line in lines:
        return f"{line} already in {exclude.relative_to(ROOT)}"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as f:
        f.write(("" if not lines or exclude.read_text().endswith("\n") else "\n") + line + "\n")
    return f"added {line} to {exclude.relative_to(ROOT)}"


def prepare(dest: Path, python_version: str, limit_mib: float = LIMIT_MIB) -> int:
    pins = read_pins()
    wanted = {**CARRIED, **FALLBACK}
    missing = [name for name in wanted if norm(name) not in pins]
    if missing:
        print(f"gpu-check prepare: no pin in {CONSTRAINTS.relative_to(ROOT)} for {', '.join(missing)}",
              file=sys.stderr)
        return 2
    staging = Path(tempfile.mkdtemp(prefix="gpu-check-wheels-"))
    try:
        platform_args = [arg for plat in PLATFORMS for arg in ("--platform", plat)]
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp", *platform_args,
               "-d", str(staging), *(f"{name}=={pins[norm(name)]}" for name in wanted)]
        print(f"gpu-check prepare: downloading {len(wanted)} wheels for CPython {python_version} "
              f"manylinux x86_64 (pins from {CONSTRAINTS.relative_to(ROOT)})", file=sys.stderr)
        if subprocess.run(cmd, check=False).returncode != 0:
            print("gpu-check prepare: pip download failed (see above)", file=sys.stderr)
            return 1
        wheels = sorted((parse_wheel(p) for p in staging.glob("*.whl")), key=lambda w: w.name)
        total = sum(w.path.stat().st_size for w in wheels)
        why = {norm(k): v for k, v in wanted.items()}
        for wheel in wheels:
            kind = "if missing/older" if wheel.name in {norm(k) for k in FALLBACK} else "needed"
            print(f"  {wheel.path.stat().st_size / 2**20:7.2f} MiB  {wheel.path.name}  ({kind}: {why[wheel.name]})")
        print(f"  {total / 2**20:7.2f} MiB  total, {len(wheels)} wheels")
        problems = requirement_problems(
            wheels, lambda name: "?" if name in MACHINE_HAS else None, target_environment(python_version))
        if problems:
            print("gpu-check prepare: the wheel set is not closed:\n  " + "\n  ".join(map(str, problems)),
                  file=sys.stderr)
            return 2
        if total > limit_mib * 2**20:
            print(f"gpu-check prepare: {total / 2**20:.1f} MiB is over the {limit_mib} MiB limit "
                  "(the device tool carries 64 MiB in all): refused", file=sys.stderr)
            return 2
        dest.mkdir(parents=True, exist_ok=True)
        for old in dest.glob("*.whl"):
            old.unlink()
        for wheel in wheels:
            shutil.move(str(wheel.path), dest / wheel.path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    inside = dest.resolve().is_relative_to(ROOT)
    carry = f" Carry: [\"{dest.resolve().relative_to(ROOT)}\"]." if inside else ""
    print(f"gpu-check prepare: {len(wheels)} wheels, {total / 2**20:.1f} MiB in {dest}; "
          f"{exclude_from_git(dest)}.{carry}")
    return 0


# --- installing the carried wheels (there) ----------------------------------------------------------------


def wheel_fits(wheel: Wheel) -> bool:
    """Whether this interpreter can install the wheel (packaging.tags where importable)."""
    py, abi, plat = (t.split(".") for t in wheel.tags)
    try:
        from packaging.tags import sys_tags
    except ImportError:
        if plat == ["any"]:
            return any(p.startswith(("py3", f"cp{sys.version_info[0]}{sys.version_info[1]}")) for p in py)
        if not sys.platform.startswith("linux") or not any(q.endswith("x86_64") for q in plat):
            return False
        tags = [tuple(map(int, m.groups())) for m in (re.match(r"cp(\d)(\d+)$", p) for p in py) if m]
        if "abi3" in abi:
            return any(tag <= sys.version_info[:2] for tag in tags)
        return tuple(sys.version_info[:2]) in tags
    supported = {str(t) for t in sys_tags()}
    return any(f"{p}-{a}-{q}" in supported for p in py for a in abi for q in plat)


def installed_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def unzip_install(wheel: Path, site: Path) -> None:
    """A wheel install without pip: its files into SITE, the .data/{purelib,platlib} folders merged."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            head, _, rest = name.partition("/")
            if head.endswith(".data"):
                kind, _, rest = rest.partition("/")
                if kind not in ("purelib", "platlib") or not rest:
                    continue
                name = rest
            target = site / name
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)


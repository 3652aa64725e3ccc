"""The steps of scripts/gpu_check.py (scripts/gpu-check.sh, read its header first): each `step_*`
takes the runner, its Step and the seconds it may use (-1: plan only, raise NotRun or return PLANNED)
and returns (status, detail). Standard library only."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gpu_check_core import CUDA_BACKENDS, FAIL, OPTIONAL_CUDA, PASS, PLANNED, ROOT, SHAPE_GRID, NotRun, Step, first_line
from gpu_check_wheels import (
    FALLBACK,
    installed_version,
    norm,
    parse_wheel,
    requirement_problems,
    unzip_install,
    wheel_fits,
)

# A step's `r` is gpu_check.Runner, named here as Runner = Any: gpu_check imports this module, and an
# import back, even for annotations, would tie the modules in a circle.
Runner = Any

ENV_SNIPPET = r"""
import importlib, importlib.metadata, importlib.util, json, platform, sys
env = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
       "modules": {}, "missing": {}}
for module in ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "onnx_ir", "onnxsim", "typer", "rich",
               "pydantic", "pytest", "ml_dtypes"):
    try:
        mod = importlib.import_module(module)
        env["modules"][module] = {"version": getattr(mod, "__version__", "?"), "file": getattr(mod, "__file__", None)}
    except Exception as exc:
        env["missing"][module] = f"{type(exc).__name__}: " + (str(exc).splitlines() or [""])[0]
# found, not imported (slow, or able to crash the probe): whether they work is `deployval backends`' business
for module, dist in (("tensorrt", "tensorrt"), ("polygraphy", "polygraphy"), ("ray", "ray"),
                     ("matplotlib", "matplotlib")):
    spec = importlib.util.find_spec(module)
    if spec is None:
        env["missing"][module] = "not installed"
        continue
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    env["modules"][module] = {"version": version, "file": spec.origin}
try:
    import deployval.cli
    env["deployval"] = "ok"
except Exception as exc:
    env["deployval"] = f"{type(exc).__name__}: " + (str(exc).splitlines() or [""])[0]
for dist in ("onnxruntime", "onnxruntime-gpu"):
    try:
        env[f"dist:{dist}"] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pass
if "torch" in env["modules"]:
    import torch
    env["torch_cuda"] = torch.version.cuda
    env["cuda_available"] = torch.cuda.is_available()
    env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env["gpus"] = [{"name": torch.cuda.get_device_name(i),
                    "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
                    "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
                   for i in range(torch.cuda.device_count())] if env["cuda_available"] else []
if "onnxruntime" in env["modules"]:
    import onnxruntime
    env["onnxruntime_providers"] = onnxruntime.get_available_providers()
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env, indent=2))
"""

AVAILABILITY_SNIPPET = r"""
import json, sys
result = {}
try:
    from deployval.backends.base import backend_entries, check_available
    entries = backend_entries()
    for device in ("cuda", "cpu"):
        result[device] = {}
        for name in ("torch", "torchscript", "ort", "trt", "ort-trt"):
            try:
                ok, reason = check_available(entries[name].load(), device)
            except Exception as exc:
                ok, reason = False, f"{type(exc).__name__}: {exc}"
            result[device][name] = [bool(ok), reason]
            print(f"{name} on {device}: " + ("yes" if ok else "no: " + reason))
except Exception as exc:
    result["error"] = f"{type(exc).__name__}: {exc}"
    print(result["error"])
json.dump(result, open(sys.argv[1], "w"), indent=2)
"""

RAY_EQUAL_SNIPPET = r"""
import json, sys
def rows(path):
    report = json.load(open(path))
    return {(r["backend"], r["precision"]): (r["status"], [o["metrics"]["max_abs"] for o in r["outputs"]])
            for r in report["results"]}
local, ray = rows(sys.argv[1]), rows(sys.argv[2])
for key in sorted(set(local) | set(ray)):
    print(key, "local", local.get(key), "ray", ray.get(key))
sys.exit(0 if local == ray else "the Ray run differs from the local run")
"""


# --- the steps ----------------------------------------------------------------------------------------


def step_wheels(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    wheels = sorted(r.wheel_dir.glob("*.whl")) if r.wheel_dir.is_dir() else []
    if not wheels:
        raise NotRun(f"no wheels in {r.wheel_dir} (scripts/gpu-check.sh prepare makes them; carry: [\".whl\"])")
    parsed = [parse_wheel(p) for p in wheels]
    fallback = {w.name: w for w in parsed if w.name in {norm(n) for n in FALLBACK}}
    needed = [w for w in parsed if w.name not in fallback]
    # Needed packages: installed unless this very version is there. Fallbacks (dependencies of torch, onnx,
    # onnxruntime): only where missing, or where the installed one is too old for the carried packages.
    chosen = [w for w in needed if installed_version(w.name) != w.version]
    chosen += [w for name, w in fallback.items() if installed_version(name) is None]

    def after(name: str) -> str | None:  # the version the steps will see
        return next((w.version for w in chosen if w.name == name), None) or installed_version(name)

    for unmet in requirement_problems(needed, after):
        if unmet.name in fallback and fallback[unmet.name] not in chosen:
            chosen.append(fallback[unmet.name])
    unfit = [w.path.name for w in chosen if not wheel_fits(w)]
    if unfit:  # one wheel for another python, and the set would be half installed: none is
        return FAIL, (f"{len(unfit)} wheel(s) in {r.wheel_dir} do not fit this python "
                      f"{sys.version.split()[0]}: {', '.join(unfit[:3])} (prepare with WHEEL_PYTHON="
                      f"{sys.version_info.major}.{sys.version_info.minor})")
    if limit < 0:
        return PLANNED, f"would install {', '.join(w.name for w in chosen) or 'nothing'}"
    if chosen:
        r.site.mkdir(parents=True, exist_ok=True)
        if subprocess.run([r.python, "-m", "pip", "--version"], capture_output=True, check=False).returncode == 0:
            rc, limit = r.command(step.name, [r.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                              "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(r.site),
                                              *(str(w.path) for w in chosen)], limit)
            if rc != 0:
                return r.verdict(step.name, rc, limit, what="pip install")
        else:  # no pip on the machine: a wheel is a zip file
            for w in chosen:
                unzip_install(w.path, r.site)
    unmet = requirement_problems([*needed, *chosen], after)
    names = ", ".join(f"{w.name} {w.version}" for w in chosen)
    detail = (f"installed {len(chosen)} into {r.site}: {names}" if chosen else "nothing needed") + (
        f"; {len(parsed) - len(chosen)} already there" if len(parsed) > len(chosen) else "") + (
        "; unmet: " + "; ".join(map(str, unmet)) if unmet else "")
    with (r.work / "logs" / "wheels.log").open("a") as f:
        f.write(detail + "\n")
    return PASS, detail


def step_environment(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    log = r.work / "logs" / f"{step.name}.log"
    if shutil.which("nvidia-smi"):
        r.command(step.name, ["nvidia-smi"], 30)
        r.command(step.name, ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                              "--format=csv"], 30)
    else:
        with log.open("a") as f:
            f.write("nvidia-smi: not found\n")
    path = r.work / "environment.json"
    rc, limit = r.command(step.name, [r.python, "-c", ENV_SNIPPET, str(path)], limit)
    if rc != 0 or not path.exists():
        return r.verdict(step.name, rc, limit, what="the environment probe")
    r.environment = json.loads(path.read_text())
    env = r.environment
    required = ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "onnxsim", "typer", "rich")
    missing = [f"{m} ({env['missing'].get(m, '?')})" for m in required if m not in env["modules"]]
    gpus = ", ".join(g["name"] for g in env.get("gpus") or []) or "no CUDA GPU"
    optional = [m for m in ("pytest", "tensorrt", "ray") if m not in env["modules"]]
    detail = (f"python {env['python']}, torch {env['modules'].get('torch', {}).get('version')} "
              f"(CUDA {env.get('torch_cuda')}), {gpus}; ORT providers "
              f"{', '.join(env.get('onnxruntime_providers', [])) or '-'}"
              + (f"; not installed: {', '.join(optional)}" if optional else ""))
    if missing or env.get("deployval") != "ok":
        return FAIL, ("deployval's requirements missing: " + "; ".join(missing) if missing else
                      f"deployval does not import: {env.get('deployval')}") + f" — {detail}"
    return PASS, detail


def step_backends(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    r.need_deployval()
    rc, _ = r.command(step.name, [r.python, "-m", "deployval", "backends"], min(limit, 60))
    path = r.work / "backends.json"
    rc2, limit = r.command(step.name, [r.python, "-c", AVAILABILITY_SNIPPET, str(path)], limit)
    if path.exists():
        r.availability = json.loads(path.read_text())
    if rc != 0 or rc2 != 0 or "error" in r.availability:
        return FAIL, r.availability.get("error") or r.verdict(step.name, rc if rc != 0 else rc2, limit)[1]
    cuda = [b for b in CUDA_BACKENDS if r.available(b, "cuda")[0]]
    cpu = [b for b in CUDA_BACKENDS if r.available(b, "cpu")[0]]
    return PASS, f"cuda: {', '.join(cuda) or 'none'}; cpu: {', '.join(cpu) or 'none'}"


def _rows(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()).get("results", []) if path.exists() else []


def _judged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row.get("status") not in ("skipped", "reference")]


def _counts(rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get("status", "?")] = counts.get(row.get("status", "?"), 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def step_cuda_compare(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    model, precisions = step.args
    r.need_deployval()
    backends = r.cuda_backends()
    if "torch" not in backends:
        raise NotRun("torch cannot run on the device: " + r.available("torch", r.gpu_device())[1])
    if any(b in backends for b in ("ort", "trt", "ort-trt")):
        r.need_onnx()
    if limit < 0:
        return PLANNED, f"--backends {','.join(backends)} on {r.gpu_device()}"
    report = r.report(model, "cuda-compare")
    status, detail = r.deployval(step.name, ["compare", model, "--device", r.gpu_device(), "--backends",
                                             ",".join(backends), "--precisions", precisions, "--time-budget",
                                             r.latency_s, "--json", str(report), "-q"], limit)
    rows = _rows(report)
    wrong = [f"{row['backend']} {row['precision']} on {row.get('device')}" for row in rows
             if row.get("status") != "skipped" and row.get("device") not in (None, r.gpu_device())]
    if status == PASS and wrong:
        return FAIL, "rows not on the device: " + ", ".join(wrong)
    if status == PASS and not _judged(rows):
        return FAIL, "no row was judged"
    return status, (detail + "; " if detail else "") + f"--backends {','.join(backends)}: {_counts(rows)}"


def step_memory_fields(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    reports = [r.report(m, "cuda-compare") for m, _ in r.models]
    if limit < 0:
        return PLANNED, "after the cuda-compare steps"
    present = [p for p in reports if p.exists()]
    if not present:
        raise NotRun("no cuda-compare report (those steps did not run)")
    missing, seen = [], 0
    for path in present:
        for row in _rows(path):
            if row.get("status") == "skipped" or row.get("device") != "cuda":
                continue
            details = row.get("details") or {}
            memory = details.get("memory") or {}
            fields = {"torch": ("cuda_peak_allocated_bytes",), "torchscript": ("cuda_peak_allocated_bytes",),
                      "trt": ("engine_bytes", "engine_device_memory_bytes")}.get(row.get("backend"), ())
            for name in fields:
                seen += 1
                value = memory.get(name, details.get(name))
                if not (isinstance(value, int) and value > 0):
                    missing.append(f"{path.stem.split('.')[0]} {row['backend']} {row['precision']}: {name}={value}")
    if not seen:
        return FAIL, "no torch/torchscript/trt row on cuda in the reports"
    if missing:
        return FAIL, "missing or zero: " + "; ".join(missing[:6])
    return PASS, f"{seen} fields present and > 0 in {len(present)} report(s)"


def step_cuda_repeat(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    r.need_deployval()
    backends = r.cuda_backends()
    if any(b in backends for b in ("ort", "trt", "ort-trt")):
        r.need_onnx()
    if limit < 0:
        return PLANNED, f"--backends {','.join(backends)} on {r.gpu_device()}"
    report = r.report("convs", "cuda-repeat")
    status, detail = r.deployval(step.name, ["compare", "convs", "--device", r.gpu_device(), "--backends",
                                             ",".join(backends), "--precisions", "fp32,fp16", "--repeat", "2",
                                             "--time-budget", r.latency_s, "--json", str(report), "-q"], limit)
    rows = _judged(_rows(report))
    bad = []
    for row in rows:
        repeat = (row.get("details") or {}).get("repeat") or {}
        if repeat.get("runs") != 2:
            bad.append(f"{row['backend']} {row['precision']}: repeat.runs={repeat.get('runs')}")
        if row["backend"] in ("trt", "ort-trt") and repeat.get("engine_builds") != 2:
            bad.append(f"{row['backend']} {row['precision']}: engine_builds={repeat.get('engine_builds')}")
    if status == PASS and (bad or not rows):
        return FAIL, "; ".join(bad) or "no row was judged"
    differ = [f"{row['backend']} {row['precision']}" for row in rows
              if not ((row.get("details") or {}).get("repeat") or {}).get("identical", True)]
    return status, (detail + "; " if detail else "") + f"--backends {','.join(backends)}: {_counts(rows)}" + (
        f"; runs differ: {', '.join(differ)}" if differ else "; both runs identical")


def step_shape_grid(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    (where,) = step.args
    r.need_deployval()
    if where == "cuda":
        device, backends, run = r.gpu_device(), r.cuda_backends(), "cuda-shape-grid"
        if any(b in backends for b in ("ort", "trt", "ort-trt")):
            r.need_onnx()
    else:
        r.need_onnx()
        ok, why = r.available("ort", "cpu")
        if not ok:
            raise NotRun(f"ORT CPU: {why}")
        device, backends, run = "cpu", ["torch", "ort"], "ort-cpu-shape-grid"
    if limit < 0:
        return PLANNED, f"--backends {','.join(backends)} on {device}"
    report = r.report("srcnn", run)
    status, detail = r.deployval(step.name, ["compare", "srcnn", "--device", device, "--backends", ",".join(backends),
                                             "--shape-grid", SHAPE_GRID, "--batch-invariance", "--time-budget",
                                             r.latency_s, "--json", str(report), "-q"], limit)
    rows = _judged(_rows(report))
    bad = []
    for row in rows:
        details = row.get("details") or {}
        if (details.get("batch_invariance") or {}).get("copies") != 4:
            bad.append(f"{row['backend']} {row['precision']}: no batch_invariance of 4 copies")
        if (details.get("dataset") or {}).get("samples") != 3:
            bad.append(f"{row['backend']} {row['precision']}: not judged at the 3 grid shapes")
    if status == PASS and (bad or not rows):
        return FAIL, "; ".join(bad) or "no row was judged"
    return status, (detail + "; " if detail else "") + f"--backends {','.join(backends)}: {_counts(rows)}"


def step_ort_cpu(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    model, precisions = step.args
    r.need_deployval()
    r.need_onnx()
    ok, why = r.available("ort", "cpu")
    if not ok:
        raise NotRun(f"ORT CPU: {why}")
    if limit < 0:
        return PLANNED, "--backends torch,ort on cpu"
    report = r.report(model, "ort-cpu")
    status, detail = r.deployval(step.name, ["compare", model, "--device", "cpu", "--backends", "torch,ort",
                                             "--precisions", precisions, "--time-budget", r.latency_s, "--json",
                                             str(report), "-q"], limit)
    rows = _rows(report)
    if status == PASS and not any(row.get("backend") == "ort" and row.get("status") == "pass" for row in rows):
        return FAIL, "no ort row passed"
    return status, (detail + "; " if detail else "") + _counts(rows)


def step_debug(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    r.need_deployval()
    r.need_onnx()
    why_not = []
    choice = None
    if r.have_gpu:
        for backend, precision in (("trt", "fp16"), ("ort", "fp32")):
            ok, why = r.available(backend, "cuda")
            if ok:
                choice = ("cuda", backend, precision)
                break
            why_not.append(f"{backend} on cuda: {why}")
    else:
        why_not.append(r.no_gpu_reason())
    if choice is None:
        ok, why = r.available("ort", "cpu")
        if not ok:
            raise NotRun(f"no ONNX backend present: ORT CPU: {why}")
        choice = ("cpu", "ort", "fp32")
    device, backend, precision = choice
    r.ran_on = device
    note = f"{backend} {precision} on {device}" + (f" (not: {'; '.join(why_not)})" if why_not else "")
    if limit < 0:
        return PLANNED, note
    export_dir = r.work / "debug-export"
    t0 = time.monotonic()
    status, detail = r.deployval(step.name, ["export", "convs", "--out", str(export_dir), "--kinds", "onnx", "-q"],
                                 limit)
    if status != PASS:
        return status, f"export: {detail}"
    status, detail = r.deployval(step.name, ["debug", str(export_dir / "model.onnx"), "--device", device, "--backend",
                                             backend, "--precision", precision, "--json",
                                             str(r.work / "debug-convs-onnx.json"), "-q"],
                                 limit - (time.monotonic() - t0))
    return status, (detail + "; " if detail else "") + note


def step_pytest(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    if not r.has_module("pytest"):
        raise NotRun("pytest is not installed (carry its wheels: scripts/gpu-check.sh prepare)")
    r.need_deployval()
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if re.search(r"mark\.(gpu|tensorrt)\b", p.read_text(errors="replace")))
    if not files:
        raise NotRun("no test file has a gpu or tensorrt marker")
    r.ran_on = r.gpu_device()
    if limit < 0:
        return PLANNED, " ".join(files)
    xml = r.work / "pytest-gpu.xml"
    rc, limit = r.command(step.name, [r.python, "-m", "pytest", "-q", "-m", "gpu or tensorrt", "-p",
                                      "no:cacheprovider", "--junitxml", str(xml), *files], limit)
    counts = junit_counts(xml)
    text = (f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
            if counts else "no junit XML")
    reasons = "; ".join(counts.get("reasons", [])[:3]) if counts else ""
    if rc is None:
        return FAIL, f"timed out after {limit:.0f} s ({text})"
    if rc not in (0, 5) or (counts and counts["failed"]):
        return FAIL, r.verdict(step.name, rc, limit, what="pytest")[1] + f" ({text})"
    if rc == 5 or not counts or counts["tests"] == 0:
        return FAIL, "no test collected"
    if counts["passed"] == 0:
        raise NotRun(f"every selected test skipped ({text}): {reasons}")
    return PASS, text + (f"; skips: {reasons}" if reasons else "")


def junit_counts(xml: Path) -> dict[str, Any]:
    if not xml.exists():
        return {}
    import xml.etree.ElementTree as ET

    root = ET.parse(xml).getroot()
    cases = list(root.iter("testcase"))
    failed = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
    skipped = [c.find("skipped") for c in cases if c.find("skipped") is not None]
    reasons: list[str] = []
    for s in skipped:
        message = re.sub(r"^Skipped: ", "", s.get("message") or "")[:140]
        if message and message not in reasons:
            reasons.append(message)
    return {"tests": len(cases), "failed": failed, "skipped": len(skipped),
            "passed": len(cases) - failed - len(skipped), "reasons": reasons}


def step_cuda_rows(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    (backend,) = step.args
    ok, why = r.available(backend, "cuda")
    if not ok:
        raise NotRun(f"{OPTIONAL_CUDA[backend]}: {why}")
    if limit < 0:
        return PLANNED, "from the cuda-compare reports"
    rows = [row for m, _ in r.models for row in _rows(r.report(m, "cuda-compare")) if row.get("backend") == backend]
    if not rows:
        raise NotRun("the cuda-compare steps wrote no report")
    judged = _judged(rows)
    failing = [f"{row['precision']}: {first_line(str(row.get('reason') or row.get('status')))[:80]}" for row in judged
               if row.get("status") != "pass"]
    if failing:
        return FAIL, "; ".join(failing)
    return (PASS, _counts(rows)) if judged else (FAIL, "no row was judged")


def step_ray(r: Runner, step: Step, limit: float) -> tuple[str, str]:
    if not r.has_module("ray"):
        raise NotRun("ray is not installed (pip install 'deployval[ray]')")
    r.need_deployval()
    backends = [b for b in ("torch", "trt") if b in r.cuda_backends()]
    if limit < 0:
        return PLANNED, f"--backends {','.join(backends)}"
    samples = r.work / "srcnn-samples"
    samples.mkdir(exist_ok=True)
    t0 = time.monotonic()
    rc, _ = r.command(step.name, [r.python, "-c", "import numpy as np, sys\nfor i in range(4): np.save(f'{sys.argv[1]}"
                                  "/sample{i}.npy', np.random.default_rng(i).standard_normal((1, 3, 64, 64), "
                                  "dtype=np.float32))", str(samples)], 30)
    if rc != 0:
        return r.verdict(step.name, rc, 30, what="making the samples")
    common = ["compare", "srcnn", "--dataset", str(samples), "--device", "cuda", "--backends", ",".join(backends), "-q"]
    local, ray = r.report("srcnn", "ray-without"), r.report("srcnn", "ray-with")
    status, detail = r.deployval(step.name, [*common, "--json", str(local)], (limit - (time.monotonic() - t0)) / 2)
    if status != PASS:
        return status, f"without --ray: {detail}"
    status, detail = r.deployval(step.name, [*common, "--ray", "--ray-workers", "1", "--json", str(ray)],
                                 limit - (time.monotonic() - t0))
    if status != PASS:
        return status, f"with --ray: {detail}"
    rc, left = r.command(step.name, [r.python, "-c", RAY_EQUAL_SNIPPET, str(local), str(ray)], 30)
    if rc != 0:
        return r.verdict(step.name, rc, left, what="the comparison")
    return PASS, f"--backends {','.join(backends)}: the --ray rows equal the local ones"

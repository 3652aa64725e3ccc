"""scripts/gpu-check.sh (the runner is scripts/gpu_check.py) without a GPU: what cannot run is NOT RUN with
its reason and never PASS, all the evidence is one archive plus results.md and summary.txt in OUT, and
the exit code is 0 only when every step that could run passed. CUDA_VISIBLE_DEVICES="" keeps a GPU
machine from changing the answers."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
GPU_ONLY = ("cuda-memory-fields", "cuda-rows-ort", "cuda-rows-trt", "cuda-rows-ort-trt", "ray")


def _load(name: str):
    """A module of scripts/ (gpu_check.py imports its gpu_check_*.py siblings, as it does when run)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "scripts"))


gc = _load("gpu_check")  # the runner, exit code, reports
gs = _load("gpu_check_steps")  # the step_* functions
gw = _load("gpu_check_wheels")  # the carried wheels


def run_check(tmp_path: Path, *args: str, timeout: float = 120, **env: str):
    out, work = tmp_path / "out", tmp_path / "work"
    full_env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "WORK": str(work), "KEEP_WORK": "1",
                "WHEEL_DIR": str(tmp_path / "no-wheels"), "SITE": str(tmp_path / "site"), "CUDA_VISIBLE_DEVICES": "",
                "LATENCY_S": "0.2", **env}
    start = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    steps = {s["name"]: s for s in json.loads((work / "steps.json").read_text())} if (work / "steps.json").exists() \
        else {}
    return proc, out, steps, time.monotonic() - start


def assert_out_layout(out: Path) -> list[str]:
    """Three files at the top of OUT (the device tool returns at most 8, two folders deep); the archive
    holds the rest. Returns the archive's member names."""
    entries = sorted(p.name for p in out.iterdir())
    assert entries == ["gpu-check.tar.gz", "results.md", "summary.txt"], entries
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        names = tar.getnames()
    for name in ("results.md", "summary.txt", "steps.json", "environment.json", "backends.json", "gpu-check.log"):
        assert f"gpu-check/{name}" in names, names
    assert not any(n.startswith("gpu-check/cache") for n in names)
    return names


def assert_gpu_only_not_run(steps: dict) -> None:
    for name in GPU_ONLY:
        assert steps[name]["status"] == "NOT RUN", steps[name]
        assert "no CUDA GPU" in steps[name]["detail"], steps[name]
    assert not any(s["status"] == "PASS" and s["device"] == "cuda" for s in steps.values()), steps


def test_allow_cpu_smoke_runs_the_gpu_steps_on_the_cpu_and_never_passes_the_gpu_only_ones(tmp_path):
    proc, out, steps, _ = run_check(tmp_path, "--allow-cpu", MODELS="convs:fp32",
                                    STEPS="cuda-compare cuda-memory-fields cuda-rows")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert steps["environment"]["status"] == "PASS" and steps["backends"]["status"] == "PASS"
    assert steps["wheels"]["status"] == "NOT RUN" and "no wheels in" in steps["wheels"]["detail"]
    compare = steps["cuda-compare-convs"]
    assert compare["status"] == "PASS" and compare["device"] == "cpu (smoke)", compare
    assert "--backends torch,torchscript" in compare["detail"]
    assert_gpu_only_not_run(steps)
    assert steps["ort-cpu-convs"]["status"] == "NOT RUN" and "not selected" in steps["ort-cpu-convs"]["detail"]
    names = assert_out_layout(out)
    assert "gpu-check/reports/convs.cuda-compare.json" in names
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("gpu-check: PARTIAL") and "nothing here is a GPU result" in summary, summary
    results = (out / "results.md").read_text()
    assert "| cuda-memory-fields | NOT RUN |" in results and "| convs | cuda-compare | cpu | torchscript |" in results


def test_without_a_gpu_the_gpu_steps_are_not_run_and_the_exit_code_is_3(tmp_path):
    proc, out, steps, _ = run_check(tmp_path, STEPS="cuda")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert_gpu_only_not_run(steps)
    for name in ("cuda-compare-convs", "cuda-repeat", "cuda-shape-grid"):
        assert steps[name]["status"] == "NOT RUN" and "--allow-cpu runs it on the CPU" in steps[name]["detail"]
    assert_out_layout(out)
    assert (out / "summary.txt").read_text().startswith("gpu-check: NO GPU")


def test_a_failing_step_fails_the_run(tmp_path):
    proc, out, steps, _ = run_check(tmp_path, "--allow-cpu", MODELS="no_such_model:fp32", STEPS="cuda-compare")
    assert proc.returncode == 1, proc.stderr[-3000:]
    failed = steps["cuda-compare-no_such_model"]
    assert failed["status"] == "FAIL" and "exit 2" in failed["detail"], failed
    assert (out / "summary.txt").read_text().startswith("gpu-check: FAIL")
    assert "logs/cuda-compare-no_such_model.log" in " ".join(assert_out_layout(out))


def test_usage():
    assert subprocess.run(["bash", str(SCRIPT), "--nope"], capture_output=True).returncode == 2
    help_text = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "prepare" in help_text.stdout and "NOT RUN" in help_text.stdout


def _result(name: str, status: str, budget: bool = False):
    return gc.Result(name, status, "cuda", 1.0, "", budget=budget)


def test_exit_code_semantics():
    passed, not_run = _result("a", gc.PASS), _result("trt", gc.NOT_RUN)
    assert gc.exit_code([passed, not_run], have_gpu=True, allow_cpu=False) == 0
    assert gc.exit_code([passed, _result("b", gc.FAIL)], have_gpu=True, allow_cpu=False) == 1
    out_of_time = _result("late", gc.NOT_RUN, budget=True)
    assert gc.exit_code([passed, out_of_time], have_gpu=True, allow_cpu=False) == 1
    assert gc.exit_code([passed, not_run], have_gpu=False, allow_cpu=False) == 3
    assert gc.exit_code([passed, not_run], have_gpu=False, allow_cpu=True) == 0
    assert gc.exit_code([_result("b", gc.FAIL)], have_gpu=False, allow_cpu=False) == 1


def _wheel(directory: Path, name: str, version: str, requires: list[str], tag: str = "py3-none-any") -> Path:
    path = directory / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "VALUE = 1\n")
        zf.writestr(f"{name}-{version}.data/purelib/{name}_extra.py", "EXTRA = 2\n")
        zf.writestr(f"{name}-{version}.data/scripts/tool", "#!/bin/sh\n")
        metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                    *(f"Requires-Dist: {r}" for r in requires)]
        info = f"{name}-{version}.dist-info"
        zf.writestr(f"{info}/METADATA", "\n".join(metadata) + "\n")
        zf.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n")
        zf.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in [*zf.namelist(), f"{info}/RECORD"]))
    return path


def test_wheel_requirements_fit_and_install_without_pip(tmp_path):
    requires = ["beta>=2", "gamma; extra == 'x'", "win; sys_platform == 'win32'"]
    a = gw.parse_wheel(_wheel(tmp_path, "alpha", "1.0", requires))
    b = gw.parse_wheel(_wheel(tmp_path, "beta", "1.5", []))
    env = gw.target_environment("3.12")
    problems = gw.requirement_problems([a, b], lambda name: None, env)
    assert [(p.name, p.have) for p in problems] == [("beta", "1.5")]  # too old; extras and win32 left out
    assert gw.requirement_problems([a], lambda name: "2.1" if name == "beta" else None, env) == []
    assert gw.wheel_fits(a)
    assert not gw.wheel_fits(gw.parse_wheel(_wheel(tmp_path, "native", "1.0", [], "cp27-cp27mu-manylinux1_x86_64")))
    site = tmp_path / "site"
    gw.unzip_install(a.path, site)
    assert (site / "alpha" / "__init__.py").exists() and (site / "alpha_extra.py").exists()
    assert (site / "alpha-1.0.dist-info" / "METADATA").exists() and not (site / "tool").exists()


def test_the_carried_set_is_pinned_and_leaves_out_what_the_machine_has():
    pins = gw.read_pins()
    for name in (*gw.CARRIED, *gw.FALLBACK):
        assert gw.norm(name) in pins, name
    assert not {gw.norm(n) for n in gw.CARRIED} & gw.MACHINE_HAS
    assert "click" not in gw.CARRIED  # typer carries its own copy


@pytest.mark.slow
def test_full_allow_cpu_run_within_six_minutes(tmp_path):
    proc, out, steps, seconds = run_check(tmp_path, "--allow-cpu", timeout=420, LATENCY_S="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert seconds < 360, seconds
    assert_gpu_only_not_run(steps)
    for name in ("cuda-compare-convs", "cuda-compare-srcnn", "cuda-compare-tagger", "cuda-repeat", "cuda-shape-grid"):
        assert steps[name]["status"] == "PASS" and steps[name]["device"] == "cpu (smoke)", steps[name]
    for name in ("ort-cpu-convs", "ort-cpu-srcnn", "ort-cpu-tagger", "ort-cpu-shape-grid", "debug-onnx"):
        assert steps[name]["status"] == "PASS", steps[name]
    assert steps["pytest-gpu"]["status"] == "NOT RUN" and "skipped" in steps["pytest-gpu"]["detail"]
    names = assert_out_layout(out)
    assert "gpu-check/pytest-gpu.xml" in names and "gpu-check/reports/srcnn.ort-cpu-shape-grid.json" in names


def test_a_step_with_no_time_left_is_not_run_and_fails_the_run(tmp_path):
    proc, out, steps, _ = run_check(tmp_path, "--allow-cpu", MODELS="convs:fp32", STEPS="cuda-compare", BUDGET="10")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert steps["environment"]["status"] == "PASS" and steps["backends"]["status"] == "PASS"  # setup always runs
    late = steps["cuda-compare-convs"]
    assert late["status"] == "NOT RUN" and late["budget"] and "out of time" in late["detail"], late
    assert (out / "summary.txt").read_text().startswith("gpu-check: INCOMPLETE")


def fake_gpu_runner(tmp_path: Path, trt: bool = False):
    """A runner that believes it is on a GPU machine like the lent one: torch CUDA, ORT CPU only, TensorRT
    only with trt=True. Nothing runs on a GPU: the planning and the report checks are what is tested."""
    (tmp_path / "out").mkdir()
    runner = gc.Runner(python=sys.executable, allow_cpu=False, plan=False, out=tmp_path / "out",
                       work=tmp_path / "work", budget=300, t0=time.monotonic(), models="convs:fp32,fp16", selected="",
                       wheel_dir=tmp_path / "no-wheels", site=tmp_path / "site", latency_s="1")
    runner.environment = {"cuda_available": True, "deployval": "ok", "python": "3.12.3",
                          "modules": {m: {"version": "1"} for m in ("torch", "onnxruntime", "onnxscript", "onnxsim",
                                                                    "pytest")},
                          "gpus": [{"name": "Fake GPU", "capability": "9.0", "memory_gib": 80}]}
    no_trt = "the tensorrt Python package is not installed"
    runner.availability = {
        "cuda": {"torch": [True, ""], "torchscript": [True, ""],
                 "ort": [False, "onnxruntime 1.32.0 has no CUDAExecutionProvider"],
                 "trt": [trt, "" if trt else no_trt], "ort-trt": [False, "no TensorrtExecutionProvider"]},
        "cpu": {"torch": [True, ""], "torchscript": [True, ""], "ort": [True, ""], "trt": [False, "cuda only"],
                "ort-trt": [False, "cuda only"]},
    }
    return runner


def test_the_plan_on_a_gpu_machine_without_tensorrt(tmp_path, monkeypatch):
    runner = fake_gpu_runner(tmp_path)
    runner.plan = True
    monkeypatch.setattr(runner, "steps", lambda: [s for s in gc.Runner.steps(runner) if s.device != "host"])
    assert runner.execute() == 0
    steps = {r.name: r for r in runner.results}
    for name in ("cuda-compare-convs", "cuda-repeat", "cuda-shape-grid"):
        assert steps[name].status == "PLANNED" and "--backends torch,torchscript on cuda" in steps[name].detail
        assert steps[name].device == "cuda"
    assert steps["ort-cpu-convs"].status == "PLANNED" and steps["ort-cpu-convs"].device == "cpu"
    assert steps["cuda-rows-trt"].status == "NOT RUN" and "tensorrt Python package" in steps["cuda-rows-trt"].detail
    assert steps["cuda-rows-ort"].status == "NOT RUN" and "CUDAExecutionProvider" in steps["cuda-rows-ort"].detail
    debug = steps["debug-onnx"]  # only providers present: ORT on the CPU, with why not TensorRT or ORT CUDA
    assert debug.status == "PLANNED" and debug.detail.startswith("ort fp32 on cpu") and "trt on cuda" in debug.detail
    assert steps["ray"].status == "NOT RUN" and "ray is not installed" in steps["ray"].detail
    assert steps["pytest-gpu"].device == "cuda"


def test_cuda_memory_fields_and_backend_rows_are_checked_in_the_reports(tmp_path):
    runner = fake_gpu_runner(tmp_path, trt=True)
    rows = [
        {"backend": "torch", "precision": "fp32", "status": "reference", "device": "cuda",
         "details": {"memory": {"cuda_peak_allocated_bytes": 3 << 20}}},
        {"backend": "torchscript", "precision": "fp32", "status": "pass", "device": "cuda", "details": {"memory": {}}},
        {"backend": "trt", "precision": "fp16", "status": "fail", "reason": "max abs 0.5 over 0.001", "device": "cuda",
         "details": {"engine_bytes": 5, "engine_device_memory_bytes": 7}},
    ]
    report = runner.report("convs", "cuda-compare")
    report.write_text(json.dumps({"results": rows}))
    steps = {s.name: s for s in runner.steps()}
    status, detail = gs.step_memory_fields(runner, steps["cuda-memory-fields"], 10)
    assert status == "FAIL" and "torchscript fp32: cuda_peak_allocated_bytes=None" in detail, detail
    rows[1]["details"]["memory"]["cuda_peak_allocated_bytes"] = 1 << 20
    report.write_text(json.dumps({"results": rows}))
    assert gs.step_memory_fields(runner, steps["cuda-memory-fields"], 10) == (
        "PASS", "4 fields present and > 0 in 1 report(s)")
    status, detail = gs.step_cuda_rows(runner, steps["cuda-rows-trt"], 5)
    assert status == "FAIL" and "fp16: max abs 0.5 over 0.001" in detail
    table = "\n".join(gc.row_table([report]))
    assert "| convs | cuda-compare | cuda | torch | fp32 | REFERENCE |" in table and "| 3.0 |" in table


def test_the_wheels_step_installs_what_is_missing_and_refuses_wheels_for_another_python(tmp_path):
    runner = fake_gpu_runner(tmp_path)
    runner.wheel_dir = tmp_path / "wheels"
    runner.wheel_dir.mkdir()
    _wheel(runner.wheel_dir, "gpu_check_probe_pkg", "1.0", [])
    _wheel(runner.wheel_dir, "pytest", pytest.__version__, [])  # there already: left alone
    step = next(s for s in runner.steps() if s.name == "wheels")
    status, detail = gs.step_wheels(runner, step, 60)
    assert status == "PASS" and detail.startswith("installed 1 into") and "1 already there" in detail, detail
    assert (runner.site / "gpu_check_probe_pkg" / "__init__.py").exists()
    _wheel(runner.wheel_dir, "gpu_check_native_pkg", "1.0", [], "cp27-cp27mu-manylinux1_x86_64")
    status, detail = gs.step_wheels(runner, step, 60)
    assert status == "FAIL" and "do not fit this python" in detail, detail

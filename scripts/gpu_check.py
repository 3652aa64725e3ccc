#!/usr/bin/env python3
"""The runner behind scripts/gpu-check.sh (read its header first): the GPU validation of
docs/gpu-validation.md as one command for a lent GPU machine that has only torch, onnx, onnxruntime
and numpy, no network, and returns at most 8 files.

    python3 scripts/gpu_check.py prepare [--python-version 3.12] [--dest .whl]   here, with network
    python3 scripts/gpu_check.py run [--allow-cpu] [--plan]                      there, no network

Standard library only (the machine's own python3 runs it before anything is installed); `packaging`
is used where importable. Every step ends PASS, FAIL or NOT RUN with its reason: a step whose tool or
hardware is missing is NOT RUN, never PASS. Exit codes: 0 every step that could run passed; 1 a step
failed, timed out or found no time left; 2 bad usage (prepare: the wheels would not fit); 3 no CUDA
GPU without --allow-cpu (the CPU steps ran).

Here: the runner (Runner), the exit code, results.md/summary.txt, the archive and the command line. The
steps are in gpu_check_steps.py, the wheels (prepare, installing them) in gpu_check_wheels.py, what all
share in gpu_check_core.py; they sit beside this file, so `python3 scripts/gpu_check.py` finds them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gpu_check_core import (
    CUDA_BACKENDS,
    FAIL,
    NOT_RUN,
    OPTIONAL_CUDA,
    PASS,
    PLANNED,
    ROOT,
    SHAPE_GRID,
    NotRun,
    Result,
    Step,
    first_line,
)
from gpu_check_steps import (
    step_backends,
    step_cuda_compare,
    step_cuda_repeat,
    step_cuda_rows,
    step_debug,
    step_environment,
    step_memory_fields,
    step_ort_cpu,
    step_pytest,
    step_ray,
    step_shape_grid,
    step_wheels,
)
from gpu_check_wheels import LIMIT_MIB, prepare

DEFAULT_MODELS = "convs:fp32,fp16,int8 srcnn:fp32,fp16,int8 tagger:fp32,fp16"
OUT_FILES = ("gpu-check.tar.gz", "results.md", "summary.txt")
MAX_ARCHIVED_FILE = 4 << 20


# --- running the steps ----------------------------------------------------------------------------------


class Runner:
    def __init__(self, *, python: str, allow_cpu: bool, plan: bool, out: Path, work: Path, budget: float,
                 t0: float, models: str, selected: str, wheel_dir: Path, site: Path, latency_s: str) -> None:
        self.python, self.allow_cpu, self.plan = python, allow_cpu, plan
        self.out, self.work, self.budget, self.t0 = out, work, budget, t0
        self.deadline = t0 + budget - 8  # what packing the evidence needs
        self.models = [(item.split(":", 1)[0], item.split(":", 1)[1] if ":" in item else "fp32,fp16")
                       for item in models.split()]
        self.selected = [s.strip() for s in selected.replace(",", " ").split() if s.strip()]
        self.wheel_dir, self.site, self.latency_s = wheel_dir, site, latency_s
        self.results: list[Result] = []
        self.environment: dict[str, Any] = {}
        self.availability: dict[str, Any] = {}
        self.child: subprocess.Popen[bytes] | None = None
        self.ran_on: str | None = None  # where an "any" step ran (set by the step)
        self.current = ""  # the step running now
        self.floor = 1.0  # the least time a command gets, whatever the budget says (the setup steps: 30 s)
        for sub in ("logs", "reports"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        pythonpath = [str(ROOT), str(site), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(pythonpath)),
                    "DEPLOYVAL_CACHE_DIR": str(work / "cache"), "PYTHONUNBUFFERED": "1"}

    # -- facts about the machine, from the environment and backends steps --
    @property
    def have_gpu(self) -> bool:
        return bool(self.environment.get("cuda_available"))

    def has_module(self, module: str) -> bool:
        return module in self.environment.get("modules", {})

    def available(self, backend: str, device: str) -> tuple[bool, str]:
        ok, reason = self.availability.get(device, {}).get(backend, [False, "availability unknown"])
        return bool(ok), reason

    def cuda_backends(self) -> list[str]:
        if not self.have_gpu:  # the smoke run on the CPU: what the lent machine runs on CUDA
            return [b for b in ("torch", "torchscript") if self.available(b, "cpu")[0]]
        return [b for b in CUDA_BACKENDS if self.available(b, "cuda")[0]]

    def gpu_device(self) -> str:
        return "cuda" if self.have_gpu else "cpu"

    def no_gpu_reason(self) -> str:
        why = self.available("torch", "cuda")[1] if self.availability else ""
        return f"no CUDA GPU ({why or 'torch.cuda.is_available() is false'})"

    def need_deployval(self) -> None:
        state = self.environment.get("deployval")
        if state != "ok":
            raise NotRun(f"deployval cannot start: {state or 'the environment step did not run'}")

    def need_onnx(self) -> None:
        missing = [m for m in ("onnxruntime", "onnxscript", "onnxsim") if not self.has_module(m)]
        if missing:
            raise NotRun(", ".join(missing) + " not installed (carry the wheels: scripts/gpu-check.sh prepare)")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    # -- commands --
    def command(self, step: str, argv: list[str], limit: float) -> tuple[int | None, float]:
        """Run argv (output appended to logs/STEP.log) under a timeout; rc None when it timed out."""
        log = self.work / "logs" / f"{step}.log"
        limit = max(self.floor, min(limit, self.left()))
        start = time.monotonic()
        with log.open("a") as f:
            f.write(f"$ {shlex.join(argv)}\n")
            f.flush()
            self.child = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc: int | None = self.child.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                self.kill_child()
                rc = None
                f.write(f"\n[gpu-check] timed out after {limit:.0f} s: killed\n")
            finally:
                self.child = None
            f.write(f"[gpu-check] exit {rc} after {time.monotonic() - start:.1f} s\n")
        return rc, limit

    def kill_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, sig)
            try:
                child.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def deployval(self, step: str, args: list[str], limit: float) -> tuple[str, str]:
        rc, limit = self.command(step, [self.python, "-m", "deployval", *args], limit)
        return self.verdict(step, rc, limit)

    def verdict(self, step: str, rc: int | None, limit: float, what: str = "deployval") -> tuple[str, str]:
        if rc == 0:
            return PASS, ""
        if rc is None:
            return FAIL, f"timed out after {limit:.0f} s"
        meaning = {1: "an accuracy check failed", 2: "bad usage or input", 3: "a backend could not run"}
        text = (self.work / "logs" / f"{step}.log").read_text(errors="replace")
        errors = [ln for ln in text.splitlines() if ln.startswith(("deployval: error", "FAIL", "E "))]
        tail = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("[gpu-check]", "$ "))]
        last = (errors or tail or [""])[-1].strip()[:200]
        return FAIL, f"{what} exit {rc}" + (f" ({meaning[rc]})" if what == "deployval" and rc in meaning else "") + (
            f": {last}" if last else "")

    def report(self, model: str, run: str) -> Path:
        return self.work / "reports" / f"{model}.{run}.json"

    # -- the plan --
    def steps(self) -> list[Step]:
        steps = [
            Step("wheels", "install the carried wheels the machine lacks into SITE", "host", 120, step_wheels),
            Step("environment", "nvidia-smi; python, torch/CUDA, onnx, onnxruntime providers, what is missing",
                 "host", 90, step_environment),
            Step("backends", "`deployval backends`; which backends run on cuda and cpu", "host", 90, step_backends),
        ]
        for model, precisions in self.models:
            steps.append(Step(f"cuda-compare-{model}", f"compare {model} -p {precisions} on the CUDA backends "
                              "(torch, torchscript, and ort/trt/ort-trt where present)", "cuda", 120,
                              step_cuda_compare, smoke=True, args=(model, precisions)))
        steps += [
            Step("cuda-memory-fields", "details.memory.cuda_peak_allocated_bytes on every torch and torchscript "
                 "CUDA row (engine_bytes on trt rows)", "cuda", 10, step_memory_fields, min_s=1),
            Step("cuda-repeat", "compare convs --repeat 2 on CUDA: details.repeat.runs 2 on every row "
                 "(engine_builds 2 on trt/ort-trt)", "cuda", 120, step_cuda_repeat, smoke=True),
            Step("cuda-shape-grid", f"compare srcnn --shape-grid {SHAPE_GRID} --batch-invariance on CUDA", "cuda",
                 120, step_shape_grid, smoke=True, args=("cuda",)),
        ]
        for model, precisions in self.models:
            steps.append(Step(f"ort-cpu-{model}", f"compare {model} -p {precisions} --backends torch,ort on the CPU "
                              "(the ORT CPU rows beside the CUDA ones)", "cpu", 120, step_ort_cpu,
                              args=(model, precisions)))
        steps += [
            Step("ort-cpu-shape-grid", f"compare srcnn --shape-grid {SHAPE_GRID} --batch-invariance, torch,ort "
                 "on the CPU", "cpu", 120, step_shape_grid, args=("cpu",)),
            Step("debug-onnx", "export convs --kinds onnx; debug model.onnx on the best present of trt fp16 (cuda), "
                 "ort (cuda), ort (cpu)", "any", 120, step_debug),
            Step("pytest-gpu", 'pytest -m "gpu or tensorrt" on the test files with those markers', "any", 180,
                 step_pytest, min_s=30),
        ]
        steps += [Step(f"cuda-rows-{b}", f"the {OPTIONAL_CUDA[b]} rows of the cuda-compare reports", "cuda", 5,
                       step_cuda_rows, min_s=0, args=(b,)) for b in OPTIONAL_CUDA]
        steps.append(Step("ray", "srcnn on 4 samples with --ray --ray-workers 1 and without: the same rows",
                          "cuda", 240, step_ray, min_s=60))
        return steps

    def is_selected(self, step: Step) -> bool:
        if step.device == "host" or not self.selected:
            return True
        return any(step.name == s or step.name.startswith(s + "-") for s in self.selected)

    def device_label(self, step: Step) -> str:
        if step.device == "cuda":
            return "cuda" if self.have_gpu else ("cpu (smoke)" if step.smoke and self.allow_cpu else "cuda")
        return step.device

    def execute(self) -> int:
        self.log(f"{self.python}; budget {self.budget:.0f} s; work {self.work}; out {self.out}"
                 + ("; --allow-cpu" if self.allow_cpu else "") + ("; --plan" if self.plan else ""))
        for step in self.steps():
            start = time.monotonic()
            budget_short = False
            self.ran_on = None
            self.current = step.name
            self.floor = 30.0 if step.device == "host" else 1.0
            try:
                if step.device == "cuda" and not self.have_gpu:
                    if not self.allow_cpu:
                        raise NotRun(self.no_gpu_reason() + ("; --allow-cpu runs it on the CPU" if step.smoke else ""))
                    if not step.smoke:
                        raise NotRun(f"{self.no_gpu_reason()}; GPU-only, not a CPU smoke test")
                if not self.is_selected(step):
                    raise NotRun(f"not selected (STEPS={' '.join(self.selected)})")
                if self.plan and step.device != "host":
                    status, detail = step.run(self, step, -1.0)  # -1: only the checks that raise NotRun
                else:
                    if self.left() < step.min_s and step.device != "host":
                        budget_short = True
                        raise NotRun(f"out of time: {max(0, self.left()):.0f} s of the {self.budget:.0f} s budget "
                                     "left (counts as a failure)")
                    status, detail = step.run(self, step, max(self.floor, min(step.limit, self.left())))
            except NotRun as exc:
                status, detail = NOT_RUN, str(exc)
            except Exception as exc:  # a bug here, or a report it cannot read: that step fails, the run goes on
                self.kill_child()
                status, detail = FAIL, f"gpu-check error: {type(exc).__name__}: {first_line(str(exc))[:200]}"
            result = Result(step.name, status, self.ran_on or self.device_label(step),
                            round(time.monotonic() - start, 1), detail, budget=budget_short, what=step.what)
            self.results.append(result)
            self.log(f"{step.name}: {status}" + (f" in {result.seconds:.0f} s" if status in (PASS, FAIL) else "")
                     + (f" ({result.device})" if status in (PASS, FAIL) else "") + (f": {detail}" if detail else ""))
            if status == FAIL:
                log = self.work / "logs" / f"{step.name}.log"
                if log.exists():
                    for line in log.read_text(errors="replace").splitlines()[-6:]:
                        print(f"    {line[:200]}", file=sys.stderr)
            self.write_reports()
        return self.finish()

    # -- reporting --
    def log(self, message: str) -> None:
        line = f"[gpu-check {time.monotonic() - self.t0:5.0f}s] {message}"
        print(line, file=sys.stderr, flush=True)
        with (self.work / "gpu-check.log").open("a") as f:
            f.write(line + "\n")

    def exit_code(self) -> int:
        return exit_code(self.results, self.have_gpu, self.allow_cpu, self.plan)

    def write_reports(self) -> None:
        (self.work / "steps.json").write_text(json.dumps([r.__dict__ for r in self.results], indent=1))
        results_md = render_results(self)
        summary = render_summary(self)
        for target in (self.work, self.out):
            (target / "results.md").write_text(results_md)
            (target / "summary.txt").write_text(summary)

    def finish(self) -> int:
        self.write_reports()
        archive = self.out / "gpu-check.tar.gz"
        omitted = pack(self.work, archive)
        if omitted:
            self.log("left out of the archive (over 4 MiB): " + ", ".join(omitted))
        print((self.work / "results.md").read_text())
        print((self.work / "summary.txt").read_text())
        self.log(f"done in {time.monotonic() - self.t0:.0f} s: {archive} ({archive.stat().st_size / 2**10:.0f} KiB), "
                 f"{self.out / 'results.md'}, {self.out / 'summary.txt'}; exit {self.exit_code()}")
        return self.exit_code()


def exit_code(results: list[Result], have_gpu: bool, allow_cpu: bool, plan: bool = False) -> int:
    """1 a step failed or found no time left; else 3 without a GPU (and without --allow-cpu); else 0."""
    if any(r.status == FAIL or r.budget for r in results):
        return 1
    if not have_gpu and not allow_cpu:
        return 3
    return 0


def verdict_line(runner: Runner) -> str:
    results, code = runner.results, runner.exit_code()
    failed = [r.name for r in results if r.status == FAIL]
    short = [r.name for r in results if r.budget]
    not_run = [r for r in results if r.status == NOT_RUN and not r.budget]
    ran = sum(r.status == PASS for r in results)
    if runner.plan:
        return f"PLAN (--plan: nothing but the setup steps ran), exit {code}"
    if failed:
        return f"FAIL: {len(failed)} step(s) failed: {', '.join(failed)} (exit {code})"
    if short:
        return f"INCOMPLETE: no time left for {', '.join(short)} (exit {code})"
    if code == 3:
        return f"NO GPU: {runner.no_gpu_reason()}; the GPU steps are NOT RUN (exit 3)"
    where = " on the CPU (--allow-cpu smoke run: nothing here is a GPU result)" if not runner.have_gpu else ""
    if not_run:
        return (f"PARTIAL: every step that could run passed{where} ({ran} PASS), {len(not_run)} NOT RUN "
                f"(listed below, never counted as passed) (exit {code})")
    return f"PASS: all {ran} steps passed{where} (exit {code})"


def render_summary(runner: Runner) -> str:
    env = runner.environment
    gpus = ", ".join(f"{g['name']} (cc {g['capability']}, {g['memory_gib']} GiB)" for g in env.get("gpus") or [])
    mods = env.get("modules", {})
    version = lambda m: mods.get(m, {}).get("version", "missing")  # noqa: E731
    lines = [
        f"gpu-check: {verdict_line(runner)}",
        f"device: {gpus or 'no CUDA GPU'}; python {env.get('python', '?')}, torch {version('torch')} "
        f"(CUDA {env.get('torch_cuda')}), onnxruntime {version('onnxruntime')} "
        f"{env.get('onnxruntime_providers', [])}, tensorrt {version('tensorrt')}",
        f"steps: {sum(r.status == PASS for r in runner.results)} PASS, {sum(r.status == FAIL for r in runner.results)}"
        f" FAIL, {sum(r.status == NOT_RUN for r in runner.results)} NOT RUN; "
        f"{time.monotonic() - runner.t0:.0f} s of the {runner.budget:.0f} s budget",
    ]
    for status in (FAIL, NOT_RUN, PLANNED):
        rows = [r for r in runner.results if r.status == status]
        if rows:
            lines.append(f"{status}:")
            lines += [f"  {r.name}: {r.detail or '-'}" for r in rows]
    lines.append("evidence: gpu-check.tar.gz (results.md, summary.txt, steps.json, environment.json, backends.json, "
                 "reports/*.json, logs/*.log, pytest-gpu.xml, gpu-check.log)")
    return "\n".join(lines) + "\n"


def _number(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def row_table(reports: Iterable[Path]) -> list[str]:
    lines = ["| model | run | device | backend | precision | verdict | max abs | rel L2 | median ms | device median ms "
             "| CUDA peak MiB |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = ("cuda-compare", "ort-cpu", "cuda-shape-grid", "ort-cpu-shape-grid", "cuda-repeat")

    def key(path: Path) -> tuple[str, int, str]:
        model, _, run = path.stem.partition(".")
        return model, order.index(run) if run in order else len(order), run

    for path in sorted(reports, key=key):
        model, _, run = path.stem.partition(".")
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            lines.append(f"| {model} | {run} | | | | unreadable report: {exc} | | | | | |")
            continue
        for row in report.get("results", []):
            if row.get("status") == "skipped":  # a precision the backend does not offer
                continue
            metrics = [o.get("metrics") or {} for o in row.get("outputs") or []]
            worst = {k: max((m[k] for m in metrics if isinstance(m.get(k), (int, float))), default=None)
                     for k in ("max_abs", "rel_l2")}
            latency = row.get("latency") or {}
            memory = (row.get("details") or {}).get("memory") or {}
            peak = memory.get("cuda_peak_allocated_bytes")
            verdict = str(row.get("status", "?")).upper() + ("" if row.get("faithful", True) else "*")
            if row.get("status") not in ("pass", "reference") and row.get("reason"):
                verdict += f" ({first_line(str(row['reason']))[:80]})"
            lines.append(
                f"| {model} | {run} | {row.get('device', '?')} | {row.get('backend')} | {row.get('precision')} | "
                f"{verdict.replace('|', '/')} | {_number(worst['max_abs'], '.3g')} | "
                f"{_number(worst['rel_l2'], '.3g')} | "
                f"{_number(latency.get('median_ms'), '.3f')} | {_number(latency.get('device_median_ms'), '.3f')} | "
                f"{_number(peak / 2**20 if isinstance(peak, int) else None, '.1f')} |")
    return lines


def render_results(runner: Runner) -> str:
    env = runner.environment
    gpus = ", ".join(f"{g['name']} (compute capability {g['capability']})" for g in env.get("gpus") or [])
    mods = env.get("modules", {})
    versions = ", ".join(f"{m} {mods[m]['version']}" for m in ("torch", "onnx", "onnxruntime", "onnxscript", "onnxsim",
                                                               "tensorrt") if m in mods)
    out = ["# gpu-check results", "", f"**{verdict_line(runner)}**", "",
           f"Device: {gpus or 'no CUDA GPU'}; python {env.get('python', '?')}; {versions}; torch CUDA "
           f"{env.get('torch_cuda')}, cuDNN {env.get('cudnn')}; ORT providers {env.get('onnxruntime_providers')}.", "",
           "| step | status | device | seconds | detail |", "| --- | --- | --- | --- | --- |"]
    for r in runner.results:
        out.append(f"| {r.name} | {r.status} | {r.device} | {r.seconds:.0f} | {r.detail.replace('|', '/')} |")
    reports = list((runner.work / "reports").glob("*.json"))
    if reports:
        out += ["", "Rows of every JSON report (skipped precisions left out; * = not faithful to its precision):", "",
                *row_table(reports)]
    out += ["", "What each step checks:", "", *(f"- `{r.name}`: {r.what}" for r in runner.results if r.what)]
    return "\n".join(out) + "\n"


def pack(work: Path, archive: Path) -> list[str]:
    """WORK (less the artifact cache and files over 4 MiB) into ARCHIVE as gpu-check/...; what was left out."""
    omitted: list[str] = []

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        rel = info.name.partition("/")[2]
        if rel == "cache" or rel.startswith("cache/"):
            return None
        if info.isfile() and info.size > MAX_ARCHIVED_FILE:
            omitted.append(f"{rel} ({info.size / 2**20:.1f} MiB)")
            return None
        return info

    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(work, arcname="gpu-check", filter=keep)
    tmp.replace(archive)
    return omitted


# --- entry point --------------------------------------------------------------------------------------------


def prepare_out(out: Path, default: bool) -> None:
    if default and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUT_FILES:
        (out / name).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("prepare", help="download the wheels the lent machine lacks (here, with network)")
    p.add_argument("--python-version", default=os.environ.get("WHEEL_PYTHON", "3.12"))
    p.add_argument("--dest", type=Path, default=Path(os.environ.get("WHEEL_DIR", ROOT / ".whl")))
    p.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    p = sub.add_parser("run", help="the steps (there, no network)")
    p.add_argument("--allow-cpu", action="store_true")
    p.add_argument("--plan", action="store_true", help="the setup steps, then what would run (nothing else runs)")
    args = parser.parse_args(argv)
    if args.mode == "prepare":
        dest = args.dest if args.dest.is_absolute() else ROOT / args.dest
        return prepare(dest, args.python_version, args.limit_mib)

    t0 = time.monotonic() - max(0.0, time.time() - float(os.environ.get("GPU_CHECK_START") or time.time()))
    out_env = os.environ.get("OUT")
    out = Path(out_env or ROOT / "build" / "gpu-check").resolve()
    work_env = os.environ.get("WORK")
    work = Path(work_env).resolve() if work_env else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        budget = float(os.environ.get("BUDGET", "300"))
    except ValueError:
        print("gpu-check: BUDGET must be a number of seconds", file=sys.stderr)
        return 2
    if work_env and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    prepare_out(out, default=not out_env)
    wheel_dir = Path(os.environ.get("WHEEL_DIR") or ROOT / ".whl")
    runner = Runner(python=os.environ.get("PYTHON") or sys.executable, allow_cpu=args.allow_cpu, plan=args.plan,
                    out=out, work=work, budget=budget, t0=t0, models=os.environ.get("MODELS") or DEFAULT_MODELS,
                    selected=os.environ.get("STEPS", ""), wheel_dir=wheel_dir if wheel_dir.is_absolute()
                    else ROOT / wheel_dir, site=Path(os.environ.get("SITE") or "/tmp/site"),
                    latency_s=os.environ.get("LATENCY_S", "1"))

    def on_signal(signum: int, _frame: Any) -> None:
        runner.kill_child()
        runner.log(f"signal {signum}: packing what there is")
        runner.results.append(Result("interrupted", FAIL, "-", 0, f"signal {signum} during {runner.current or '-'}"))
        with contextlib.suppress(Exception):
            runner.finish()
        os._exit(1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return runner.execute()
    finally:
        if not os.environ.get("KEEP_WORK") and not work_env:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""How much does deployval itself cost on top of the work it has to do?

For each model it runs `deployval compare` in a fresh process twice, with an empty artifact cache
(cold) and again with the cache filled (warm), and reads the work the run measured in its own JSON
report: library imports, building the model, exports and ONNX passes, loading each backend and
its inference runs (correctness and timed). Overhead is everything else (interpreter start, CLI,
input generation, hashing, metrics, reports). Also times `deployval --help` in a fresh process.

    python bench/overhead.py [--repeat N] [--validate MODEL]

Prints a Markdown table; numbers are medians over N repetitions (machines are noisy).

`--validate MODEL` measures instead the time to verdict of `deployval validate MODEL` at its full
size with an empty cache: wall time against the inference the verdict needs (each row's
correctness run and timed runs), with every other cost broken down from the run's own report.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [
    ("convs", []),
    ("srcnn", []),
    ("fine_organs", ["--input-shape", "input=1x1x48x80x80"]),
]
BACKENDS = ["--backends", "torch,torchscript,ort", "--precisions", "fp32"]


def deployval(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "deployval", *args], capture_output=True, text=True)
    return time.perf_counter() - start, proc


def work_seconds(report: dict) -> float:
    """The unavoidable work the run recorded about itself."""
    timings = report["timings"]
    total = sum(timings.get("imports_s", {}).values()) + timings.get("model_build_s", 0.0)
    total += sum(step["seconds"] for step in report["steps"] if not step["cached"])
    for result in report["results"]:
        seconds = result.get("seconds", {})
        total += seconds.get("prepare", 0.0) + seconds.get("correctness", 0.0) + seconds.get("timing", 0.0)
    return total


def run_case(model: str, extra: list[str], repeat: int) -> dict[str, float]:
    cold_walls, cold_work, warm_walls, warm_work = [], [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            cache, report = Path(tmp) / "cache", Path(tmp) / "r.json"
            args = ["compare", model, *extra, *BACKENDS, "--cache-dir", str(cache), "--json", str(report), "-q"]
            for walls, works in ((cold_walls, cold_work), (warm_walls, warm_work)):
                wall, proc = deployval(*args)
                if proc.returncode != 0:
                    raise SystemExit(f"{model}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
                walls.append(wall)
                works.append(work_seconds(json.loads(report.read_text())))
    cold, warm = statistics.median(cold_walls), statistics.median(warm_walls)
    work = statistics.median(cold_work)
    return {"cold": cold, "work": work, "ratio": cold / work, "warm": warm,
            "warm_ratio": warm / statistics.median(warm_work), "speedup": cold / warm}


def validate_case(model: str, repeat: int) -> None:
    walls, inferences, strict, breakdowns = [], [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            report_path = Path(tmp) / "r.json"
            wall, proc = deployval("validate", model, "--cache-dir", str(Path(tmp) / "cache"), "--json",
                                   str(report_path), "-q")
            if proc.returncode not in (0, 1):
                raise SystemExit(f"{model}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
            report = json.loads(report_path.read_text())
        parts: dict[str, float] = {}
        inference = 0.0
        for result in report["results"]:
            seconds = result.get("seconds", {})
            label = f"{result['backend']} {result['precision']}"
            runs = seconds.get("correctness", 0.0) + seconds.get("timing", 0.0)
            inference += runs
            parts[f"{label}: correctness run + timed runs"] = runs
            parts[f"{label}: load"] = seconds.get("prepare", 0.0)
            parts[f"{label}: metrics"] = seconds.get("compare", 0.0)
        for step in report["steps"]:
            parts[f"step {step['name']}"] = parts.get(f"step {step['name']}", 0.0) + step["seconds"]
        timings = report["timings"]
        parts["imports"] = sum(timings.get("imports_s", {}).values())
        parts["model build"] = timings.get("model_build_s", 0.0)
        ranges = report.get("analysis", {}).get("activation_ranges", {})
        parts["fp16 ranges of every tensor"] = ranges.get("seconds", 0.0) if ranges.get("level") == "tensor" else 0.0
        hooks = ranges.get("module_level", ranges).get("seconds", 0.0)  # inside the reference's first run
        parts["activation ranges of every module (hooks in the reference run)"] = hooks
        reference = next((r for r in report["results"] if r["status"] == "reference"), None)
        if reference is not None:
            parts[f"{reference['backend']} {reference['precision']}: correctness run + timed runs"] -= hooks
        parts["other (interpreter, CLI, inputs, hashing, reports)"] = wall - sum(parts.values())
        walls.append(wall)
        inferences.append(inference)
        strict.append(inference - hooks)
        breakdowns.append(parts)
    wall, inference = statistics.median(walls), statistics.median(inferences)
    print(f"`deployval validate {model}` (cold cache), median of {repeat}: wall {wall:.1f} s; inference (each "
          f"row's correctness run and timed runs) {inference:.1f} s, ratio {wall / inference:.2f}; without the "
          f"range hooks in the reference run {statistics.median(strict):.1f} s, ratio "
          f"{wall / statistics.median(strict):.2f}")
    print()
    print("| part | seconds |")
    print("| --- | ---: |")
    for name in breakdowns[0]:
        value = statistics.median(b.get(name, 0.0) for b in breakdowns)
        if value >= 0.05:
            print(f"| {name} | {value:.1f} |")


def help_time(repeat: int) -> float:
    samples = []
    for _ in range(max(repeat, 5)):
        wall, proc = deployval("--help")
        assert proc.returncode == 0, proc.stderr
        samples.append(wall)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="repetitions per measurement (median)")
    parser.add_argument("--validate", metavar="MODEL", help="time to verdict of `deployval validate MODEL`")
    args = parser.parse_args()
    if args.validate:
        print(f"machine: {os.cpu_count()} CPUs")
        validate_case(args.validate, args.repeat)
        return
    print(f"machine: {os.cpu_count()} CPUs; backends torch,torchscript,ort fp32; median of {args.repeat}")
    print()
    print("| model | cold wall s | work s | ratio | warm wall s | warm ratio | cold/warm |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model, extra in CASES:
        label = model + (" 48x80x80" if extra else "")
        r = run_case(model, extra, args.repeat)
        print(f"| {label} | {r['cold']:.1f} | {r['work']:.1f} | {r['ratio']:.3f} | {r['warm']:.1f} | "
              f"{r['warm_ratio']:.3f} | {r['speedup']:.2f}x |", flush=True)
    print()
    print(f"`deployval --help` in a fresh process: {help_time(args.repeat):.3f} s (median)")


if __name__ == "__main__":
    main()

"""What does `deployval debug` cost next to a plain `compare` of the same backend?

Target (issue 4): on fine_organs at 48x80x80, debug takes at most 2x the peak memory and 3x the wall
time of `compare --backends ort`. Each run is a fresh process, measured by a fresh wrapper process
(`--measure`) that reports the wall time around it and its peak RSS (ru_maxrss of the wrapper's
only child). Rows: cold (each command on an empty artifact cache), warm (each on the cache it filled
itself just before; debug then also reuses its survey), after-compare (debug on the cache a compare
filled: the artifacts are there, the survey is not; compared with the warm compare).

    python bench/debug_cost.py [--model fine_organs] [--input-shape input=1x1x48x80x80] [--backend ort]
                               [--repeat N] [--json results.json]

Prints a Markdown table (medians over N repetitions) and exits 1 when a ratio exceeds its limit.
Wall time is what the target is about; the CPU-time ratio (user + system of the child) is printed next
to it because it hardly moves when other work shares the machine, and wall time does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEMORY_LIMIT, TIME_LIMIT = 2.0, 3.0


def measure(command: list[str]) -> None:
    """Run `command` as this process's only child; print its wall time, peak RSS and exit code."""
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # ru_maxrss in kilobytes on Linux
    print(json.dumps({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024,
                      "rc": proc.returncode, "tail": (proc.stdout + proc.stderr)[-1500:]}))


def run(command: list[str]) -> dict:
    wrapper = subprocess.run([sys.executable, __file__, "--measure", "--", *command], capture_output=True, text=True,
                             check=True)
    return json.loads(wrapper.stdout.strip().splitlines()[-1])


def debug_entry() -> list[str]:
    """`deployval debug` once it is registered in the CLI, `python -m deployval.debug` until then."""
    probe = "from deployval.cli import app; print(any(c.name == 'debug' for c in app.registered_commands))"
    registered = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    return [sys.executable, "-m", "deployval", "debug"] if registered == "True" else [
        sys.executable, "-m", "deployval.debug"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fine_organs")
    parser.add_argument("--input-shape", default="input=1x1x48x80x80")
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    common = [args.model, "--input-shape", args.input_shape, "-q"]
    compare = [sys.executable, "-m", "deployval", "compare", *common, "--backends", args.backend]
    debug = [*debug_entry(), *common, "--backend", args.backend]
    samples: dict[str, list[dict]] = {}
    # cache A: compare cold, compare warm, then debug on the artifacts compare cached (the usual flow:
    # compare says a backend is off, debug says where); cache B: debug cold, then debug warm.
    plan = [("A", "compare cold", compare), ("A", "compare warm", compare), ("A", "debug after-compare", debug),
            ("B", "debug cold", debug), ("B", "debug warm", debug)]
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="deployval-bench-") as tmp:
            for cache, label, command in plan:
                result = run([*command, "--cache-dir", str(Path(tmp) / cache)])
                if result["rc"] not in (0, 1):
                    print(f"{label} failed (exit {result['rc']}):\n{result['tail']}", file=sys.stderr)
                    return 2
                samples.setdefault(label, []).append(result)
                print(f"  {label:20} {result['wall_s']:6.1f} s wall {result['cpu_s']:6.1f} s CPU "
                      f"{result['peak_mb']:7.0f} MiB  exit {result['rc']}", file=sys.stderr, flush=True)

    def median(key: str, field: str) -> float:
        return statistics.median(s[field] for s in samples[key])

    print(f"\n{args.model} {args.input_shape}, backend {args.backend}, {os.cpu_count()} CPUs, "
          f"median of {args.repeat}\n")
    print("| cache | compare wall s | debug wall s | time ratio (≤ 3) | CPU s ratio | compare peak MiB | "
          "debug peak MiB | memory ratio (≤ 2) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ok = True
    rows = {}
    for temperature, against in (("cold", "cold"), ("warm", "warm"), ("after-compare", "warm")):
        cw, dw = median(f"compare {against}", "wall_s"), median(f"debug {temperature}", "wall_s")
        cm, dm = median(f"compare {against}", "peak_mb"), median(f"debug {temperature}", "peak_mb")
        cpu_ratio = median(f"debug {temperature}", "cpu_s") / median(f"compare {against}", "cpu_s")
        time_ratio, memory_ratio = dw / cw, dm / cm
        ok &= time_ratio <= TIME_LIMIT and memory_ratio <= MEMORY_LIMIT
        rows[temperature] = {"compare_wall_s": cw, "debug_wall_s": dw, "time_ratio": time_ratio, "cpu_ratio": cpu_ratio,
                             "compare_peak_mb": cm, "debug_peak_mb": dm, "memory_ratio": memory_ratio}
        print(f"| {temperature} | {cw:.1f} | {dw:.1f} | {time_ratio:.2f}x | {cpu_ratio:.2f}x | {cm:.0f} | {dm:.0f} "
              f"| {memory_ratio:.2f}x |")
    print(f"\n{'within' if ok else 'OVER'} the limits (time ≤ {TIME_LIMIT}x, memory ≤ {MEMORY_LIMIT}x)")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "input_shape": args.input_shape,
                                         "backend": args.backend, "rows": rows, "samples": samples}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--measure":
        measure(sys.argv[3:] if sys.argv[2] == "--" else sys.argv[2:])
    else:
        sys.exit(main())

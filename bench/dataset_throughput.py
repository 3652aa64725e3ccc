"""Throughput of a data-set run, in one process and on Ray with N actors on this machine.

    python bench/dataset_throughput.py [--samples 40] [--workers 2] [--repeat 1]

Each run is `deployval compare srcnn --dataset DIR --backends torch,ort` in a fresh process with a
warm artifact cache; the samples judged after the first, divided by the data-set pass's own seconds
(`analysis.dataset.seconds`: loading the rows, every sample, the verdicts), give samples/s. Ray's
start-up is paid outside that pass and printed apart. Prints a Markdown table (medians).
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

import numpy as np


def run(args: list[str]) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "deployval", *args, "--json", str(report), "-q"],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        return wall, json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, cache = Path(tmp) / "set", Path(tmp) / "cache"
        data.mkdir()
        rng = np.random.default_rng(0)
        for i in range(options.samples):
            np.save(data / f"s{i:03d}.npy", rng.standard_normal((1, 3, 128, 128)).astype(np.float32))
        base = ["compare", "srcnn", "--dataset", str(data), "--backends", "torch,ort", "--iterations", "1",
                "--cache-dir", str(cache)]
        run(base)  # fills the artifact cache
        rows = []
        for label, extra in (("one process", []), (f"Ray, {options.workers} actors",
                                                   ["--ray", "--ray-workers", str(options.workers)])):
            rates, walls = [], []
            for _ in range(options.repeat):
                wall, report = run(base + extra)
                seconds = report["analysis"]["dataset"]["seconds"]
                rates.append((report["samples"] - 1) / seconds)
                walls.append(wall)
            rows.append((label, statistics.median(rates), statistics.median(walls)))
    print(f"machine: {os.cpu_count()} CPUs; srcnn 1x3x128x128, {options.samples} samples, rows torch and ort fp32")
    print()
    print("| run | samples/s | ratio | whole command s |")
    print("| --- | ---: | ---: | ---: |")
    for label, rate, wall in rows:
        print(f"| {label} | {rate:.2f} | {rate / rows[0][1]:.2f} | {wall:.1f} |")


if __name__ == "__main__":
    main()

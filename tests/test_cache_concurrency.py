"""Two deployval processes sharing one cache directory: no corruption, no duplicate builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, TESTS

from deployval._util import sha256_file


def test_concurrent_runs_share_the_cache_without_rebuilding(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    procs = []
    for name in ("a", "b"):
        cmd = [sys.executable, "-m", "deployval", "compare", "srcnn", "--input-shape", "image=1x3x32x32",
               "--backends", "torch,torchscript,ort", "--iterations", "1", "--cache-dir", str(cache),
               "--json", str(tmp_path / f"{name}.json"), "-q"]
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    reports = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b")]
    for step in ("torchscript", "export-onnx", "simplify"):
        built = [next(s for s in r["steps"] if s["name"] == step)["cached"] for r in reports]
        assert sorted(built) == [False, True], (step, built)  # exactly one process built it
    entry = next(cache.iterdir())
    for meta_path in entry.glob("*.json"):
        meta = json.loads(meta_path.read_text())
        artifact = meta_path.with_name(meta_path.name[: -len(".json")])
        assert meta["sha256"] == sha256_file(artifact)
    assert not list(entry.glob("*.tmp")) and not list(entry.glob(".*"))  # no half-written leftovers

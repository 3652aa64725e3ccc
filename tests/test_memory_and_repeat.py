"""Memory per row: the peak resident memory a row added (sampled), the artifact's size, in the JSON,
the console and the HTML; an isolated row is measured in its own process. --repeat: differences
between runs of the same inputs, of the rows and of the reference."""

from __future__ import annotations

import json
import os
from pathlib import Path

PEAK_PROBE = """import json, numpy as np
from deployval.memory import PeakMemory, rss_bytes
outside = np.ones(50 << 20, dtype=np.uint8)  # 50 MB before the block: not the block's
with PeakMemory() as peak:
    inside = np.ones(200 << 20, dtype=np.uint8)  # touched: resident
    del inside
print(json.dumps({**peak.to_dict(), "rss": rss_bytes()}))
"""


def test_peak_memory_sees_what_the_block_allocated_and_only_that():
    """In a fresh interpreter: in this one, pages earlier tests freed are still resident, and the block's
    allocation may reuse them without the RSS growing by all of it (seen once: 149.6 of 200 MB)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", PEAK_PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["added_rss_bytes"] >= 150 << 20, info
    assert info["added_rss_bytes"] < 400 << 20, info
    assert info["peak_rss_bytes"] >= info["added_rss_bytes"] and info["rss"] is not None


def test_rows_record_their_memory_and_artifact_size(cli, tmp_path):
    report_path, html_path = tmp_path / "r.json", tmp_path / "r.html"
    result = cli("compare", "srcnn", "--input-shape", "image=1x3x64x64", "--backends", "torch,torchscript,ort",
                 "--iterations", "2", "--cache-dir", tmp_path / "cache", "--json", report_path, "--html", html_path)
    assert result.code == 0, result.out + result.err
    rows = {r["backend"]: r for r in json.loads(report_path.read_text())["results"]}
    for backend, row in rows.items():
        memory = row["details"]["memory"]
        assert 0 <= memory["added_rss_bytes"] <= memory["peak_rss_bytes"], (backend, memory)
    for backend in ("torchscript", "ort"):
        path = Path(rows[backend]["artifact"]["path"])
        assert rows[backend]["details"]["memory"]["artifact_bytes"] == os.path.getsize(path)
    assert "mem MB" in result.out and "memory MB" in html_path.read_text()


def test_an_isolated_row_is_measured_in_its_own_process(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "torch,ort", "--isolate", "--iterations", "1", "--no-cache",
                 "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    ort = next(r for r in json.loads(report_path.read_text())["results"] if r["backend"] == "ort")
    assert ort["details"]["isolated"] and ort["details"]["memory"]["peak_rss_bytes"] > 0


def test_repeat_reports_a_reference_that_is_not_a_pure_function(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:stateful", "--input-shape", "x=1x3x8x8", "--backends", "ort",
                 "--repeat", "2", "--iterations", "1", "--no-cache", "--json", report_path)
    report = json.loads(report_path.read_text())
    repeat = report["analysis"]["reference_repeat"]
    assert repeat["runs"] == 2 and not repeat["identical"] and repeat["max_abs_difference"]["output"] > 0
    assert "the reference is not deterministic" in result.out
    assert "gave identical outputs" not in result.out
    result = cli("compare", "convs", "--backends", "ort", "--repeat", "2", "--iterations", "1")
    assert "repeat: 2 runs of the reference and of every row gave identical outputs" in result.out
    [row] = report["results"]  # the exported graph has no state: ONNX Runtime repeats itself exactly
    assert row["details"]["repeat"] == {"runs": 2, "identical": True, "max_abs_difference": {}}
    assert "--repeat 2" in row["reproduce"]


def test_repeat_builds_an_engine_twice_the_second_time_without_the_cache(cli, tmp_path):
    from faulty_backends import TacticDependentRunner

    from deployval.backends.base import _registered, register_backend

    register_backend(TacticDependentRunner)
    TacticDependentRunner.builds.clear()
    try:
        report_path = tmp_path / "r.json"
        result = cli("compare", "convs", "--backends", "tactics", "--repeat", "2", "--iterations", "1",
                     "--json", report_path, "-q")
        assert result.code == 0, result.out + result.err
        [row] = json.loads(report_path.read_text())["results"]
        assert len(TacticDependentRunner.builds) == 2 and TacticDependentRunner.builds[0] is not None
        assert TacticDependentRunner.builds[1] is None  # the second build bypassed the engine cache
        repeat = row["details"]["repeat"]
        assert repeat["identical"] is True  # one engine repeats itself ...
        assert repeat["engine_builds"] == 2 and repeat["builds_identical"] is False  # ... a new build does not
        assert 0 < repeat["build_max_abs_difference"]["y"] < 1e-3
        assert any("not deterministic across engine builds" in w for w in row["warnings"])
        TacticDependentRunner.builds.clear()
        assert cli("compare", "convs", "--backends", "tactics", "--iterations", "1", "-q").code == 0
        assert len(TacticDependentRunner.builds) == 1  # without --repeat: one build
        # A second build that fails costs the row nothing: the first engine's outputs were judged.
        TacticDependentRunner.builds.clear()
        TacticDependentRunner.out_of_memory_after = 1
        result = cli("compare", "convs", "--backends", "tactics", "--repeat", "2", "--iterations", "1",
                     "--json", report_path, "-q")
        assert result.code == 0, result.out + result.err
        [row] = json.loads(report_path.read_text())["results"]
        assert row["status"] == "pass" and row["details"]["repeat"]["engine_builds"] == 1
        assert "out of device memory" in row["details"]["repeat"]["build_error"]
        assert any("the second engine build (for --repeat) failed" in w for w in row["warnings"])
    finally:
        TacticDependentRunner.out_of_memory_after = None
        _registered.pop("tactics", None)

"""--dataset: every row judged on every sample, one sample at a time; faults named and counted;
failing samples saved for replay; memory bounded by one sample's outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from conftest import ROOT, TESTS, assert_one_line_error


def _write_set(directory, count, shape=(1, 3, 32, 32), seed=0, scale=None):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        sample = rng.standard_normal(shape).astype(np.float32)
        if scale and i in scale:
            sample *= scale[i]
        np.save(directory / f"s{i:02d}.npy", sample)
    return directory


def test_every_row_is_judged_on_every_sample_and_faults_are_named(cli, tmp_path):
    data = _write_set(tmp_path / "set", 5)
    np.save(data / "s90_other_shape.npy", np.zeros((1, 3, 16, 16), np.float32))
    (data / "s91_damaged.npy").write_bytes(b"not an array")
    report_path = tmp_path / "r.json"
    result = cli("compare", "srcnn", "--dataset", data, "--backends", "torch,ort", "--iterations", "1",
                 "--no-cache", "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    report = json.loads(report_path.read_text())
    assert report["samples"] == 5 and all(r["samples"] == 5 for r in report["results"])
    ort = next(r for r in report["results"] if r["backend"] == "ort")
    summary = ort["details"]["dataset"]
    assert summary["samples"] == 5 and summary["failed"] == 0
    assert {w["sample"] for w in summary["worst"]} == {f"s{i:02d}.npy" for i in range(5)}
    rel = summary["outputs"]["upscaled"]["rel_l2"]
    assert rel["worst"] >= rel["p50"] and rel["worst"] == max(w["rel_l2"] for w in summary["worst"])
    unusable = {u["sample"]: u["reason"] for u in report["analysis"]["dataset"]["unusable"]}
    assert set(unusable) == {"s90_other_shape.npy", "s91_damaged.npy"}
    assert "1x3x16x16" in unusable["s90_other_shape.npy"]
    assert "2 samples left out" in result.out and "ort:fp32: 5 samples, 0 fail" in result.out


def test_a_failing_sample_fails_the_row_is_saved_and_replays(cli, tmp_path):
    # One sample 200x larger: the same absolute tolerance that the others meet fails on it at fp16.
    data = _write_set(tmp_path / "set", 4, scale={2: 200.0})
    failing = tmp_path / "failing"
    args = ("compare", "srcnn", "--dataset", data, "--backends", "ort", "--precisions", "fp16", "--iterations", "1",
            "--atol", "0.05", "--rtol", "0", "--no-cache")
    report_path = tmp_path / "r.json"
    result = cli(*args, "--save-failing", failing, "--json", report_path, "-q")
    assert result.code == 1, result.out + result.err
    [row] = json.loads(report_path.read_text())["results"]
    assert row["status"] == "fail" and row["reason"].startswith("1 of 4 samples fail; worst s02.npy")
    worst = row["details"]["dataset"]["worst"][0]
    assert worst["sample"] == "s02.npy" and not worst["passed"] and "exceed atol" in worst["failures"][0]
    assert [p.name for p in failing.iterdir()] == ["s02.npz"]
    replay = cli("compare", "srcnn", "--inputs", failing / "s02.npz", "--backends", "ort", "--precisions", "fp16",
                 "--iterations", "1", "--atol", "0.05", "--rtol", "0", "--no-cache", "-q")
    assert replay.code == 1  # the saved sample shows the failure on its own
    # Three of four passing is enough when the gate says so.
    assert cli(*args, "--pass-fraction", "0.75", "-q").code == 0


def test_bad_dataset_arguments_are_one_line_errors(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(cli("compare", "srcnn", "--dataset", empty, "-q"), 2, "holds no .npy")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.npy").write_bytes(b"junk")
    assert_one_line_error(cli("compare", "srcnn", "--dataset", junk, "-q"), 2, "no sample can be used")
    data = _write_set(tmp_path / "set", 1)
    assert_one_line_error(cli("compare", "srcnn", "--dataset", data, "--inputs", data / "s00.npy", "-q"), 2,
                          "--dataset and --inputs")
    assert_one_line_error(cli("compare", "srcnn", "--limit", "3", "-q"), 2, "--limit applies to --dataset")
    assert_one_line_error(cli("compare", "srcnn", "--dataset", data, "--pass-fraction", "0", "-q"), 2,
                          "--pass-fraction")


def test_validate_takes_a_dataset_and_limit(cli, tmp_path):
    data = _write_set(tmp_path / "set", 4, shape=(1, 3, 8, 8))
    report_path = tmp_path / "r.json"
    result = cli("validate", "convs", "--dataset", data, "--limit", "3", "--no-cache", "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    report = json.loads(report_path.read_text())
    assert report["samples"] == 3 and report["analysis"]["dataset"]["first"] == "s00.npy"


def _peak_rss_mb(data, tmp_path) -> float:
    code = ("import resource, sys\nfrom deployval.cli import main\n"
            f"main(['compare', 'srcnn', '--dataset', {str(data)!r}, '--backends', 'torch,ort', '--iterations', '1',"
            " '--no-cache', '-q'])\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.strip().splitlines()[-1])


def test_memory_stays_bounded_by_one_sample(tmp_path):
    """48 samples whose outputs (reference and ORT, 1.7 MB each) would take 170 MB if kept: the peak
    memory of the run is that of a 4-sample run, to within noise."""
    shape = (1, 3, 128, 128)  # srcnn upscales 3x: 1x3x384x384 float32 per output
    small = _peak_rss_mb(_write_set(tmp_path / "small", 4, shape), tmp_path)
    large = _peak_rss_mb(_write_set(tmp_path / "large", 48, shape), tmp_path)
    held = 48 * 2 * 3 * 384 * 384 * 4 / 2**20
    assert large - small < 40, (small, large, held)  # MB

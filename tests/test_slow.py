"""Full-size runs (`make test-slow`): minutes each on two CPU cores, so not in the default suite."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_fine_organs_release_gate_at_full_size(cli, tmp_path):
    report_path = tmp_path / "fine_organs.json"
    result = cli("validate", "fine_organs", "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    report = json.loads(report_path.read_text())
    assert report["inputs"][0]["shape"] == [1, 1, 96, 160, 160]
    rows = {(r["backend"], r["precision"]): r for r in report["results"]}
    ort = rows[("ort", "fp32")]["outputs"][0]
    assert ort["metrics"]["max_abs"] < 1e-3 and ort["task"]["argmax_agreement"] > 0.999
    assert rows[("ort", "fp16")]["faithful"] is False


@pytest.mark.slow
def test_fine_organs_int8_with_random_calibration_fails_its_tolerance(cli, tmp_path):
    """Calibration data matters: noise-calibrated int8 must not pass (argmax agreement ~78%)."""
    report_path = tmp_path / "int8.json"
    result = cli("compare", "fine_organs", "--input-shape", "input=1x1x48x80x80", "--backends", "torch,ort",
                 "--precisions", "int8", "--iterations", "0", "--json", report_path, "-q")
    assert result.code == 1
    row = json.loads(report_path.read_text())["results"][1]
    assert row["status"] == "fail" and row["outputs"][0]["task"]["argmax_agreement"] < 0.95

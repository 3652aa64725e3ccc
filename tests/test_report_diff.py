"""`deployval report diff`: one real `compare` report per module, and candidates derived from it by
editing its JSON (the diff reads nothing else), each with one known regression or change."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, assert_one_line_error


@pytest.fixture(scope="module")
def real_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """convs through torch and ONNX Runtime at fp32 and fp16, run once through the CLI."""
    from deployval.cli import main

    path = tmp_path_factory.mktemp("diff") / "release.json"
    code = main(["compare", "convs", "--backends", "torch,ort", "--precisions", "fp32,fp16", "--iterations", "50",
                 "--json", str(path), "--quiet"])
    assert code == 0
    report = json.loads(path.read_text())
    assert {f"{r['backend']}:{r['precision']}": r["status"] for r in report["results"]} == {
        "torch:fp32": "reference", "torch:fp16": "pass", "ort:fp32": "pass", "ort:fp16": "pass"}
    return report


def row(report: dict[str, Any], label: str) -> dict[str, Any]:
    return next(r for r in report["results"] if f"{r['backend']}:{r['precision']}" == label)


def write(tmp_path: Path, name: str, data: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def diff(cli, tmp_path: Path, baseline: Any, candidate: Any, *args: str) -> tuple[Any, dict[str, Any]]:
    """Run `report diff` on the two dicts; returns the CLI result and its JSON output (empty on exit 2)."""
    out = tmp_path / "diff.json"
    out.unlink(missing_ok=True)
    result = cli("report", "diff", write(tmp_path, "base.json", baseline), write(tmp_path, "cand.json", candidate),
                 "--json", out, *args)
    return result, json.loads(out.read_text()) if out.exists() else {}


def findings(data: dict[str, Any], kind: str) -> list[tuple[str, str, str, str]]:
    return [(c["what"], c["row"], c["output"], c["metric"]) for c in data["changes"] if c["kind"] == kind]


def test_identical_reports_flag_nothing(cli, tmp_path, real_report):
    result, data = diff(cli, tmp_path, real_report, real_report)
    assert result.code == 0, result.err
    assert data["changes"] == [] and data["versions"] == []
    assert data["compared"] == {"models": 1, "rows": 4}
    assert data["latency"] == [{"model": "convs", "compared": True, "reason": ""}]
    assert data["summary"]["verdict"] == "NO REGRESSION" and "NO REGRESSION" in result.out


def test_error_ten_times_above_tolerance_is_a_regression(cli, tmp_path, real_report):
    cand = copy.deepcopy(real_report)
    output = row(cand, "ort:fp16")["outputs"][0]
    bound = output["tolerance"]["rel_l2"]
    output["metrics"]["rel_l2"] = 10 * bound  # the verdict is left as it was: only the error says so
    result, data = diff(cli, tmp_path, real_report, cand)
    assert result.code == 1, result.err
    assert findings(data, "regression") == [("error", "ort:fp16@cpu", "y", "rel_l2")]
    change = data["changes"][0]
    assert change["baseline"] == row(real_report, "ort:fp16")["outputs"][0]["metrics"]["rel_l2"]
    assert change["candidate"] == 10 * bound
    assert "REGRESSION" in result.out and "rel_l2" in result.out


def test_growth_below_the_tolerance_floor_or_factor_is_not_a_regression(cli, tmp_path, real_report):
    base, cand = copy.deepcopy(real_report), copy.deepcopy(real_report)
    # 1e-9 -> 3e-9 max |diff| at fp32: three times more, but far below the row's atol + rtol * max|ref|
    for report, value in ((base, 1e-9), (cand, 3e-9)):
        row(report, "ort:fp32")["outputs"][0]["metrics"]["max_abs"] = value
    # 1.5x on fp16's rel L2, well above the floor: under the default 2x growth
    fp16 = row(cand, "ort:fp16")["outputs"][0]["metrics"]
    fp16["rel_l2"] *= 1.5
    result, data = diff(cli, tmp_path, base, cand)
    assert result.code == 0, result.out
    assert findings(data, "regression") == []
    # the same edits are regressions when the floor is 0 and the growth factor 1.4
    result, data = diff(cli, tmp_path, base, cand, "--error-floor", "0", "--error-growth", "1.4")
    assert result.code == 1
    assert set(findings(data, "regression")) == {("error", "ort:fp32@cpu", "y", "max_abs"),
                                                 ("error", "ort:fp16@cpu", "y", "rel_l2")}


def test_verdict_flip_pass_to_fail_is_a_regression_and_back_an_improvement(cli, tmp_path, real_report):
    cand = copy.deepcopy(real_report)
    flipped = row(cand, "torch:fp16")
    flipped["status"], flipped["reason"] = "fail", "y: rel_l2 0.02 > 0.01"
    result, data = diff(cli, tmp_path, real_report, cand)
    assert result.code == 1
    assert findings(data, "regression") == [("verdict", "torch:fp16@cpu", "", "")]
    assert data["changes"][0]["baseline"] == "pass" and data["changes"][0]["candidate"] == "fail"
    result, data = diff(cli, tmp_path, cand, real_report)
    assert result.code == 0
    assert findings(data, "improvement") == [("verdict", "torch:fp16@cpu", "", "")]


def test_vanished_row_is_a_regression_and_a_new_row_is_not(cli, tmp_path, real_report):
    cand = copy.deepcopy(real_report)
    cand["results"] = [r for r in cand["results"] if not (r["backend"] == "ort" and r["precision"] == "fp16")]
    result, data = diff(cli, tmp_path, real_report, cand)
    assert result.code == 1
    assert findings(data, "regression") == [("row", "ort:fp16@cpu", "", "")]
    assert data["compared"]["rows"] == 3
    result, data = diff(cli, tmp_path, cand, real_report)
    assert result.code == 0
    assert findings(data, "info") == [("row", "ort:fp16@cpu", "", "")] and findings(data, "regression") == []


def test_slower_median_is_a_regression_on_the_same_device_only(cli, tmp_path, real_report):
    cand = copy.deepcopy(real_report)
    row(cand, "ort:fp32")["latency"]["median_ms"] *= 1.5
    row(cand, "torch:fp16")["latency"]["median_ms"] *= 1.05  # inside the default 10%
    result, data = diff(cli, tmp_path, real_report, cand)
    assert result.code == 1
    assert findings(data, "regression") == [("latency", "ort:fp32@cpu", "", "median_ms")]
    assert "+50.0%" in data["changes"][0]["note"]
    result, data = diff(cli, tmp_path, real_report, cand, "--latency-tolerance", "60%")
    assert result.code == 0 and data["changes"] == []

    cand["device"]["cpu"] = "Some Other CPU"
    result, data = diff(cli, tmp_path, real_report, cand)
    assert result.code == 0, result.out
    assert data["changes"] == []
    check = data["latency"][0]
    assert check["compared"] is False and "cpu differs" in check["reason"] and "Some Other CPU" in check["reason"]
    assert "latency not compared" in result.out


def test_changed_versions_are_listed_not_gated(cli, tmp_path, real_report):
    cand = copy.deepcopy(real_report)
    cand["versions"]["onnxruntime"] = "99.0.0"
    cand["versions"]["tensorrt"] = "10.16.0"
    result, data = diff(cli, tmp_path, real_report, cand)
    assert result.code == 0
    assert {v["package"]: (v["baseline"], v["candidate"]) for v in data["versions"]} == {
        "onnxruntime": (real_report["versions"]["onnxruntime"], "99.0.0"), "tensorrt": (None, "10.16.0")}
    assert "onnxruntime" in result.out and "99.0.0" in result.out


def test_markdown_names_the_regressions_and_versions(cli, tmp_path, real_report):
    cand = copy.deepcopy(real_report)
    row(cand, "ort:fp32")["status"] = "error"
    row(cand, "ort:fp32")["reason"] = "ort failed: something | broke"
    cand["versions"]["onnxruntime"] = "99.0.0"
    md = tmp_path / "diff.md"
    result = cli("report", "diff", write(tmp_path, "a.json", real_report), write(tmp_path, "b.json", cand),
                 "--markdown", md)
    assert result.code == 1
    text = md.read_text()
    assert text.startswith("## deployval report diff — REGRESSION (exit 1)")
    assert "### Regressions (1)" in text
    assert "| convs | verdict | ort:fp32@cpu | pass | error | ort failed: something \\| broke |" in text
    assert f"| onnxruntime | {real_report['versions']['onnxruntime']} | 99.0.0 |" in text
    result = cli("report", "diff", write(tmp_path, "a.json", real_report), write(tmp_path, "b.json", real_report),
                 "--markdown", md)
    assert result.code == 0 and "### Regressions (0)\n\nNone." in md.read_text()


def suite(*reports: dict[str, Any], errors: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    from deployval.run.suite import suite_dict

    return suite_dict(list(reports), list(errors), manifest=None, shard=None)


def entry(report: dict[str, Any], name: str) -> dict[str, Any]:
    return {**copy.deepcopy(report), "entry": name}


def test_suite_reports_match_by_entry(cli, tmp_path, real_report):
    base = suite(entry(real_report, "convs-a"), entry(real_report, "convs-b"))
    cand = suite(entry(real_report, "convs-a"), errors=({"entry": "convs-b", "reason": "no GPU", "exit_code": 3},))
    result, data = diff(cli, tmp_path, base, cand)
    assert result.code == 1
    assert findings(data, "regression") == [("model", "", "", "")]
    assert data["changes"][0]["model"] == "convs-b" and data["changes"][0]["note"] == "no GPU"

    cand = suite(entry(real_report, "convs-a"))
    result, data = diff(cli, tmp_path, base, cand)
    assert result.code == 1 and [c["model"] for c in data["changes"]] == ["convs-b"]
    assert data["compared"] == {"models": 1, "rows": 4}

    # a single model's report against a suite: that model only, by its entry id
    single = entry(real_report, "convs-b")
    row(single, "ort:fp16")["status"] = "fail"
    result, data = diff(cli, tmp_path, base, single)
    assert result.code == 1
    assert findings(data, "regression") == [("verdict", "ort:fp16@cpu", "", "")]
    assert data["compared"] == {"models": 1, "rows": 4} and "only convs-b compared" in data["notes"][0]

    # a compare report (no entry id) finds the suite's one entry of its model's name
    result, data = diff(cli, tmp_path, suite(entry(real_report, "organs-ct")), single | {"entry": None})
    assert result.code == 1
    assert findings(data, "regression") == [("verdict", "ort:fp16@cpu", "", "")]
    assert data["compared"] == {"models": 1, "rows": 4}


def test_reports_that_cannot_be_compared_exit_2_with_one_line(cli, tmp_path, real_report):
    other = copy.deepcopy(real_report)
    other["model"]["name"] = "fine_organs"
    result, _ = diff(cli, tmp_path, real_report, other)
    assert_one_line_error(result, 2, "different models")

    newer = {**copy.deepcopy(real_report), "format_version": "2.0"}
    result, _ = diff(cli, tmp_path, real_report, newer)
    assert_one_line_error(result, 2, "has format 2.0")

    result, _ = diff(cli, tmp_path, real_report, {"results": []})
    assert_one_line_error(result, 2, "not a deployval JSON report (no format_version)")
    result, _ = diff(cli, tmp_path, real_report, "{not json")
    assert_one_line_error(result, 2, "not a deployval JSON report")
    result, _ = diff(cli, tmp_path, real_report, {**copy.deepcopy(real_report), "kind": "debug"})
    assert_one_line_error(result, 2, "is a debug report")
    result = cli("report", "diff", write(tmp_path, "a.json", real_report), tmp_path / "missing.json")
    assert_one_line_error(result, 2, "does not exist")
    result, _ = diff(cli, tmp_path, real_report, real_report, "--latency-tolerance", "fast")
    assert_one_line_error(result, 2, "--latency-tolerance")
    result, _ = diff(cli, tmp_path, real_report, real_report, "--error-growth", "0.5")
    assert_one_line_error(result, 2, "--error-growth")

    no_status = copy.deepcopy(real_report)
    del no_status["results"][0]["status"]
    result, _ = diff(cli, tmp_path, real_report, no_status)
    assert_one_line_error(result, 2, "lacks its backend, precision or status")
    bad_inputs = {**copy.deepcopy(real_report), "inputs": [1]}
    result, _ = diff(cli, tmp_path, bad_inputs, real_report)
    assert_one_line_error(result, 2, "an entry of 'inputs' is not an object")


def test_cli_start_up_does_not_import_the_diff():
    code = "import sys, deployval.cli; print('deployval.report.diff' in sys.modules, 'rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["False", "False"]

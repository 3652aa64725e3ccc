"""JUnit XML against the strict Apache Ant schema that Jenkins and other CI tools read
(tests/data/junit/JUnit.xsd, vendored from windyroad/JUnit-Schema): every kind of run deployval reports
writes a valid file, its red and green agree with the verdict, and a test case's time is how long its
check took, never the latency (which is a suite property)."""

from __future__ import annotations

import copy
import functools
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SCHEMA = Path(__file__).parent / "data" / "junit" / "JUnit.xsd"
CONVS = ("convs", "--backends", "torch,ort", "--iterations", "1", "-q")


@functools.lru_cache(maxsize=1)
def _schema() -> Any:
    xmlschema = pytest.importorskip("xmlschema")
    return xmlschema.XMLSchema(str(SCHEMA))


def valid(path: Path) -> ET.Element:
    """The file's root, after checking it against the schema (every error named, not just the first)."""
    pytest.importorskip("xmlschema")
    errors = [str(error).splitlines()[0] + " at " + str(error.path) for error in _schema().iter_errors(str(path))]
    assert not errors, "\n".join(errors)
    return ET.parse(path).getroot()


def totals(root: ET.Element) -> dict[str, int]:
    """Counts over every suite (a <testsuites> has no attributes of its own in the schema)."""
    return {key: sum(int(s.get(key, "0")) for s in root.iter("testsuite"))
            for key in ("tests", "failures", "errors", "skipped")}


def properties(suite: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in suite.iter("property")}


def outcomes(suite: ET.Element) -> dict[tuple[str, str], str]:
    """(backend.precision, case name) -> 'pass', 'failure', 'error' or 'skipped'."""
    found = {}
    for case in suite.iter("testcase"):
        label = ".".join(case.get("classname").split(".")[-2:])
        children = [child.tag for child in case]
        found[(label, case.get("name"))] = children[0] if children else "pass"
    return found


@pytest.fixture(scope="module")
def passing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One passing run's JSON and JUnit (r.json, r.xml), shared by the tests that only read them."""
    from deployval.cli import main

    root = tmp_path_factory.mktemp("junit")
    assert main(["compare", *CONVS, "--json", str(root / "r.json"), "--junit", str(root / "r.xml")]) == 0
    return root


def test_a_passing_run_is_valid_and_times_each_check_not_its_latency(passing):
    suite = valid(passing / "r.xml")
    data = json.loads((passing / "r.json").read_text())
    assert suite.tag == "testsuite" and totals(suite) == {"tests": 2, "failures": 0, "errors": 0, "skipped": 0}
    assert suite.get("hostname") and suite.get("timestamp") == data["created"].removesuffix("+00:00")
    assert float(suite.get("time")) == pytest.approx(data["timings"]["total_s"], abs=1e-5)  # the run's wall time
    props = properties(suite)
    assert props["verdict"] == "PASS" and props["model"] == "convs" and props["complete"] == "true"
    assert props["deployval.version"] == data["versions"]["deployval"]
    assert suite.find("testcase/system-out") is None and "deployval.convs.ort.fp32.y: reproduce: " in suite.findtext(
        "system-out")
    times = {".".join(c.get("classname").split(".")[-2:]): float(c.get("time")) for c in suite.iter("testcase")}
    for row in data["results"]:
        label = f"{row['backend']}.{row['precision']}"
        assert "isolated_process" not in row["seconds"]  # in process: the row's own seconds add up to its check
        assert times[label] == pytest.approx(sum(row["seconds"].values()), abs=1e-5)
        assert times[label] > row["latency"]["median_ms"] / 1000.0  # loading, running, timing: not the latency
        assert float(props[f"{label}.latency_median_ms"]) == pytest.approx(row["latency"]["median_ms"], rel=1e-5)
        assert props[f"{label}.status"] == row["status"]


def test_a_failing_run_is_valid_and_red_on_the_output_that_failed(cli, tmp_path):
    junit = tmp_path / "r.xml"
    result = cli("compare", "dv_test_models:export_trap", "--input-shape", "x=1x3x16x16", "--backends", "torch,ort",
                 "--iterations", "1", "--junit", junit, "-q")
    assert result.code == 1, result.out + result.err
    suite = valid(junit)
    assert outcomes(suite)[("ort.fp32", "output_0")] == "failure" and totals(suite)["failures"] >= 1
    failure = suite.find("testcase/failure")
    assert failure.get("type") == "AccuracyFailure" and "exceed atol+rtol" in failure.get("message")
    assert "reproduce: deployval compare dv_test_models:export_trap --backends ort" in failure.text
    assert properties(suite)["verdict"] == "FAIL"


def test_error_and_skipped_rows_are_valid_and_never_green(cli, tmp_path):
    junit = tmp_path / "r.xml"
    result = cli("compare", "convs", "--backends", "torch,torchscript,ort", "--precisions", "fp32,int8",
                 "--iterations", "1", "--task", "dv_test_models:check_that_raises", "--judge", "norms",
                 "--junit", junit, "-q")
    assert result.code == 3, result.out + result.err
    suite = valid(junit)
    found = outcomes(suite)
    assert found[("torchscript.int8", "model")] == "skipped" and found[("torch.int8", "model")] == "skipped"
    assert found[("ort.fp32", "y")] == "error" and found[("ort.fp32", "task dv_test_models:check_that_raises")] \
        == "error"
    assert totals(suite)["skipped"] == 2 and totals(suite)["errors"] >= 3
    assert suite.find("testcase/error[@type='TaskCheckError']") is not None
    props = properties(suite)
    assert props["verdict"] == "INCOMPLETE" and props["torchscript.int8.status"] == "skipped"


def test_a_dataset_row_that_fails_on_a_later_sample_is_red(cli, tmp_path):
    """The first sample passes (the row's outputs say so); the 200x larger third fails the row, and so
    its case."""
    data = tmp_path / "set"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(data / f"s{i:02d}.npy", rng.standard_normal((1, 3, 32, 32)).astype(np.float32) * (200 if i == 2 else 1))
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    result = cli("compare", "convs", "--dataset", data, "--backends", "ort", "--precisions", "fp16", "--iterations",
                 "1", "--atol", "0.05", "--rtol", "0", "--json", report, "--junit", junit, "-q")
    assert result.code == 1, result.out + result.err
    [row] = json.loads(report.read_text())["results"]
    assert row["status"] == "fail" and row["outputs"][0]["passed"] is True
    suite = valid(junit)
    assert outcomes(suite)[("ort.fp16", "y")] == "failure"
    assert suite.find("testcase/failure").get("message").startswith("s02.npy: y: ")
    props = properties(suite)
    assert props["dataset.samples"] == "4" and props["ort.fp16.samples"] == "4" and props["verdict"] == "FAIL"


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """convs' inputs and outputs, scaled by 1.5 (every class kept, the norms far off) and with one
    position's class changed (the norms nearly the same)."""
    from deployval.cli import main

    root = tmp_path_factory.mktemp("junit-task")
    assert main(["compare", "convs", "--backends", "torch", "--iterations", "1", "--save-inputs",
                 str(root / "in.npz"), "--save-outputs", str(root / "gold.npz"), "-q"]) == 0
    with np.load(root / "gold.npz") as saved:
        gold = {k: saved[k].copy() for k in saved.files}
    np.savez(root / "scaled.npz", **{**gold, "y": gold["y"] * 1.5})
    y = gold["y"].copy()
    y[0, y[0, :, 5, 5].argmax(), 5, 5] = y[0, :, 5, 5].min() - 0.01
    np.savez(root / "relabelled.npz", **{**gold, "y": y})
    return root


@pytest.mark.parametrize("expected, judge, code", [
    ("scaled", "task", 0), ("scaled", "both", 1), ("relabelled", "task", 1), ("relabelled", "norms", 0)])
def test_junit_is_red_exactly_when_the_judge_fails_the_run(cli, golden, tmp_path, expected, judge, code):
    """Norms that fail under --judge task are said in system-out, not a failing case of a passing run."""
    junit = tmp_path / "r.xml"
    result = cli("compare", "convs", "--backends", "torch", "--iterations", "1", "--inputs", golden / "in.npz",
                 "--expected", golden / f"{expected}.npz", "--tolerance", "rel_l2=0.1", "--task",
                 "dv_test_models:same_top_class", "--judge", judge, "--junit", junit, "-q")
    assert result.code == code, result.out + result.err
    suite = valid(junit)
    counts = totals(suite)
    assert (counts["failures"] + counts["errors"] == 0) == (code == 0), ET.tostring(suite)[:2000]
    if expected == "scaled" and judge == "task":
        assert "rel_l2" in suite.findtext("system-out") and "judged by the task only" in suite.findtext("system-err")


def test_an_unfinished_run_and_its_merge_are_valid_and_never_green(cli, passing, tmp_path):
    from deployval.report.junit import to_junit

    data = json.loads((passing / "r.json").read_text())
    partial = copy.deepcopy(data)
    partial["complete"] = False
    partial["results"] = partial["results"][:1]  # only the reference ran
    partial["created"] = "2024-05-01T12:00:00+02:00"
    partial["warnings"] = ["a runtime wrote \x1b[31mred\x1b[0m and \x00 here"]  # not XML: must not break the file
    (tmp_path / "p.xml").write_bytes(to_junit(partial))
    suite = valid(tmp_path / "p.xml")
    assert suite.get("timestamp") == "2024-05-01T10:00:00"  # in UTC, without its zone
    assert outcomes(suite)[("convs.run", "complete")] == "error" and properties(suite)["verdict"] == "INCOMPLETE"
    assert "red" in suite.findtext("system-err")

    (tmp_path / "p.json").write_text(json.dumps(partial))
    result = cli("report", "merge", tmp_path / "p.json", "--junit", tmp_path / "m.xml")
    assert result.code == 3, result.out + result.err
    root = valid(tmp_path / "m.xml")
    assert root.tag == "testsuites" and not root.attrib
    assert [(s.get("id"), s.get("package") == s.get("name")) for s in root] == [
        (str(i), True) for i in range(len(root))]
    assert totals(root)["errors"] >= 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", root[-1].get("timestamp"))

"""JUnit XML: one test case per backend x precision x output, for CI dashboards. JUnit has no verdict
of its own, so work that did not happen is a failing case too: a run that did not finish, a row the
gate requires that is missing, a model of a suite that could not run, a missing shard. A dashboard
that reads only JUnit never sees all green for work that is incomplete."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._util import atomic_write_bytes
from ..results import NOTHING_JUDGED, UNFINISHED, Report, judge_dict
from .formatting import number, task_outcome_text


def _gap(suite: ET.Element, classname: str, name: str, message: str, counts: dict[str, int]) -> None:
    """A case for work that did not happen: an error (the check could not be made), not a failure."""
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
    ET.SubElement(case, "error", message=message, type="Incomplete")
    counts["tests"] += 1
    counts["errors"] += 1


def testsuite(data: Mapping[str, Any], name: str | None = None) -> ET.Element:
    """One <testsuite> for one report (a dict in the JSON report's format)."""
    name = name or f"deployval.{data['model'].get('name', 'model')}"
    suite = ET.Element("testsuite", name=name, timestamp=data.get("created", ""))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for result in data["results"]:
        classname = f"{name}.{result['backend']}.{result['precision']}"
        latency = result.get("latency") or {}
        seconds = (number(latency.get("median_ms")) or 0.0) / 1000.0
        for output in result["outputs"] or [None]:
            case = ET.SubElement(suite, "testcase", classname=classname,
                                 name=output["name"] if output else "model", time=f"{seconds:.6f}")
            counts["tests"] += 1
            if result["status"] == "skipped":
                ET.SubElement(case, "skipped", message=result["reason"])
                counts["skipped"] += 1
            elif result["status"] == "error":
                ET.SubElement(case, "error", message=result["reason"], type="BackendError")
                counts["errors"] += 1
            elif output is not None and not output["passed"]:
                failure = ET.SubElement(case, "failure", message=output["failures"][0], type="AccuracyFailure")
                failure.text = "\n".join(output["failures"])
                counts["failures"] += 1
            elif result["status"] == "fail" and output is None:
                ET.SubElement(case, "failure", message=result["reason"], type="AccuracyFailure")
                counts["failures"] += 1
            if output is not None and result["status"] != "reference":
                metrics = ", ".join(f"{k}={v}" for k, v in output["metrics"].items())
                tolerance = ", ".join(f"{k}={v}" for k, v in output["tolerance"].items())
                ET.SubElement(case, "system-out").text = (
                    f"tolerance: {tolerance}\n{metrics}\nreproduce: {result.get('reproduce')}")
            for warning in result.get("warnings", []):
                ET.SubElement(case, "system-err").text = warning
    mode = ((data.get("analysis") or {}).get("judge") or {}).get("mode", "norms")
    for result in data["results"]:
        task = result.get("task_check")
        if not task:
            continue
        case = ET.SubElement(suite, "testcase", classname=f"{name}.{result['backend']}.{result['precision']}",
                             name=f"task {task['check']}", time="0")
        counts["tests"] += 1
        if task.get("error"):
            ET.SubElement(case, "error", message=f"task check {task['check']}: {task['error']}", type="TaskCheckError")
            counts["errors"] += 1
        elif not task.get("passed") and mode in ("task", "both"):
            ET.SubElement(case, "failure", message=task.get("reason") or "task check failed", type="TaskFailure")
            counts["failures"] += 1
        ET.SubElement(case, "system-out").text = f"--judge {mode}: {task_outcome_text(task)}"
    verdict = judge_dict(data)
    if verdict.unfinished:
        _gap(suite, f"{name}.run", "complete", f"{UNFINISHED}: rows not in this report were not checked", counts)
    if verdict.nothing_judged:
        _gap(suite, f"{name}.run", "judged", NOTHING_JUDGED, counts)
    for label in verdict.missing:
        _gap(suite, f"{name}.{label.replace(':', '.')}", "gate", f"the gate requires {label}; it did not run",
             counts)
    if data.get("warnings"):  # the run's own (e.g. its NaN/Inf policy), after its cases
        ET.SubElement(suite, "system-err").text = "\n".join(data["warnings"])
    for key, value in counts.items():
        suite.set(key, str(value))
    return suite


def suite_gaps(suite: Mapping[str, Any]) -> ET.Element | None:
    """The suite's own failing cases: entries that could not run, a run that did not finish, missing shards."""
    element = ET.Element("testsuite", name="deployval.suite", timestamp=str(suite.get("created", "")))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for error in suite.get("errors") or []:
        _gap(element, f"deployval.{error.get('entry')}", "model", str(error.get("reason", "could not run")), counts)
    if suite.get("complete") is False:
        _gap(element, "deployval.suite", "complete", UNFINISHED, counts)
    missing = (suite.get("summary") or {}).get("missing_shards") or []
    for shard in missing:
        _gap(element, "deployval.suite", f"shard {shard}", f"shard {shard} is missing from the merge", counts)
    if not counts["tests"]:
        return None
    for key, value in counts.items():
        element.set(key, str(value))
    return element


def to_junit(reports: Report | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> bytes:
    """A single report gives one <testsuite>; several (a manifest run) a <testsuites> of them; a suite
    report (kind "suite") its models' plus one of its own gaps (entries that could not run, shards missing)."""
    if isinstance(reports, Report):
        reports = reports.to_dict()
    gaps = None
    if isinstance(reports, Mapping) and reports.get("kind") == "suite":
        gaps = suite_gaps(reports)
        reports = list(reports.get("reports") or [])
    if isinstance(reports, Mapping):
        root = testsuite(reports)
    else:
        root = ET.Element("testsuites", name="deployval")
        for data in reports:
            root.append(testsuite(data, name=f"deployval.{data.get('entry') or data['model'].get('name')}"))
        if gaps is not None:
            root.append(gaps)
        for key in ("tests", "failures", "errors", "skipped"):
            root.set(key, str(sum(int(s.get(key, 0)) for s in root)))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(report: Report | Mapping[str, Any] | Sequence[Mapping[str, Any]], path: Path) -> None:
    atomic_write_bytes(Path(path), to_junit(report))

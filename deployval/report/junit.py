"""JUnit XML: one test case per backend x precision x output, for CI dashboards."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .._util import atomic_write_bytes
from ..results import ERROR, FAIL, REFERENCE, SKIPPED, Report


def to_junit(report: Report, suite_name: str | None = None) -> bytes:
    name = suite_name or f"deployval.{report.model.get('name', 'model')}"
    suite = ET.Element("testsuite", name=name, timestamp=report.created)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for result in report.results:
        classname = f"{name}.{result.backend}.{result.precision}"
        cases = [(o.name, o) for o in result.outputs] or [("model", None)]
        for output_name, output in cases:
            seconds = result.latency.median_ms / 1000.0 if result.latency else 0.0
            case = ET.SubElement(suite, "testcase", classname=classname, name=output_name, time=f"{seconds:.6f}")
            counts["tests"] += 1
            if result.status == SKIPPED:
                ET.SubElement(case, "skipped", message=result.reason)
                counts["skipped"] += 1
            elif result.status == ERROR:
                ET.SubElement(case, "error", message=result.reason, type="BackendError")
                counts["errors"] += 1
            elif output is not None and not output.passed:
                failure = ET.SubElement(case, "failure", message=output.failures[0], type="AccuracyFailure")
                failure.text = "\n".join(output.failures)
                counts["failures"] += 1
            elif result.status == FAIL and output is None:
                ET.SubElement(case, "failure", message=result.reason, type="AccuracyFailure")
                counts["failures"] += 1
            if output is not None and result.status != REFERENCE:
                metrics = ", ".join(f"{k}={v:.4g}" for k, v in output.metrics.items() if isinstance(v, float))
                out = ET.SubElement(case, "system-out")
                out.text = f"tolerance: {output.tolerance.describe()}\n{metrics}\nreproduce: {result.reproduce}"
            for warning in result.warnings:
                ET.SubElement(case, "system-err").text = warning
    for key, value in counts.items():
        suite.set(key, str(value))
    ET.indent(suite)
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


def write_junit(report: Report, path: Path) -> None:
    atomic_write_bytes(Path(path), to_junit(report))

"""JUnit XML: one test case per backend x precision x output, for CI dashboards. JUnit has no verdict
of its own, so work that did not happen is a failing case too: a run that did not finish, a row the
gate requires that is missing, a model of a suite that could not run, a missing shard. A dashboard
that reads only JUnit never sees all green for work that is incomplete, nor red for a run that passed.

The XML is valid against the strict Apache Ant schema that Jenkins and other CI tools read
(tests/data/junit/JUnit.xsd): every suite has a hostname, a time, a timestamp without a time zone (UTC),
<properties> (the run's facts and each row's latency: test cases cannot hold properties), and one
system-out and one system-err (test cases cannot hold them either). A test case's time is the wall time
of its row's check, never its latency."""

from __future__ import annotations

import datetime as dt
import math
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._util import atomic_write_bytes
from ..errors import ExitCode
from ..judge.results import ERROR, FAIL, NOTHING_JUDGED, REFERENCE, SKIPPED, UNFINISHED, Report, judge_dict
from .formatting import number, task_outcome_text

LATENCY = ("median_ms", "mean_ms", "p90_ms", "p99_ms", "device_median_ms", "iterations", "throughput")
COUNTERS = {"failure": "failures", "error": "errors", "skipped": "skipped"}
ISOLATED = ("prepare", "correctness", "timing")  # row seconds spent inside its isolated process, if it had one
# What XML 1.0 cannot hold (control characters, lone surrogates): a runtime's message must not break the file.
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class SuiteBuilder:
    """One <testsuite>, gathered first and written in the order the schema requires: properties,
    test cases, system-out, system-err."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.properties: dict[str, str] = {}
        self.cases: list[ET.Element] = []
        self.case_seconds = 0.0
        self.out: list[str] = []
        self.err: list[str] = []
        self.counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}

    def prop(self, name: str, value: Any) -> None:
        """A property; None and '' are left out (the schema needs a value, and 'None' says nothing)."""
        if value is None or value == "" or value == []:
            return
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = f"{value:.6g}"
        elif isinstance(value, (list, tuple)):
            text = ",".join(map(str, value))
        else:
            text = str(value)
        self.properties[name] = text

    def case(self, classname: str, name: str, seconds: float, kind: str | None = None, message: str = "",
             kind_type: str = "", body: str = "") -> None:
        """A test case; `kind` is failure, error or skipped (at most one: the schema allows one)."""
        case = ET.Element("testcase", classname=classname, name=name, time=_time(seconds))
        if kind is not None:
            attributes = {"message": message} if kind == "skipped" else {"message": message, "type": kind_type}
            outcome = ET.SubElement(case, kind, attributes)
            if body:
                outcome.text = body
            self.counts[COUNTERS[kind]] += 1
        self.counts["tests"] += 1
        self.case_seconds += _finite(seconds)
        self.cases.append(case)

    def gap(self, classname: str, name: str, message: str) -> None:
        """A case for work that did not happen: an error (the check could not be made), not a failure."""
        self.case(classname, name, 0.0, "error", message, "Incomplete")

    @property
    def red(self) -> int:
        return self.counts["failures"] + self.counts["errors"]

    def element(self, timestamp: str, hostname: str, seconds: float | None = None) -> ET.Element:
        """The <testsuite>; its time is `seconds` (the run's wall time) or else the sum of its cases'."""
        suite = ET.Element("testsuite", name=self.name, timestamp=timestamp, hostname=hostname)
        for key, value in self.counts.items():
            suite.set(key, str(value))
        suite.set("time", _time(self.case_seconds if seconds is None else max(seconds, self.case_seconds)))
        properties = ET.SubElement(suite, "properties")
        for key, value in self.properties.items():
            ET.SubElement(properties, "property", name=key, value=value)
        suite.extend(self.cases)
        ET.SubElement(suite, "system-out").text = "\n".join(self.out)
        ET.SubElement(suite, "system-err").text = "\n".join(self.err)
        return suite


def _finite(value: Any) -> float:
    seconds = number(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds > 0 else 0.0


def _time(seconds: float) -> str:
    """An xs:decimal of seconds (no 'nan', no exponent)."""
    return f"{_finite(seconds):.6f}"


def junit_timestamp(created: Any) -> str:
    """A report's `created` as the schema's timestamp: UTC, to the second, without a time zone (which
    the schema's pattern does not allow). A report without one gets the time of writing."""
    moment = None
    if isinstance(created, str) and created:
        try:
            moment = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if moment is None:
        moment = dt.datetime.now(dt.timezone.utc)
    if moment.tzinfo is not None:  # a naive one is already UTC: deployval writes UTC
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def hostname(data: Mapping[str, Any]) -> str:
    """The host the report records, else this one (the schema's 'localhost' when even that is unknown)."""
    device = data.get("device")
    recorded = device.get("hostname") if isinstance(device, Mapping) else None
    if isinstance(recorded, str) and recorded.strip():
        return recorded.strip()
    try:
        return socket.gethostname().strip() or "localhost"
    except OSError:
        return "localhost"


def row_seconds(result: Mapping[str, Any]) -> float:
    """The wall time of a row's check, from what the row recorded: loading its artifact, the correctness
    run, the timed runs (or its own process, which held those three), the comparison and the task check.
    Building the artifact is the run's (its steps), and a data set's samples are timed for all rows at
    once, so neither is in it."""
    seconds = result.get("seconds")
    if not isinstance(seconds, Mapping):
        return 0.0
    isolated = "isolated_process" in seconds
    return sum(_finite(v) for k, v in seconds.items() if not (isolated and k in ISOLATED))


def _dataset_lines(result: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each output's failure lines over a data set's worst samples ('output: ...' lines), by sample."""
    summary = (result.get("details") or {}).get("dataset") or {}
    lines: dict[str, list[str]] = {}
    for sample in summary.get("worst") or []:
        for line in sample.get("failures") or []:
            name, sep, _ = str(line).partition(": ")
            if sep:
                lines.setdefault(name, []).append(f"{sample.get('sample')}: {line}")
    return lines


def _row_cases(builder: SuiteBuilder, name: str, result: Mapping[str, Any], mode: str) -> None:
    """A row's cases: one per output (or 'model' for a row without outputs), then its task check. The
    cases agree with the row's verdict: a row that passed has no failing case (norms that did not gate,
    e.g. under --judge task or --pass-fraction, are said in system-out), and a row that failed has at
    least one, on the outputs that failed, else on its task check, else on every output."""
    label = f"{result['backend']}.{result['precision']}"
    classname, status = f"{name}.{label}", result["status"]
    reason, reproduce = str(result.get("reason") or ""), result.get("reproduce")
    outputs = result.get("outputs") or []
    task = result.get("task_check") or None
    task_seconds = _finite((result.get("seconds") or {}).get("task_check")) if task else 0.0
    share = max(row_seconds(result) - task_seconds, 0.0) / max(len(outputs), 1)
    task_fails = bool(task) and not task.get("error") and not task.get("passed") and mode in ("task", "both")
    by_norms = status == FAIL and mode != "task"  # the row failed, and its outputs' norms gate it
    samples = _dataset_lines(result) if by_norms else {}
    culprits = {o["name"] for o in outputs if by_norms and (not o["passed"] or o["name"] in samples)}
    every = status == FAIL and not culprits and not task_fails  # the row failed on something else
    for output in outputs or [None]:
        case = output["name"] if output else "model"
        if status == SKIPPED:
            builder.case(classname, case, share, "skipped", reason)
        elif status == ERROR:
            builder.case(classname, case, share, "error", reason, "BackendError", f"reproduce: {reproduce}")
        elif output is None or output["name"] not in culprits:
            if status == FAIL and (output is None or every):
                builder.case(classname, case, share, "failure", reason, "AccuracyFailure",
                             f"{reason}\nreproduce: {reproduce}")
            else:
                builder.case(classname, case, share)
        else:
            lines = list(output["failures"]) + samples.get(output["name"], [])
            builder.case(classname, case, share, "failure", lines[0] if lines else reason, "AccuracyFailure",
                         "\n".join([*lines, f"reproduce: {reproduce}"]))
        if output is not None and status != REFERENCE:
            metrics = ", ".join(f"{k}={v}" for k, v in output["metrics"].items())
            tolerance = ", ".join(f"{k}={v}" for k, v in output["tolerance"].items())
            builder.out += [f"{classname}.{case}: tolerance: {tolerance}", f"{classname}.{case}: {metrics}"]
            builder.out += [f"{classname}.{case}: {line}" for line in output.get("failures") or []
                            if output["name"] not in culprits]  # norms that did not gate are still said
            builder.out.append(f"{classname}.{case}: reproduce: {reproduce}")
    builder.err += [f"{classname}: {warning}" for warning in result.get("warnings") or []]
    if task:
        case = f"task {task['check']}"
        if task.get("error"):
            builder.case(classname, case, task_seconds, "error", f"task check {task['check']}: {task['error']}",
                         "TaskCheckError")
        elif task_fails:
            builder.case(classname, case, task_seconds, "failure", task.get("reason") or "task check failed",
                         "TaskFailure")
        else:
            builder.case(classname, case, task_seconds)
        builder.out.append(f"{classname}.{case}: --judge {mode}: {task_outcome_text(task)}")


def _row_properties(builder: SuiteBuilder, result: Mapping[str, Any]) -> None:
    """A row's status, wall time and latency, keyed by its label (e.g. ort.fp16.latency_median_ms)."""
    label = f"{result['backend']}.{result['precision']}"
    builder.prop(f"{label}.status", result["status"])
    builder.prop(f"{label}.wall_s", round(row_seconds(result), 6))
    if result.get("samples", 1) != 1:
        builder.prop(f"{label}.samples", result.get("samples"))
    latency = result.get("latency")
    for key in LATENCY if isinstance(latency, Mapping) else ():
        builder.prop(f"{label}.latency_{key}", latency.get(key))


def _run_properties(builder: SuiteBuilder, data: Mapping[str, Any], verdict_text: str, why: str,
                    mode: str) -> None:
    """What the run was: the facts a dashboard shows beside the cases."""
    model = data.get("model") or {}
    device = data.get("device") or {}
    versions = data.get("versions") or {}
    timings = data.get("timings") or {}
    dataset = (data.get("analysis") or {}).get("dataset") or {}
    builder.prop("deployval.version", versions.get("deployval"))
    for key, value in (("verdict", verdict_text), ("incomplete", why), ("complete", data.get("complete") is True),
                       ("created", data.get("created")), ("command", data.get("command")),
                       ("model", model.get("name")), ("model.kind", model.get("kind")),
                       ("model.sha256", model.get("sha256")), ("entry", data.get("entry")),
                       ("gate", data.get("gate")), ("judge", mode), ("seed", data.get("seed")),
                       ("inputs_source", data.get("inputs_source")), ("samples", data.get("samples")),
                       ("device", device.get("device")), ("device.platform", device.get("platform")),
                       ("device.cpu", device.get("cpu")), ("device.gpu", device.get("gpu")),
                       ("timings.total_s", number(timings.get("total_s")) if "total_s" in timings else None)):
        builder.prop(key, value)
    for key in ("samples", "seconds", "complete"):
        builder.prop(f"dataset.{key}", dataset.get(key))
    for library, version in versions.items():
        if library != "deployval":
            builder.prop(f"versions.{library}", version)


def testsuite(data: Mapping[str, Any], name: str | None = None) -> ET.Element:
    """One <testsuite> for one report (a dict in the JSON report's format)."""
    name = name or f"deployval.{data['model'].get('name', 'model')}"
    builder = SuiteBuilder(name)
    mode = ((data.get("analysis") or {}).get("judge") or {}).get("mode", "norms")
    verdict = judge_dict(data)
    _run_properties(builder, data, verdict.verdict, verdict.incomplete, mode)
    for result in data["results"]:
        _row_properties(builder, result)
    for result in data["results"]:
        _row_cases(builder, name, result, mode)
    if verdict.unfinished:
        builder.gap(f"{name}.run", "complete", f"{UNFINISHED}: rows not in this report were not checked")
    if verdict.nothing_judged:
        builder.gap(f"{name}.run", "judged", NOTHING_JUDGED)
    for label in verdict.missing:
        builder.gap(f"{name}.{label.replace(':', '.')}", "gate", f"the gate requires {label}; it did not run")
    if verdict.exit_code != ExitCode.OK and not builder.red:  # never green for a run that is not PASS
        builder.gap(f"{name}.run", "verdict", f"the run's verdict is {verdict.verdict}: {verdict.incomplete or '-'}")
    builder.err += list(data.get("warnings") or [])  # the run's own (e.g. its NaN/Inf policy), after the rows'
    seconds = number((data.get("timings") or {}).get("total_s"))
    return builder.element(junit_timestamp(data.get("created")), hostname(data), seconds)


def suite_gaps(suite: Mapping[str, Any]) -> ET.Element | None:
    """The suite's own failing cases: entries that could not run, a run that did not finish, missing shards."""
    builder = SuiteBuilder("deployval.run.suite")
    for error in suite.get("errors") or []:
        builder.gap(f"deployval.{error.get('entry')}", "model", str(error.get("reason", "could not run")))
    if suite.get("complete") is False:
        builder.gap("deployval.run.suite", "complete", UNFINISHED)
    summary = suite.get("summary") or {}
    for shard in summary.get("missing_shards") or []:
        builder.gap("deployval.run.suite", f"shard {shard}", f"shard {shard} is missing from the merge")
    if not builder.counts["tests"]:
        return None
    for key in ("verdict", "incomplete", "complete", "created", "manifest", "manifest_sha256", "shard", "shards"):
        builder.prop(key, summary.get(key) if key in ("verdict", "incomplete") else suite.get(key))
    return builder.element(junit_timestamp(suite.get("created")), hostname(suite))


def _clean(root: ET.Element) -> None:
    """Replace what XML 1.0 cannot hold (e.g. a terminal escape in a runtime's message) in every text
    and attribute, so the file still parses."""
    for element in root.iter():
        if element.text:
            element.text = NOT_XML.sub("\ufffd", element.text)
        for key, value in element.attrib.items():
            element.set(key, NOT_XML.sub("\ufffd", value))


def to_junit(reports: Report | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> bytes:
    """A single report gives one <testsuite>; several (a manifest run) a <testsuites> of them; a suite
    report (kind "suite") its models' plus one of its own gaps (entries that could not run, shards missing).
    The schema gives <testsuites> no attributes (readers add up its suites) and each of its suites a
    `package` (the suite's name) and an `id` (its index)."""
    if isinstance(reports, Report):
        reports = reports.to_dict()
    gaps = None
    if isinstance(reports, Mapping) and reports.get("kind") == "suite":
        gaps = suite_gaps(reports)
        reports = list(reports.get("reports") or [])
    if isinstance(reports, Mapping):
        root = testsuite(reports)
    else:
        root = ET.Element("testsuites")
        for data in reports:
            root.append(testsuite(data, name=f"deployval.{data.get('entry') or data['model'].get('name')}"))
        if gaps is not None:
            root.append(gaps)
        for index, suite in enumerate(root):
            suite.set("package", suite.get("name", ""))
            suite.set("id", str(index))
    _clean(root)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(report: Report | Mapping[str, Any] | Sequence[Mapping[str, Any]], path: Path) -> None:
    atomic_write_bytes(Path(path), to_junit(report))

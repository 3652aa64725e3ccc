"""Markdown summary, e.g. for a pull-request comment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._util import atomic_write_text
from ..judge.results import UNFINISHED, Report, judge_dict
from ..model.spec import format_shape
from .formatting import fmt, fmt_ms, judge_text, mean_column, number, status_text, task_outcome_text, task_summary


def report_table(data: Mapping[str, Any]) -> list[str]:
    lines = [
        "| backend | precision | status | output | max abs | mean abs | rel L2 | task | median ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in data["results"]:
        latency = fmt_ms(number((r.get("latency") or {}).get("median_ms")))
        status = status_text(r["status"], r.get("faithful", True))
        if not r["outputs"]:
            lines.append(f"| {r['backend']} | {r['precision']} | {status} | - | - | - | - | - | {latency} |")
            continue
        for o in r["outputs"]:
            m = o["metrics"]
            lines.append(
                f"| {r['backend']} | {r['precision']} | {status} | {o['name']} | {fmt(m.get('max_abs'))} | "
                f"{mean_column(m)} | {fmt(m.get('rel_l2'))} | {task_summary(o['task'])} | {latency} |"
            )
    notes = [f"- **{r['backend']}:{r['precision']}**: {r['reason']}" for r in data["results"]
             if r["reason"] and r["status"] != "reference"]
    notes += [f"- {r['backend']}:{r['precision']}: {w}" for r in data["results"] for w in r.get("warnings", [])]
    notes += [line for r in data["results"] for line in _fp16_weight_notes(r)]
    notes += [f"- {w}" for w in data.get("warnings", [])]  # the run's own (e.g. its NaN/Inf policy)
    if notes:
        lines += ["", *notes]
    if any(not r.get("faithful", True) for r in data["results"]):
        lines += ["", "\\* not faithful to the precision's arithmetic (see notes)."]
    failing = [r["reproduce"] for r in data["results"] if r["status"] in ("fail", "error") and r.get("reproduce")]
    if failing:
        lines += ["", "Reproduce:", "", "```", *failing, "```"]
    return lines


def _fp16_weight_notes(row: Mapping[str, Any], limit: int = 5) -> list[str]:
    """The weights the row's fp16 cannot hold (precision/weight_ranges.py), the first few; the rest counted."""
    found = (row.get("details") or {}).get("fp16_weights") or []
    label = f"{row['backend']}:{row['precision']}"
    notes = [f"- {label}: fp16 weights: {f.get('finding')}" for f in found[:limit]]
    if len(found) > limit:
        notes.append(f"- {label}: fp16 weights: {len(found) - limit} more tensors in the JSON report")
    return notes


def to_markdown(report: Report | Mapping[str, Any]) -> str:
    """The verdict (recomputed from the rows, gate and completeness; an unfinished run reads INCOMPLETE
    with its reason), then the table."""
    data = report.to_dict() if isinstance(report, Report) else report
    verdict = judge_dict(data)
    inputs = ", ".join(f"`{i['name']}` {format_shape(i['shape'])} {i['dtype']}" for i in data["inputs"])
    device = data["device"]
    judged_by = judge_text(data.get("analysis"))
    lines = [
        f"## deployval: {data['model'].get('name')} — {verdict.verdict} (exit {int(verdict.exit_code)})",
        "",
        *([f"**Incomplete:** {verdict.gap}.", ""] if verdict.gap else []),
        f"Inputs: {inputs} ({data['inputs_source']}); device: {device.get('device')}"
        f" ({device.get('gpu') or device.get('cpu')})",
        *([f"Judged against the expected outputs `{data['analysis']['expected_outputs']['path']}`."]
          if "expected_outputs" in data.get("analysis", {}) else []),
        *([f"{judged_by.capitalize()}."] if judged_by else []),
        *[f"- task {r['backend']}:{r['precision']}: {task_outcome_text(r['task_check'])}"
          for r in data["results"] if r.get("task_check")],
        "",
        *report_table(data),
    ]
    return "\n".join(lines) + "\n"


def suite_markdown(suite: Mapping[str, Any], reports: Sequence[Mapping[str, Any]]) -> str:
    """The summary of a manifest run: one line per model, then each model's table folded away."""
    summary = suite["summary"]
    lines = [
        f"## deployval release gate — {summary['verdict']} (exit {summary['exit_code']})",
        "",
        f"{summary['models']} model{'' if summary['models'] == 1 else 's'}; checks: "
        + ", ".join(f"{v} {k}" for k, v in summary["counts"].items()),
        "",
        *([f"**Incomplete:** {summary['incomplete']}.", ""] if summary.get("incomplete") else []),
        *([f"Shards missing (allowed): {', '.join(summary['missing_shards'])}.", ""]
          if summary.get("missing_shards_allowed") else []),
        "| model | verdict | failed or not run |",
        "| --- | --- | --- |",
    ]
    for data in reports:
        judged = judge_dict(data)
        bad = [f"{r['backend']}:{r['precision']}" for r in data["results"] if r["status"] in ("fail", "error")]
        bad += ([UNFINISHED] if judged.unfinished else []) + [f"{g} (gate, did not run)" for g in judged.missing]
        bad += ["nothing judged"] if judged.nothing_judged else []
        lines.append(f"| {data.get('entry') or data['model']['name']} | {judged.verdict} | "
                     f"{', '.join(bad) or '-'} |")
    for error in suite.get("errors", []):
        lines.append(f"| {error['entry']} | ERROR | {error['reason']} |")
    for data in reports:
        name = data.get("entry") or data["model"]["name"]
        lines += ["", f"<details><summary>{name}: {judge_dict(data).verdict}</summary>", "", *report_table(data),
                  "", "</details>"]
    return "\n".join(lines) + "\n"


def write_markdown(report: Report | Mapping[str, Any], path: Path) -> None:
    atomic_write_text(Path(path), to_markdown(report))

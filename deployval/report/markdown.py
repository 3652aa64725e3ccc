"""Markdown summary, e.g. for a pull-request comment."""

from __future__ import annotations

from pathlib import Path

from .._util import atomic_write_text
from ..results import Report
from ..spec import format_shape
from .formatting import fmt, fmt_ms, status_text, task_summary


def to_markdown(report: Report) -> str:
    model = report.model
    inputs = ", ".join(f"`{i['name']}` {format_shape(i['shape'])} {i['dtype']}" for i in report.inputs)
    lines = [
        f"## deployval: {model.get('name')} — {report.verdict} (exit {int(report.exit_code)})",
        "",
        f"Inputs: {inputs} ({report.inputs_source}); device: {report.device.get('device')}"
        f" ({report.device.get('gpu') or report.device.get('cpu')})",
        "",
        "| backend | precision | status | output | max abs | mean abs | rel L2 | task | median ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.results:
        latency = fmt_ms(r.latency.median_ms) if r.latency else "-"
        if not r.outputs:
            lines.append(f"| {r.backend} | {r.precision} | {status_text(r)} | - | - | - | - | - | {latency} |")
            continue
        for o in r.outputs:
            m = o.metrics
            mismatch = f"{m['mismatch']:.3%} differ" if "mismatch" in m else None
            lines.append(
                f"| {r.backend} | {r.precision} | {status_text(r)} | {o.name} | {fmt(m.get('max_abs'))} | "
                f"{mismatch or fmt(m.get('mean_abs'))} | {fmt(m.get('rel_l2'))} | {task_summary(o.task)} | "
                f"{latency} |"
            )
    notes = [f"- **{r.label}**: {r.reason}" for r in report.results if r.reason and r.status not in ("reference",)]
    notes += [f"- {r.label}: {w}" for r in report.results for w in r.warnings]
    if notes:
        lines += ["", *notes]
    if any(not r.faithful for r in report.results):
        lines += ["", "\\* not faithful to the precision's arithmetic (see notes)."]
    failing = [r for r in report.results if r.status in ("fail", "error") and r.reproduce]
    if failing:
        lines += ["", "Reproduce:", "", "```", *(r.reproduce or "" for r in failing), "```"]
    return "\n".join(lines) + "\n"


def write_markdown(report: Report, path: Path) -> None:
    atomic_write_text(Path(path), to_markdown(report))

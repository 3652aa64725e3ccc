"""What `debug` found: one row per layer (module call, mark, final output) in execution order, the
first divergent layer, where the error is new, and the triage verdict; JSON and console forms."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._util import IMPORT_SECONDS
from ..errors import ExitCode
from ..judge.record import RunRecord
from ..metric_table import COSINE, MAX_ABS, MEAN_ABS, REL_L2

UNFINISHED = "the run did not finish"  # as results.UNFINISHED (not imported: this module stays light)

# Row statuses: compared and within tolerance / beyond it; not compared, and why.
PASS, FAIL, UNMAPPED, VANISHED, SKIPPED = "pass", "fail", "unmapped", "vanished", "skipped"

NEW_VS_INHERITED = (
    "new = the layer's own error: its ONNX sub-graph, cut out of the debugged artifact between the "
    "tensors of its inputs and its output, run on the same backend with the *reference* (eager) inputs; "
    "inherited = what the layer receives already wrong from upstream. 'new' is own rel L2 / total rel L2, "
    "capped at 100%."
)


@dataclass
class LayerResult:
    index: int
    label: str
    kind: str  # module | mark | output
    type: str
    tensor: str | None = None  # the tensor in the debugged ONNX artifact
    shape: list[int] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    own_ops: list[str] = field(default_factory=list)
    status: str = SKIPPED
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    own: dict[str, Any] | None = None  # {"metrics", "passed", "failures", "region_nodes"} or {"unavailable"}
    ancestors: list[str] = field(default_factory=list)
    histogram: dict[str, Any] | None = None

    @property
    def compared(self) -> bool:
        return self.status in (PASS, FAIL)

    @property
    def new_share(self) -> float | None:
        if not self.own or "metrics" not in self.own or not self.compared:
            return None
        total = self.metrics.get(REL_L2, 0.0)
        own = self.own["metrics"].get(REL_L2, 0.0)
        if total == 0.0 or not math.isfinite(total):
            return 0.0 if own == 0.0 else 1.0
        return min(1.0, own / total)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "label": self.label, "kind": self.kind, "type": self.type, "tensor": self.tensor,
            "shape": self.shape, "ops": self.ops, "own_ops": self.own_ops, "status": self.status,
            "reason": self.reason, "metrics": self.metrics, "tolerance": self.tolerance, "failures": self.failures,
            "own": self.own, "new_share": self.new_share, "ancestors": self.ancestors, "histogram": self.histogram,
        }


@dataclass
class Localization:
    """Where the error is new: a layer, a container's own code, or code outside every module."""

    label: str
    # layer | mark | module-code (a container's own code) | model-code (outside modules) | accumulated | jump
    kind: str
    explanation: str
    ops: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "kind": self.kind, "explanation": self.explanation, "ops": self.ops}


@dataclass
class Triage:
    """A third opinion from onnx.reference on the region where the error is new."""

    verdict: str  # export | runtime | both | inconclusive | skipped
    layer: str
    explanation: str
    backend_vs_eager: dict[str, float] = field(default_factory=dict)
    reference_vs_eager: dict[str, float] = field(default_factory=dict)
    reference_vs_backend: dict[str, float] = field(default_factory=dict)
    region_nodes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "layer": self.layer, "explanation": self.explanation,
                "backend_vs_eager": self.backend_vs_eager, "reference_vs_eager": self.reference_vs_eager,
                "reference_vs_backend": self.reference_vs_backend, "region_nodes": self.region_nodes,
                "seconds": round(self.seconds, 3)}


@dataclass(kw_only=True)
class DebugReport(RunRecord):
    """Per-layer findings of one backend at one precision, after the run record's header."""

    backend: str
    precision: str
    artifact: dict[str, Any] = field(default_factory=dict)
    exporter: str = ""
    map_source: str = ""
    layers: list[LayerResult] = field(default_factory=list)
    first_divergent: str | None = None
    localized: Localization | None = None
    triage: Triage | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    steps: list[Any] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    faithful: bool = True
    repro: dict[str, Any] | None = None  # --repro: what was written where, or why nothing was
    model_explorer: dict[str, Any] | None = None  # --model-explorer: the node data files written

    def __bool__(self) -> bool:
        return self.exit_code == ExitCode.OK

    @property
    def exit_code(self) -> ExitCode:
        """3 while the report is not complete (the layers not yet compared could diverge), else 1 when a
        layer or an output exceeds its tolerance, else 0."""
        if not self.complete:
            return ExitCode.BACKEND
        return ExitCode.ACCURACY if any(r.status == FAIL for r in self.layers) else ExitCode.OK

    @property
    def verdict(self) -> str:
        return {ExitCode.OK: "PASS", ExitCode.ACCURACY: "FAIL"}.get(self.exit_code, "INCOMPLETE")

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"verdict": self.verdict, "exit_code": int(self.exit_code), "counts": self.counts()}
        if not self.complete:
            summary["incomplete"] = UNFINISHED
        return summary

    def layer(self, label: str) -> LayerResult:
        for row in self.layers:
            if row.label == label:
                return row
        raise KeyError(label)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.layers:
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.record_dict(kind="debug"),
            "backend": self.backend,
            "precision": self.precision,
            "faithful": self.faithful,
            "artifact": self.artifact,
            "exporter": self.exporter,
            "map_source": self.map_source,
            "new_vs_inherited": NEW_VS_INHERITED,
            "layers": [r.to_dict() for r in self.layers],
            "first_divergent": self.first_divergent,
            "localized": self.localized.to_dict() if self.localized else None,
            "triage": self.triage.to_dict() if self.triage else None,
            "memory": self.memory,
            "notes": self.notes,
            "warnings": self.warnings,
            "steps": [s.to_dict() if hasattr(s, "to_dict") else s for s in self.steps],
            "timings": self.timings,
            "repro": self.repro,
            "model_explorer": self.model_explorer,
            "summary": self.summary(),
        }


# ----------------------------------------------------------------------------- console


@contextmanager
def debugging(report: DebugReport, store: Any, timings: dict[str, Any], started: float) -> Iterator[Path]:
    """The ending both debuggers (PyTorch model, ONNX file) share, around their work: yields a scratch
    directory; then, also after an error, records the artifact steps in the report, closes the artifact
    store (an ArtifactStore) and removes the directory; after success, records the timings (since
    perf_counter() `started`) and marks the report complete."""
    workdir = tempfile.TemporaryDirectory(prefix="deployval-debug-")
    try:
        yield Path(workdir.name)
    finally:
        report.steps = list(store.steps)
        store.close()
        workdir.cleanup()
    timings["imports_s"] = dict(IMPORT_SECONDS)
    timings["total_s"] = time.perf_counter() - started
    report.timings = timings
    report.complete = True


def _ops(row: LayerResult, limit: int = 3) -> str:
    ops = row.own_ops if row.kind == "module" and row.own_ops else row.ops
    text = ",".join(ops[:limit])
    return text + ("…" if len(ops) > limit else "") if text else "-"


def render_debug(report: DebugReport, console: Any | None = None) -> None:
    """The per-layer table in execution order, then the first divergent layer, where the error is
    new, and the triage verdict."""
    from rich.markup import escape
    from rich.table import Table

    from ..model.spec import format_shape
    from ..report.console import make_console
    from ..report.formatting import fmt

    console = console or make_console()
    inputs = ", ".join(f"{i['name']} {format_shape(i['shape'])} {i['dtype']}" for i in report.inputs)
    title = (f"debug {report.model.get('name')} on {report.backend}:{report.precision} "
             f"({report.device.get('device')}) — inputs {inputs}, {report.inputs_source}")
    table = Table(title=title, title_justify="left")
    for column, justify in (("#", "right"), ("layer", "left"), ("type", "left"), ("ops", "left"),
                            ("max abs", "right"), ("mean abs", "right"), ("rel L2", "right"), ("cosine", "right"),
                            ("new", "right"), ("status", "left")):
        table.add_column(column, justify=justify, no_wrap=column not in ("layer", "ops"))
    styles = {PASS: "green", FAIL: "bold red", UNMAPPED: "dim", VANISHED: "dim", SKIPPED: "dim"}
    for row in report.layers:
        m = row.metrics
        share = row.new_share
        new = "-" if share is None else f"{share:.0%}"
        status = row.status.upper() if row.compared else row.status
        if row.label == report.first_divergent:
            status += " ← first"
        if report.localized is not None and row.label == report.localized.label and row.label != report.first_divergent:
            status += " ← new here"
        cosine = "-" if COSINE not in m else f"{m[COSINE]:.6f}"
        label = escape(row.label if row.kind != "output" else f"[output] {row.label}")
        table.add_row(str(row.index), label, row.type, _ops(row), fmt(m.get(MAX_ABS)), fmt(m.get(MEAN_ABS)),
                      fmt(m.get(REL_L2)), cosine, new, f"[{styles.get(row.status, '')}]{status}[/]")
    console.print(table)
    skipped = [r for r in report.layers if not r.compared]
    reasons: dict[str, list[str]] = {}
    for row in skipped:
        reasons.setdefault(row.reason or row.status, []).append(row.label)
    for reason, labels in reasons.items():
        shown = ", ".join(labels[:6]) + (f" (+{len(labels) - 6} more)" if len(labels) > 6 else "")
        console.print(f"[dim]not compared: {shown}: {reason}[/]")
    console.print(f"[dim]layer map: {report.map_source}; artifact {report.artifact.get('kind')}; "
                  f"{report.memory.get('mode', '')}[/]")
    if report.first_divergent is None:
        console.print("[green]no layer exceeds its tolerance[/]")
    else:
        first = report.layer(report.first_divergent)
        console.print(f"[bold red]first divergent layer:[/] {first.label} ({first.type}): "
                      f"{'; '.join(first.failures[:2])}")
        if report.localized is not None:
            where = "where it shows" if report.localized.kind == "jump" else "the error is new in"
            console.print(f"[bold]{where}:[/] {report.localized.label} — {report.localized.explanation}")
        if report.triage is not None:
            style = "yellow" if report.triage.verdict in ("skipped", "inconclusive") else "bold"
            console.print(f"[{style}]triage: {report.triage.verdict}[/] — {report.triage.explanation}")
    if report.repro is not None:
        repro = report.repro
        nodes = f"{repro.get('nodes')} node{'s' if repro.get('nodes') != 1 else ''}"
        console.print(f"[bold]repro:[/] {escape(repro['directory'])} ({escape(repro['layer'])}, {nodes}): "
                      f"{escape(repro['command'])}" if repro.get("written")
                      else f"[dim]repro:[/] {escape(repro['reason'])}")
    if report.model_explorer is not None:
        explorer = report.model_explorer
        console.print(f"[bold]model explorer:[/] {escape(explorer['open'])}" if "open" in explorer
                      else f"[yellow]model explorer:[/] {escape(explorer.get('reason', ''))}")
    for note in report.notes:
        console.print(f"[dim]note:[/] {note}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    counts = ", ".join(f"{v} {k}" for k, v in report.counts().items())
    style = "green" if report.exit_code == 0 else "red"
    why = f"; {UNFINISHED}" if not report.complete else ""
    console.print(f"[{style}]{report.verdict}[/] ({counts}{why}) exit code {int(report.exit_code)}", soft_wrap=True)

"""The console: a progress display on stderr while work runs, a rich table on stdout at the end."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import print_error  # noqa: F401 (re-exported)
from ..judge.results import UNFINISHED, Report, judge_dict, row_counts
from ..model.spec import format_shape
from ..progress import Progress, Step
from .formatting import (
    fmt,
    fmt_ms,
    judge_text,
    mean_column,
    memory_text,
    status_text,
    task_outcome_text,
    task_summary,
)

STATUS_STYLES = {"pass": "green", "fail": "bold red", "error": "red", "skipped": "dim", "reference": "cyan",
                 "ok": "green"}


def make_console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # logs and pipes: keep the table readable instead of 80 columns
    return console


class ConsoleProgress(Progress):
    """A spinner per step on a terminal; one line per finished step otherwise (CI logs)."""

    def __init__(self) -> None:
        self.console = make_console(stderr=True)
        self.interactive = self.console.is_terminal
        self.where = ""  # "row 2 of 5: " inside a numbered part

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        description = self.where + description
        start = time.perf_counter()
        ok = False
        try:
            if self.interactive:  # a spinner with the time so far: a long step shows it is alive
                from rich.progress import Progress as Live
                from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

                with Live(SpinnerColumn("dots"), TextColumn("{task.description} …"), TimeElapsedColumn(),
                          console=self.console, transient=True) as live:
                    live.add_task(description, total=None)
                    yield
            else:
                yield
            ok = True
        finally:
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self.console.print(f"{mark} {description} [dim]({time.perf_counter() - start:.1f} s)[/]")

    @contextmanager
    def part(self, index: int, total: int) -> Iterator[None]:
        outer, self.where = self.where, f"row {index} of {total}: "
        try:
            yield
        finally:
            self.where = outer

    def note(self, message: str) -> None:
        self.console.print(f"[yellow]![/] {message}")


def render(report: Report, console: Any | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = console or make_console()
    model = report.model
    inputs = ", ".join(f"{i['name']} {format_shape(i['shape'])} {i['dtype']}" for i in report.inputs)
    title = f"{model.get('name')} on {report.device.get('device')} — inputs {inputs}, {report.inputs_source}"
    if "expected_outputs" in report.analysis:
        title += f"; judged against the expected outputs {report.analysis['expected_outputs']['path']}"
    dataset = report.analysis.get("dataset")
    if dataset and report.samples > 1:
        source = (f"data set {dataset['directory']}" if "directory" in dataset else
                  f"shape grid {'; '.join(dataset.get('shape_grid', []))}")
        title = (f"{model.get('name')} on {report.device.get('device')} — {source} ({report.samples} inputs; "
                 "error columns: the worst)")
    table = Table(title=title, title_justify="left", show_lines=False)
    for column, justify in (("backend", "left"), ("precision", "left"), ("status", "left"), ("output", "left"),
                            ("max abs", "right"), ("mean abs", "right"), ("rel L2", "right"), ("task", "left"),
                            ("median ms", "right"), ("runs", "right"), ("mem MB", "right")):
        table.add_column(column, justify=justify, no_wrap=column not in ("task",))
    for result in report.results:
        style = STATUS_STYLES.get(result.status, "")
        latency = fmt_ms(result.latency.median_ms) if result.latency else "-"
        runs = str(result.latency.iterations) if result.latency else "-"
        memory = memory_text(result.details.get("memory"))
        status = f"[{style}]{status_text(result.status, result.faithful)}[/]"
        if not result.outputs:
            table.add_row(result.backend, result.precision, status, "-", "-", "-", "-", "-", latency, runs,
                          memory if result.latency else "-")
            continue
        over_samples = result.details.get("dataset", {}).get("outputs", {})
        for index, output in enumerate(result.outputs):
            m = output.metrics
            if output.name in over_samples:  # the worst sample's value of each column
                m = {**m, **{k: v["worst"] for k, v in over_samples[output.name].items()}}
            mean = mean_column(m)
            out_style = "" if output.passed or result.status == "reference" else "red"
            table.add_row(
                result.backend if index == 0 else "", result.precision if index == 0 else "",
                status if index == 0 else "", f"[{out_style}]{output.name}[/]" if out_style else output.name,
                fmt(m.get("max_abs")), mean, fmt(m.get("rel_l2")), task_summary(output.task),
                latency if index == 0 else "", runs if index == 0 else "", memory if index == 0 else "",
            )
    console.print(table)
    _render_steps(report.steps, console)
    _render_task(report, console)
    for result in report.results:
        if result.status in ("fail", "error", "skipped") and result.reason:
            style = STATUS_STYLES.get(result.status, "")
            console.print(f"[{style}]{result.label}[/] {result.status}: {result.reason}")
            if result.status == "fail":
                for output in result.outputs:
                    if not output.passed:
                        console.print(f"    {output.name}: tolerance {_tolerance_text(output)}; "
                                      f"would pass at {_min_passing(output.min_passing)}")
        for warning in result.warnings:
            console.print(f"[yellow]{result.label}[/] {'* ' if not result.faithful else ''}{warning}")
        _render_fp16_weights(result.label, result.details.get("fp16_weights") or [], console)
    if dataset:
        _render_samples(report, dataset, console)
    repeat = report.analysis.get("reference_repeat")
    if repeat and repeat["identical"] and all(r.details.get("repeat", {}).get("identical", True) and
                                              r.details.get("repeat", {}).get("builds_identical", True)
                                              for r in report.results):
        console.print(f"repeat: {repeat['runs']} runs of the reference and of every row gave identical outputs")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    failing = [r for r in report.results if r.status in ("fail", "error") and r.reproduce]
    for result in failing:
        console.print(f"[dim]reproduce {result.label}: {result.reproduce}[/]")
    if report.analysis.get("saved_inputs"):
        console.print(f"inputs saved to {escape(report.analysis['saved_inputs'])} (replay with --inputs)")
    if report.analysis.get("saved_outputs"):
        path = report.analysis["saved_outputs"]
        console.print(f"reference outputs saved to {escape(path)} (judge later with --expected {escape(path)})")
    verdict = report.judged()
    style = "green" if verdict.exit_code == 0 else "red"
    summary = ", ".join(f"{v} {k}" for k, v in row_counts([r.status for r in report.results]).items())
    why = f"; {verdict.gap}" if verdict.gap else ""
    if not why and report.analysis.get("saved_outputs") and all(r.status in ("reference", "skipped")
                                                                 for r in report.results):
        why = f"; nothing judged: the reference's outputs were saved to {report.analysis['saved_outputs']}"
    console.print(f"[{style}]{verdict.verdict}[/] ({escape(summary + why)}) exit code {int(verdict.exit_code)}",
                  soft_wrap=True)  # one line, however long: pipelines read the verdict from it


def _render_samples(report: Report, dataset: dict[str, Any], console: Any) -> None:
    """Per judged row: how many samples failed and the worst one; the samples left out and why."""
    for result in report.results:
        summary = result.details.get("dataset")
        if summary and summary.get("worst") and summary["samples"] > 1:
            worst = summary["worst"][0]
            labels = summary.get("labels")
            scored = "" if not labels else "; against the labels " + ", ".join(
                f"{name} {value:.2%} (reference {labels['reference'].get(name, float('nan')):.2%})"
                for name, value in labels["scores"].items())
            console.print(f"{result.label}: {summary['samples']} inputs, {summary['failed']} fail; worst "
                          f"{worst['sample']} (rel L2 {fmt(worst['rel_l2'])}){scored}")
        batch = result.details.get("batch_invariance")
        if batch and "copies" in batch:
            console.print(f"{result.label}: a batch of {batch['copies']} copies gives "
                          + ("identical outputs" if batch["identical"] else "copies that differ (max |diff| "
                             + fmt(max(batch["max_abs_difference"].values())) + ")"))
    unusable = dataset.get("unusable", [])
    if unusable:
        console.print(f"[yellow]{len(unusable)} samples left out:[/] " + "; ".join(
            f"{u['sample']}: {u['reason']}" for u in unusable[:5]) + (" ..." if len(unusable) > 5 else ""))


FP16_WEIGHT_LINES = 5  # weight findings printed per row; the JSON report holds every one


def _render_fp16_weights(label: str, findings: list[dict[str, Any]], console: Any) -> None:
    """A warning line per weight the row's fp16 cannot hold (precision/weight_ranges.py), the rest counted."""
    from rich.markup import escape

    for finding in findings[:FP16_WEIGHT_LINES]:
        console.print(f"[yellow]{label}[/] fp16 weights: {escape(str(finding.get('finding')))}")
    if len(findings) > FP16_WEIGHT_LINES:
        console.print(f"[yellow]{label}[/] fp16 weights: {len(findings) - FP16_WEIGHT_LINES} more tensors in the "
                      "JSON report (details.fp16_weights)")


def _render_steps(steps: list[Step], console: Any) -> None:
    notable = [s for s in steps if s.status != "ok" or s.reason]
    for step in notable:
        style = {"fail": "red", "skipped": "dim"}.get(step.status, "yellow")
        console.print(f"[{style}]step {step.name}[/] {step.status}: {step.reason}")


def _tolerance_text(output: Any) -> str:
    if "mismatch" in output.metrics:  # labels and indices are judged by the share that differs
        return f"mismatch<={fmt(output.tolerance.mismatch or 0.0)}"
    return output.tolerance.describe()


def _min_passing(values: dict[str, float]) -> str:
    if not values:
        return "no tolerance (non-finite values)"
    if "atol" in values:
        return (f"atol={fmt(values['atol'])} (rtol={fmt(values.get('at_rtol', 0.0))}) or "
                f"rtol={fmt(values['rtol'])} (atol={fmt(values.get('at_atol', 0.0))})")
    return ", ".join(f"{k}={fmt(v)}" for k, v in values.items())


def render_suite(suite: dict[str, Any], console: Any | None = None) -> None:
    """One line per model of a manifest run (or a merge of shard reports), then the verdict. Each model's
    verdict is recomputed from its rows, gate and completeness, not read from its stored summary."""
    from rich.markup import escape
    from rich.table import Table

    console = console or make_console()
    title = "release gate" + (f", shard {suite['shard']}" if suite.get("shard") else "")
    if suite.get("shards"):
        title += f", shards {', '.join(suite['shards'])}"
    table = Table(title=title, title_justify="left")
    for column in ("model", "verdict", "checks", "failed or not run"):
        table.add_column(column)
    for data in suite["reports"]:
        counts = row_counts([r["status"] for r in data["results"]])
        bad = [f"{r['backend']}:{r['precision']}" for r in data["results"] if r["status"] in ("fail", "error")]
        judged = judge_dict(data)
        if judged.unfinished:
            bad.append(UNFINISHED)
        bad += [f"{label} (gate, did not run)" for label in judged.missing]
        bad += ["nothing judged"] if judged.nothing_judged else []
        style = "green" if judged.exit_code == 0 else "red"
        table.add_row(escape(str(data.get("entry") or data["model"]["name"])), f"[{style}]{judged.verdict}[/]",
                      ", ".join(f"{v} {k}" for k, v in counts.items()), escape(", ".join(bad) or "-"))
    for error in suite.get("errors", []):
        table.add_row(escape(str(error["entry"])), "[red]ERROR[/]", "-", escape(str(error["reason"])))
    console.print(table)
    summary = suite["summary"]
    style = "green" if summary["exit_code"] == 0 else "red"
    missing = summary.get("missing_shards")
    allowed = f"; shards {', '.join(missing)} missing, allowed" if summary.get("missing_shards_allowed") else ""
    why = f"; incomplete: {summary['incomplete']}" if summary.get("incomplete") else ""
    models = f"{summary['models']} model{'' if summary['models'] == 1 else 's'}"
    console.print(f"[{style}]{summary['verdict']}[/] ({models}{escape(allowed + why)}) "
                  f"exit code {summary['exit_code']}", soft_wrap=True)


def _render_task(report: Report, console: Any) -> None:
    """What gated the rows, and each row's task check (over a data set: on how many samples it failed)."""
    from rich.markup import escape

    text = judge_text(report.analysis)
    if not text:
        return
    console.print(escape(text))
    for result in report.results:
        if result.task_check is None:
            continue
        line = task_outcome_text(result.task_check)
        over = result.details.get("dataset", {}).get("task")
        if over and result.samples > 1:
            line += f"; over {result.samples} samples it failed on {over['failed']}"
        console.print(f"  task {escape(result.label)}: {escape(line)}")

"""Formatting shared by the human-readable reports. The file reports (JUnit, Markdown, suites) are
rendered from the JSON contract (`Report.to_dict()`), so a merged set of JSON reports renders
exactly like a fresh run."""

from __future__ import annotations

import math
from typing import Any


def number(value: Any) -> float | None:
    """A metric from a report dict ("Infinity"/"NaN" strings included) as a float."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return float(value)


def fmt(value: Any, digits: int = 2) -> str:
    value = number(value) if isinstance(value, str) else value
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0.0:
            return "0"
        return f"{value:.{digits}e}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits + 2}g}"
    return str(value)


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def task_summary(task: dict[str, Any]) -> str:
    if not task:
        return "-"
    parts = [f"argmax {number(task['argmax_agreement']):.3%}"] if "argmax_agreement" in task else []
    if "dice_mean" in task:
        parts.append(f"dice {number(task['dice_mean']):.4f}")
    parts += [f"{k.replace('_overlap', '')} {number(v):.3%}" for k, v in task.items() if k.endswith("_overlap")]
    return ", ".join(parts) or "-"


def status_text(status: str, faithful: bool = True) -> str:
    text = status.upper()
    if not faithful and status in ("pass", "fail"):
        text += "*"
    return text


def mean_column(metrics: dict[str, Any]) -> str:
    """mean |diff|, or for integer outputs the share of differing elements."""
    if "mismatch" in metrics:
        return f"{number(metrics['mismatch']):.3%} differ"
    return fmt(metrics.get("mean_abs"))


def memory_text(memory: dict[str, Any] | None) -> str:
    """A row's memory for a table cell: the resident memory it added at its peak, and on CUDA the
    device memory torch allocated at its peak (MB)."""
    if not memory or "added_rss_bytes" not in memory:
        return "-"
    text = f"{memory['added_rss_bytes'] / 2**20:,.0f}"
    if "cuda_peak_allocated_bytes" in memory:
        text += f" (GPU {memory['cuda_peak_allocated_bytes'] / 2**20:,.0f})"
    return text


def judge_text(analysis: dict[str, Any] | None) -> str:
    """What gated the rows, for every report: '' when only the norms did and no task check ran."""
    judge = (analysis or {}).get("judge") or {}
    mode, task = judge.get("mode", "norms"), judge.get("task")
    if not task:
        return ""
    gates = {"norms": "the norms (the task check is reported, not gating)", "task": "the task check only",
             "both": "the norms and the task check"}.get(mode, mode)
    return f"judged by {gates}: --task {task} --judge {mode}"


def task_outcome_text(task: dict[str, Any]) -> str:
    """One row's task check in words: its verdict and metrics, or its error."""
    if task.get("error"):
        return f"error: {task['error']}"
    metrics = ", ".join(f"{k} {fmt(v)}" for k, v in (task.get("metrics") or {}).items())
    verdict = "pass" if task.get("passed") else f"fail: {task.get('reason') or 'failed'}"
    return f"{verdict}" + (f" ({metrics})" if metrics else "")

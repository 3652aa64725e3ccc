"""Number formatting shared by the human-readable reports."""

from __future__ import annotations

import math
from typing import Any

from ..results import BackendResult


def fmt(value: Any, digits: int = 2) -> str:
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
    parts = [f"argmax {task['argmax_agreement']:.3%}"] if "argmax_agreement" in task else []
    if "dice_mean" in task:
        parts.append(f"dice {task['dice_mean']:.4f}")
    parts += [f"{k.replace('_overlap', '')} {v:.3%}" for k, v in task.items() if k.endswith("_overlap")]
    return ", ".join(parts) or "-"


def status_text(result: BackendResult) -> str:
    text = result.status.upper()
    if not result.faithful and result.status in ("pass", "fail"):
        text += "*"
    return text

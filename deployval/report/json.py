"""The JSON report: the machine contract (versioned by `format_version`)."""

from __future__ import annotations

from pathlib import Path

from .._util import atomic_write_json
from ..judge.results import Report


def write_json(report: Report, path: Path) -> None:
    atomic_write_json(Path(path), report.to_dict())

"""Ground truth for a data set (`--labels FILE`): the task metric of the reference and of every row
against it, so a release is judged on what the model is for, not only on how close it stays.

A CSV (`sample,label` per line, a header allowed) or a JSON object maps each sample's file name (or
its stem) to a class index, or, for segmentation, to a mask file (.npy, relative to the labels file).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError, first_line


@dataclass
class Labels:
    path: Path
    entries: dict[str, Any]  # sample name or stem -> class index or mask path

    @classmethod
    def read(cls, path: Path) -> Labels:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"--labels '{path}' is not a file")
        try:
            if path.suffix.lower() == ".json":
                raw = json.loads(path.read_text())
                if not isinstance(raw, dict):
                    raise UsageError(f"--labels '{path}': a JSON object of sample -> label is expected")
                entries = {str(k): v for k, v in raw.items()}
            else:
                with open(path, newline="") as handle:
                    rows = [r for r in csv.reader(handle) if r and not r[0].startswith("#")]
                if rows and len(rows[0]) >= 2 and not _is_label(rows[0][1]):
                    rows = rows[1:]  # a header
                entries = {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2}
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"--labels '{path}' cannot be read: {first_line(exc)}") from None
        if not entries:
            raise UsageError(f"--labels '{path}' holds no labels")
        return cls(path, entries)

    def for_sample(self, name: str) -> int | np.ndarray | None:
        """The label of a sample (by file name, then stem); None when it has none."""
        value = self.entries.get(name, self.entries.get(Path(name).stem))
        if value is None:
            return None
        if isinstance(value, int) or (isinstance(value, str) and _is_label(value)):
            return int(value)
        mask = (self.path.parent / str(value)).resolve()
        try:
            return np.load(mask, allow_pickle=False)
        except Exception as exc:
            raise UsageError(f"--labels: mask '{value}' of sample {name} cannot be read: {first_line(exc)}") from None


def _is_label(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()

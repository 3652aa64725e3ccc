"""Ground truth for a data set (`--labels FILE`): the task metric of the reference and of every row
against it, so a release is judged on what the model is for, not only on how close it stays.

A CSV (`sample,label` per line, a header allowed) or a JSON object maps each sample's file name (or
its stem) to a class index, or, for segmentation, to a mask file (.npy, relative to the labels file).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError, first_line


@dataclass
class Labels:
    path: Path
    entries: dict[str, Any]  # sample name or stem -> class index or mask path
    checked: set[int] = field(default_factory=set, repr=False, compare=False)  # class counts checked

    @classmethod
    def read(cls, path: Path) -> Labels:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"--labels '{path}' is not a file")
        try:
            if path.suffix.lower() == ".json":
                raw = json.loads(path.read_text(), object_pairs_hook=list)
                if not isinstance(raw, list):
                    raise UsageError(f"--labels '{path}': a JSON object of sample -> label is expected")
                pairs = [(str(k), v) for k, v in raw]
            else:
                with open(path, newline="") as handle:
                    rows = [r for r in csv.reader(handle) if r and not r[0].startswith("#")]
                if rows and len(rows[0]) >= 2 and not _is_label(rows[0][1]):
                    rows = rows[1:]  # a header
                pairs = [(r[0].strip(), r[1].strip()) for r in rows if len(r) >= 2]
            entries = _unique(path, pairs)
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"--labels '{path}' cannot be read: {first_line(exc)}") from None
        if not entries:
            raise UsageError(f"--labels '{path}' holds no labels")
        return cls(path, entries)

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """The ids that name none of these samples (by file name or stem): a typo or another data set."""
        known = set()
        for name in names:
            known.update((name, Path(name).stem))
        return [key for key in self.entries if key not in known]

    def check_classes(self, classes: int, output: str) -> None:
        """Refuse a class index the output cannot predict: it would only lower every top-1 alike."""
        if classes in self.checked:
            return
        for key, value in self.entries.items():
            if isinstance(value, int) or (isinstance(value, str) and _is_label(value)):
                index = int(value)
                if not 0 <= index < classes:
                    raise UsageError(f"--labels '{self.path}': sample '{key}' has class {index}, but output "
                                     f"'{output}' has {classes} classes (0..{classes - 1})")
        self.checked.add(classes)

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


def _unique(path: Path, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The entries, refusing an id given twice (which label would count is anyone's guess), also as a
    file name beside its own stem."""
    entries: dict[str, Any] = {}
    seen: dict[str, str] = {}  # each id and its stem -> the id as written
    for key, value in pairs:
        other = next((seen[form] for form in (key, Path(key).stem) if form in seen), None)
        if other is not None:
            same = f"'{key}'" if other == key else f"'{key}' and '{other}'"
            raise UsageError(f"--labels '{path}': sample {same} labelled twice")
        entries[key] = value
        seen[key] = key
        seen.setdefault(Path(key).stem, key)
    return entries


def _is_label(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()

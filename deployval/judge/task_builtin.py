"""Built-in task checks (task_checks.py has the contract), as pure functions over arrays:

* `ctc` — best-path CTC decoding (argmax, repeats merged, blanks dropped) gives the same sequences:
  a text recognizer reads the same text. Options: output, blank (0), axis (of the classes, -1).
* `sequence` — the predicted ids agree up to and including the first end token (what comes after it is
  never read): a decoder with argmax feedback says the same thing. Options: output, end, axis (-1).
* `detection` — a YOLO-style output (boxes in pixels beside class scores, 1x(4+C)xN or 1xNx(4+C); with
  layout=yolov5, 1xNx(5+C) with objectness) gives the same detections: every reference detection above
  `score` is matched by one of the same class with IoU >= `iou`, none is extra, and no matched score
  drops by more than `max_score_drop`. Options: output, score (0.25), iou (0.5), max_score_drop (0.05),
  layout (yolov8 or yolov5), boxes (xywh centre format, or xyxy).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import UsageError


def _output(arrays: Mapping[str, np.ndarray], name: str | None, check: str) -> np.ndarray:
    if name is None:
        return np.asarray(next(iter(arrays.values())))
    if name not in arrays:
        raise UsageError(f"{check}: the model has no output '{name}' (outputs: {', '.join(arrays)})")
    return np.asarray(arrays[name])


def _sequences(values: np.ndarray, axis: int, argmax: bool) -> list[list[int]]:
    """One id sequence per item: argmax over the class `axis` (float outputs), then rows of the last axis."""
    ids = values.argmax(axis) if argmax else values
    ids = np.asarray(ids)
    return [list(map(int, row)) for row in ids.reshape(-1, ids.shape[-1])] if ids.ndim else [[int(ids)]]


def _edit_distance(a: list[int], b: list[int]) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _agreement(ref: list[list[int]], cand: list[list[int]], what: str) -> dict[str, Any]:
    differ = [i for i, (a, b) in enumerate(zip(ref, cand)) if a != b]
    distances = [_edit_distance(ref[i], cand[i]) for i in differ]
    result: dict[str, Any] = {"sequences": len(ref), "different": len(differ),
                              "max_edit_distance": max(distances, default=0), "passed": not differ}
    if differ:
        result["reason"] = (f"{len(differ)} of {len(ref)} {what} differ (first: item {differ[0]}, edit distance "
                            f"{distances[0]}: {ref[differ[0]][:12]} vs {cand[differ[0]][:12]})")
    return result


def ctc(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray],
        *, output: str | None = None, blank: int = 0, axis: int = -1) -> dict[str, Any]:
    """Best-path decoding of the reference and the row: the same label sequences."""

    def decode(values: np.ndarray) -> list[list[int]]:
        decoded = []
        for best in _sequences(values, axis, argmax=True):
            decoded.append([c for i, c in enumerate(best) if c != blank and (i == 0 or c != best[i - 1])])
        return decoded

    name = output or next(iter(reference))
    ref, cand = _output(reference, output, "ctc"), _output(outputs, name, "ctc")
    return _agreement(decode(ref), decode(cand), "decoded sequences")


def sequence(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray],
             *, output: str | None = None, end: int | None = None, axis: int = -1) -> dict[str, Any]:
    """The predicted ids, each sequence cut after its first `end` token."""

    def ids(values: np.ndarray) -> list[list[int]]:
        rows = _sequences(values, axis, argmax=values.dtype.kind in "fc")
        return [row[:row.index(end) + 1] if end is not None and end in row else row for row in rows]

    name = output or next(iter(reference))
    ref, cand = _output(reference, output, "sequence"), _output(outputs, name, "sequence")
    return _agreement(ids(ref), ids(cand), "sequences")


def _detections(values: np.ndarray, layout: str, boxes: str, threshold: float) -> list[tuple[np.ndarray, int, float]]:
    """(xyxy box, class, score) of every anchor whose best class scores at least `threshold`, after
    per-class non-maximum suppression at IoU 0.5 (as the deployed post-processing would do)."""
    values = np.asarray(values, np.float64)
    if values.ndim == 3:
        values = values[0]
    if values.ndim != 2:
        raise UsageError(f"detection: expected a 1x(4+C)xN or 1xNx(4+C) output, got shape {list(values.shape)}")
    head = 5 if layout == "yolov5" else 4
    if values.shape[0] < values.shape[1] and values.shape[0] > head:  # channels first: 4+C rows, N anchors
        values = values.T
    if values.shape[1] <= head:
        raise UsageError(f"detection: {values.shape[1]} values per anchor leave no class scores (layout {layout})")
    coords, scores = values[:, :4], values[:, head:]
    if layout == "yolov5":
        scores = scores * values[:, 4:5]
    if boxes == "xywh":
        coords = np.concatenate([coords[:, :2] - coords[:, 2:] / 2, coords[:, :2] + coords[:, 2:] / 2], axis=1)
    classes, best = scores.argmax(1), scores.max(1)
    found = []
    for cls in np.unique(classes[best >= threshold]):
        index = np.flatnonzero((classes == cls) & (best >= threshold))
        index = index[np.argsort(-best[index], kind="stable")]
        while index.size:
            first = index[0]
            found.append((coords[first], int(cls), float(best[first])))
            index = index[1:][_iou(coords[first], coords[index[1:]]) < 0.5]
    return found


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    top_left, bottom_right = np.maximum(box[:2], others[:, :2]), np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(others) - inter, 1e-12)


def detection(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
              inputs: Mapping[str, np.ndarray], *, output: str | None = None, score: float = 0.25, iou: float = 0.5,
              max_score_drop: float = 0.05, layout: str = "yolov8", boxes: str = "xywh") -> dict[str, Any]:
    """The row's detections matched one to one with the reference's (same class, IoU >= `iou`)."""
    if layout not in ("yolov8", "yolov5") or boxes not in ("xywh", "xyxy"):
        raise UsageError(f"detection: layout is yolov8 or yolov5 and boxes xywh or xyxy (got {layout}, {boxes})")
    name = output or next(iter(reference))
    ref = _detections(_output(reference, output, "detection"), layout, boxes, score)
    cand = _detections(_output(outputs, name, "detection"), layout, boxes, score)
    unmatched, drops, overlaps = list(range(len(cand))), [], []
    missed = 0
    for box, cls, value in sorted(ref, key=lambda d: -d[2]):
        same = [i for i in unmatched if cand[i][1] == cls]
        if same:
            overlap = _iou(box, np.stack([cand[i][0] for i in same]))
            best = int(overlap.argmax())
            if overlap[best] >= iou:
                unmatched.remove(same[best])
                drops.append(value - cand[same[best]][2])
                overlaps.append(float(overlap[best]))
                continue
        missed += 1
    drop = max(drops, default=0.0)
    result: dict[str, Any] = {"reference_detections": len(ref), "matched": len(overlaps), "missed": missed,
                              "extra": len(unmatched), "max_score_drop": drop, "min_iou": min(overlaps, default=1.0)}
    problems = [f"{missed} missed" if missed else "", f"{len(unmatched)} extra" if unmatched else "",
                f"a score dropped by {drop:.3g} (> {max_score_drop:g})" if drop > max_score_drop else ""]
    result["passed"] = not any(problems)
    if not result["passed"]:
        result["reason"] = (f"of {len(ref)} detections above score {score:g}: "
                            + ", ".join(p for p in problems if p))
    return result


BUILTINS: dict[str, Callable[..., dict[str, Any]]] = {"ctc": ctc, "sequence": sequence, "detection": detection}
_OPTION_TYPES = {"output": str, "blank": int, "axis": int, "end": int, "score": float, "iou": float,
                 "max_score_drop": float, "layout": str, "boxes": str}
_OPTIONS = {"ctc": ("output", "blank", "axis"), "sequence": ("output", "end", "axis"),
            "detection": ("output", "score", "iou", "max_score_drop", "layout", "boxes")}


def builtin_check(text: str) -> Callable[..., dict[str, Any]]:
    """'name' or 'name:key=value,key=value' -> the built-in with those options bound; bad options are one
    UsageError line naming what the built-in takes."""
    name, _, rest = text.partition(":")
    name = name.strip()
    options: dict[str, Any] = {}
    for item in (p.strip() for p in rest.split(",") if p.strip()):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in _OPTIONS[name]:
            raise UsageError(f"--task '{text}': '{item}' is not an option of {name} (it takes "
                             f"{', '.join(k + '=' for k in _OPTIONS[name])})")
        try:
            options[key] = _OPTION_TYPES[key](value.strip())
        except ValueError:
            raise UsageError(f"--task '{text}': {key}={value.strip()} is not a {_OPTION_TYPES[key].__name__}") from None
    return functools.partial(BUILTINS[name], **options)

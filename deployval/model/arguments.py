"""Values as the command line, manifests and the Python API give them: shapes, input shapes and ranges,
forward() arguments and comma-separated lists, each parsed with one clear UsageError line."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UsageError
from .spec import DTYPES

_SHAPE_RE = re.compile(r"^\d+(x\d+)*$")
INT64_MAX = 2**63 - 1


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x3x224x224' -> (1, 3, 224, 224)."""
    cleaned = text.strip().lower().replace("×", "x").replace(",", "x")
    if not _SHAPE_RE.match(cleaned):
        raise UsageError(f"bad shape '{text}': expected dimensions joined by 'x', e.g. 1x3x224x224")
    digits = [d.lstrip("0") or "0" for d in cleaned.split("x")]
    if any(len(d) > 19 or int(d) > INT64_MAX for d in digits):  # int() itself refuses 4300 digits
        raise UsageError(f"bad shape '{text[:60]}': a dimension beyond int64 ({INT64_MAX}) cannot be a tensor's")
    shape = tuple(int(d) for d in digits)
    if any(d == 0 for d in shape):
        raise UsageError(f"bad shape '{text}': dimensions must be at least 1")
    return shape




@dataclass(frozen=True)
class InputShapeArg:
    name: str
    shape: tuple[int, ...]
    dtype: str | None = None


def parse_input_shape(text: str) -> InputShapeArg:
    """'x=1x3x224x224', 'ids=1x16:int64', or a bare '1x3x224x224' for a single-input model
    (name '' then)."""
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    elif not name.strip():
        raise UsageError(f"bad --input-shape '{text}': expected NAME=SHAPE[:DTYPE], e.g. x=1x3x224x224")
    shape_text, _, dtype = rest.partition(":")
    dtype = dtype.strip() or None
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"bad --input-shape '{text}': unknown dtype '{dtype}' (one of {', '.join(DTYPES)})")
    return InputShapeArg(name.strip(), parse_shape(shape_text), dtype)


_ARG_NAME_RE = re.compile(r"^[A-Za-z_]\w*$")


def parse_argument(text: str) -> tuple[str, int | float | bool | str]:
    """'sr=16000' -> ('sr', 16000): an int, a float, true/false, or else a string (quotes optional)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not _ARG_NAME_RE.match(name):
        raise UsageError(f"bad --arg '{text}': expected NAME=VALUE with a Python argument name, e.g. sr=16000")
    raw = raw.strip()
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    for kind in (int, float):
        try:
            return name, kind(raw)
        except ValueError:
            pass
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        raw = raw[1:-1]
    return name, raw


def parse_arguments(texts: Sequence[str] | None) -> dict[str, int | float | bool | str]:
    parsed: dict[str, int | float | bool | str] = {}
    for text in texts or ():
        name, value = parse_argument(text)
        if name in parsed and parsed[name] != value:
            raise UsageError(f"--arg {name} is given twice with different values")
        parsed[name] = value
    return parsed


def parse_input_range(text: str) -> tuple[str, float, float]:
    """'ids=0,1000' -> ('ids', 0.0, 1000.0)."""
    name, sep, rest = text.partition("=")
    try:
        low_text, high_text = rest.split(",")
        low, high = float(low_text), float(high_text)
    except ValueError:
        raise UsageError(f"bad --input-range '{text}': expected NAME=LOW,HIGH, e.g. ids=0,1000") from None
    if not sep or not name.strip() or not high > low:
        raise UsageError(f"bad --input-range '{text}': expected NAME=LOW,HIGH with HIGH > LOW")
    return name.strip(), low, high


def parse_list(text: str | None, what: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """'torch, ort' -> ('torch', 'ort'), refusing empty lists and unknown items."""
    items = tuple(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))
    if not items:
        raise UsageError(f"no {what} given")
    if allowed is not None:
        unknown = [i for i in items if i not in allowed]
        if unknown:
            raise UsageError(f"unknown {what} '{unknown[0]}' (choose from {', '.join(allowed)})")
    return items

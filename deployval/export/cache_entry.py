"""One cache entry on disk (an artifact and its JSON sidecar): telling a valid entry from a damaged one,
moving damaged files aside, and finding the temporary files an interrupted write left behind.

A damaged entry is the cache's problem, not the model's: the store rebuilds it (once, with a note
naming why) instead of letting a backend fail on it. An entry is damaged when either file does not
parse, is a directory, has the wrong JSON type or fields, was made under another key, does not hash
to its sidecar's SHA-256, or takes inputs other than the key's (an ONNX graph's input names, element
types and static dimensions).
"""

from __future__ import annotations

import json
import mmap
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util import sha256_file

# The sidecar's fields and their JSON types (optional ones are checked when present): a field of the
# wrong type would otherwise fail later, in a plan's freshness test or in the report.
REQUIRED = {"key": (str,), "kind": (str,), "sha256": (str,), "step": (dict,), "details": (dict,),
            "signature": (list, type(None))}
OPTIONAL = {"verified_inputs": (str, type(None)), "check": (dict,), "recipe": (dict,), "calibration": (str,)}
STEP_FIELDS = {"status": (str,), "reason": (str,), "details": (dict,)}
# One graph input as the sidecar keeps it: [name, element type, dims]; a dim is an int, a symbol or None.
Signature = list[list[Any]]


class Damaged(Exception):
    """Why an entry cannot be used; the message completes "cache entry NAME ..."."""


@dataclass(frozen=True)
class Expected:
    """What the key says a valid entry holds: its key, kind, and (ONNX artifacts) its inputs as
    (name, dtype, shape) in the spec's terms."""

    key: str
    kind: str
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...] | None


def read(path: Path, meta_path: Path, expected: Expected) -> dict[str, Any] | None:
    """The sidecar of a valid entry; None when the entry is absent (either file missing). Raises
    Damaged when something is there but cannot be trusted."""
    for file in (path, meta_path):
        if file.is_dir():
            raise Damaged(f"is damaged: {file.name} is a directory")
    if not (path.is_file() and meta_path.is_file()):
        return None
    meta = read_sidecar(meta_path)
    if meta["key"] != expected.key:
        raise Damaged("was made under another cache key")
    if meta["kind"] != expected.kind:
        raise Damaged(f"is damaged: its sidecar is for a {meta['kind']} artifact")
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise Damaged(f"cannot be read ({exc.strerror or exc})") from None
    if meta["sha256"] != digest:
        raise Damaged("is damaged: its SHA-256 does not match its sidecar (truncated or changed)")
    if expected.inputs is not None:
        actual = onnx_signature(path)
        if meta["signature"] != actual:
            raise Damaged("is damaged: its inputs are not those its sidecar records")
        problem = signature_problem(actual, expected.inputs)
        if problem:
            raise Damaged(f"does not fit its key: {problem}")
    return meta


def read_sidecar(meta_path: Path) -> dict[str, Any]:
    """The sidecar as a JSON object with the fields and types the store relies on; Damaged otherwise."""
    try:
        meta = json.loads(meta_path.read_text())
    except OSError as exc:
        raise Damaged(f"cannot be read: {meta_path.name}: {exc.strerror or exc}") from None
    except ValueError:
        raise Damaged(f"is damaged: {meta_path.name} is not valid JSON") from None
    if not isinstance(meta, dict):
        raise Damaged(f"is damaged: {meta_path.name} holds a JSON {_json_type(meta)}, not an object")
    for fields, required, where in ((REQUIRED, True, meta), (OPTIONAL, False, meta),
                                    (STEP_FIELDS, False, meta.get("step", {}))):
        for name, types in fields.items():
            if name not in where:
                if required:
                    raise Damaged(f"is damaged: {meta_path.name} has no '{name}'")
                continue
            if not isinstance(where[name], types):
                raise Damaged(f"is damaged: '{name}' in {meta_path.name} is a JSON {_json_type(where[name])}")
    return meta


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def signature_problem(signature: Signature, inputs: Sequence[tuple[str, str, tuple[int, ...]]]) -> str | None:
    """What an ONNX graph's inputs contradict in the key's (None: they fit). Every graph input must be one
    of the key's, of its dtype, rank and static dims; dynamic dims fit any size, and an input the
    exporter dropped (unused) is no contradiction."""
    wanted = {name: (dtype, shape) for name, dtype, shape in inputs}
    for name, dtype, dims in signature:
        if name not in wanted:
            return f"its input '{name}' is not one of the model's ({', '.join(wanted)})"
        want_dtype, want_shape = wanted[name]
        if dtype is not None and dtype != want_dtype:
            return f"its input '{name}' is {dtype}, the key says {want_dtype}"
        if dims is None:
            continue
        if len(dims) != len(want_shape) or any(isinstance(d, int) and d != w for d, w in zip(dims, want_shape)):
            shown = "x".join(str(d) if isinstance(d, int) else "?" for d in dims)
            return f"its input '{name}' has shape {shown}, the key says {'x'.join(map(str, want_shape))}"
    return None


# ---------------------------------------------------------------------- ONNX inputs, without the weights
# The graph's inputs are read from the protobuf wire format directly: parsing a whole model to look at
# its inputs would cost as much as hashing it again on every cache hit (0.1 s per 100 MB).
_MODEL_GRAPH, _GRAPH_INITIALIZER, _GRAPH_INPUT, _TENSOR_NAME = 7, 5, 11, 8


def onnx_signature(path: Path) -> Signature:
    """[name, dtype, dims] of each graph input that is not an initializer. Raises Damaged when the file
    is not an ONNX model."""
    from onnx import ValueInfoProto

    from .onnx_io import ONNX_DTYPES

    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            graph = [span for field, span in _fields(buf, 0, len(buf)) if field == _MODEL_GRAPH]
            if len(graph) != 1:
                raise ValueError("no graph")
            values, initializers = [], set()
            for field, span in _fields(buf, *graph[0]):
                if field == _GRAPH_INPUT:
                    values.append(ValueInfoProto.FromString(bytes(buf[span[0]:span[1]])))
                elif field == _GRAPH_INITIALIZER:
                    names = [s for f, s in _fields(buf, *span) if f == _TENSOR_NAME]
                    initializers.update(bytes(buf[s[0]:s[1]]).decode("utf-8", "replace") for s in names)
    except (OSError, ValueError, IndexError) as exc:
        raise Damaged(f"is damaged: not a readable ONNX model ({exc})") from None
    except Exception as exc:  # protobuf's DecodeError
        raise Damaged(f"is damaged: not a readable ONNX model ({type(exc).__name__})") from None
    signature: Signature = []
    for value in values:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type if value.type.HasField("tensor_type") else None
        dtype = ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type)) if tensor and tensor.elem_type else None
        dims = None
        if tensor is not None and tensor.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        signature.append([value.name, dtype, dims])
    return signature


def _fields(buf: Any, start: int, end: int) -> list[tuple[int, tuple[int, int]]]:
    """(field number, (start, end)) of each length-delimited field of the message in buf[start:end];
    other wire types are skipped. Raises ValueError on malformed bytes."""
    found = []
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            found.append((field, (pos, pos + size)))
            pos += size
        else:
            raise ValueError(f"wire type {wire}")
        if pos > end:
            raise ValueError("truncated message")
    return found


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("bad varint")


# ---------------------------------------------------------------------- moving aside, leftovers
def move_aside(path: Path) -> Path | None:
    """Rename a damaged file or directory to NAME.damaged-<time> (the one before it goes: one is enough to
    look at); None when there was nothing to move."""
    if not (path.exists() or path.is_symlink()):
        return None
    for old in path.parent.glob(f"{glob_escape(path.name)}.damaged-*"):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    target = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, target)
    return target


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# The temporary names deployval's writers give a file next to its target (deployval/_util.py):
# atomic_write_bytes writes ".NAME.XXXXXXXX.tmp", atomic_path ".STEM.XXXXXXXX.SUFFIX" (with ".data"
# beside it when an exporter writes external data), and the simplifier's verification "NAME.candidate".
_RANDOM = r"[a-z0-9_]{8}"


def leftovers(path: Path) -> list[Path]:
    """Temporary files an interrupted write of `path` or of its sidecar left in its directory."""
    name, stem, suffix = path.name, path.stem, path.suffix
    pattern = re.compile(
        rf"\.{re.escape(name)}(\.json)?\.{_RANDOM}\.tmp|\.{re.escape(stem)}\.{_RANDOM}{re.escape(suffix)}(\.data)?"
        rf"|{re.escape(name)}\.candidate")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return sorted(path.parent / n for n in names if pattern.fullmatch(n))

"""Inputs: made once (seeded) or loaded once, checked against the spec, saved for replay, and cast
per backend with a range check. Every backend sees the same values."""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._util import atomic_write_bytes
from ..errors import UsageError, first_line
from .arguments import InputShapeArg
from .spec import DTYPES, InputSpec, format_shape

INPUT_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


def make_inputs(specs: Sequence[InputSpec], seed: int) -> dict[str, np.ndarray]:
    """Uniform random values in each input's [low, high), drawn in spec order from one seed."""
    check_allocatable(specs)
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.dtype == "bool":
            value = rng.random(spec.shape) < 0.5
        elif spec.is_integer:
            info = np.iinfo(spec.dtype)
            low = max(int(np.ceil(spec.low)), info.min)
            high = min(int(np.ceil(spec.high)), info.max + 1)
            value = rng.integers(low, high, size=spec.shape, dtype=spec.dtype)
        else:
            value = rng.uniform(spec.low, spec.high, size=spec.shape).astype(_np_dtype(spec.dtype))
        inputs[spec.name] = value
    return inputs


GIB = float(1 << 30)


def input_bytes(specs: Sequence[InputSpec]) -> tuple[int, int]:
    """(bytes of the values, peak bytes while make_inputs makes them): float and bool values are drawn
    in float64 first, so the largest such draw is held next to the values."""
    values, draw = 0, 0
    for spec in specs:
        count = math.prod(spec.shape)
        values += count * (2 if spec.dtype == "bfloat16" else np.dtype(spec.dtype).itemsize)
        if spec.dtype == "bool" or not spec.is_integer:
            draw = max(draw, count * 8)
    return values, values + draw


def check_allocatable(specs: Sequence[InputSpec], available: int | None = None) -> None:
    """Refuse, before anything is allocated, inputs this machine's memory cannot hold (a typo such as
    1x3x50000x40000 would otherwise end in a MemoryError, or in the kernel's OOM killer)."""
    values, peak = input_bytes(specs)
    if available is None:
        available = memory_available()
    if available is None or peak <= available:
        return
    shapes = ", ".join(f"{s.name}={format_shape(s.shape)}:{s.dtype}" for s in specs)
    total = memory_total()
    has = f"{available / GIB:.1f} GiB available" + (f" of {total / GIB:.1f} GiB" if total else "")
    drawn = ", drawn in float64" if peak > values else ""
    raise UsageError(f"inputs {shapes} need {peak / GIB:.1f} GiB of memory to make ({values / GIB:.1f} GiB of "
                     f"values{drawn}); this machine has {has}: give smaller input shapes")


def memory_available() -> int | None:
    """Bytes this process can still allocate: MemAvailable, bounded by a cgroup's (a container's) limit."""
    found = _meminfo("MemAvailable")
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            found = None
    limit = _cgroup_room()
    if limit is not None:
        found = limit if found is None else min(found, limit)
    return found


def memory_total() -> int | None:
    found = _meminfo("MemTotal")
    if found is None:
        try:
            found = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return None
    return found


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name == key:
                    return int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit leaves (memory.max - memory.current), or None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def _np_dtype(dtype: str) -> np.dtype:
    if dtype == "bfloat16":
        raise UsageError("bfloat16 inputs are not supported (numpy has no bfloat16); declare float32")
    return np.dtype(dtype)


def load_inputs(path: Path, specs: Sequence[InputSpec], trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """Read `.npy` (one input), `.npz` (arrays named after the inputs) or `.pt` (a tensor or a dict
    of tensors, loaded with weights_only=True)."""
    return read_inputs_file(path, [s.name for s in specs], trust_pickle)


def read_inputs_file(path: Path, names: Sequence[str] = (), trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """The arrays of an inputs file by input name. Without `names` (the model's inputs are not known
    yet), a single unnamed array (.npy, or a bare tensor in .pt) is keyed ''."""
    path = Path(path)
    if not path.exists():
        link = f" (a symbolic link to '{os.readlink(path)}', which does not exist)" if path.is_symlink() else ""
        raise UsageError(f"inputs file '{path}' does not exist{link}")
    if path.is_dir():
        raise UsageError(f"inputs path '{path}' is a directory; give a .npy, .npz or .pt file")
    if not path.is_file():  # a pipe named x.npy would be waited on forever
        raise UsageError(f"inputs file '{path}' is not a regular file (a pipe, socket or device)")
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise UsageError(f"inputs file '{path}': unsupported type '{suffix}' (use .npy, .npz or .pt)")
    names = list(names)
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if not names:
                return {"": array}
            if len(names) != 1:
                raise UsageError(
                    f"inputs file '{path}' holds one array but the model has {len(names)} inputs "
                    f"({', '.join(names)}); use a .npz with one array per input"
                )
            loaded = {names[0]: array}
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                loaded = {key: _member(path, archive, key) for key in archive.files}
        else:
            loaded = _load_torch_inputs(path, names, trust_pickle)
    except UsageError:
        raise
    except Exception as exc:  # numpy's readers raise many kinds (TokenError, SyntaxError, zlib.error, ...)
        raise UsageError(f"cannot read inputs file '{path}': {_short(exc)}") from None
    return loaded


def _load_torch_inputs(path: Path, names: list[str], trust_pickle: bool) -> dict[str, np.ndarray]:
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        raise UsageError(
            f"inputs file '{path}' needs arbitrary code to load (it is not plain tensors): {_short(exc)}"
        ) from None
    except Exception as exc:  # a damaged archive: zipfile, EOF and pickle errors of every kind
        raise UsageError(f"cannot read inputs file '{path}': {_short(exc)}") from None
    if isinstance(obj, torch.Tensor):
        obj = {names[0] if names else "": obj} if len(names) <= 1 else obj
    if isinstance(obj, (list, tuple)) and len(obj) == len(names):
        obj = dict(zip(names, obj))
    if not isinstance(obj, Mapping):
        raise UsageError(
            f"inputs file '{path}' holds a {type(obj).__name__}; expected a tensor or a dict of tensors named "
            f"{', '.join(names)}"
        )
    result = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise UsageError(f"inputs file '{path}': entry '{key}' is a {type(value).__name__}, not a tensor")
        result[str(key)] = value.detach().cpu().numpy()
    return result


def file_input_shapes(path: Path) -> list[InputShapeArg]:
    """What an inputs file says about the run: each array's name, shape and dtype (float64 arrays,
    which numpy makes by default, are declared float32: models take float32)."""
    shapes = []
    for name, value in read_inputs_file(path).items():
        value = np.asarray(value)
        dtype = "float32" if value.dtype == np.float64 else str(value.dtype)
        if dtype not in DTYPES:
            raise UsageError(f"inputs file '{path}': '{name or 'the array'}' has dtype {dtype}, which deployval "
                             f"cannot feed (one of {', '.join(DTYPES)})")
        shapes.append(InputShapeArg(name, tuple(int(d) for d in value.shape), dtype))
    if not shapes:
        raise UsageError(f"inputs file '{path}' holds no arrays")
    return shapes


def _member(path: Path, archive: Any, key: str) -> np.ndarray:
    """One array of an .npz, a damaged one named."""
    try:
        return archive[key]
    except Exception as exc:
        raise UsageError(f"cannot read inputs file '{path}': array '{key}': {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    """A reader's error in one line; the type only where the message alone says little (TokenError)."""
    return first_line(exc, named=not isinstance(exc, (ValueError, OSError, EOFError)))


def check_inputs(
    inputs: Mapping[str, np.ndarray],
    specs: Sequence[InputSpec],
    *,
    exact_shapes: bool = True,
    allow_nonfinite: bool = False,
    source: str = "inputs",
) -> dict[str, np.ndarray]:
    """Refuse inputs that do not fit the spec (names, kind, rank, shape, values); returns them
    converted to each spec's dtype. With exact_shapes=False (inputs from a file) any shape the
    network accepts (`multiple_of`) and of the right rank goes, and defines the run."""
    names = [s.name for s in specs]
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        raise UsageError(f"{source}: {'; '.join(parts)} (the model's inputs are {', '.join(names)})")
    checked: dict[str, np.ndarray] = {}
    for spec in specs:
        value = np.asarray(inputs[spec.name])
        where = f"{source}: input '{spec.name}'"
        if value.size == 0:
            raise UsageError(f"{where} is empty (shape {format_shape(value.shape)})")
        if value.ndim != len(spec.shape):
            raise UsageError(
                f"{where} has rank {value.ndim} (shape {format_shape(value.shape)}); the model expects rank "
                f"{len(spec.shape)} ({format_shape(spec.shape)})"
            )
        if exact_shapes and tuple(value.shape) != spec.shape:
            raise UsageError(f"{where} has shape {format_shape(value.shape)}, expected {format_shape(spec.shape)}")
        spec.check_shape(tuple(value.shape))
        checked[spec.name] = _convert(value, spec, where, allow_nonfinite)
    return checked


def _convert(value: np.ndarray, spec: InputSpec, where: str, allow_nonfinite: bool) -> np.ndarray:
    kind = value.dtype.kind
    if spec.dtype == "bool":
        if kind != "b":
            raise UsageError(f"{where} has dtype {value.dtype}; the model expects bool")
        return value
    if spec.is_integer:
        if kind not in "iu":
            raise UsageError(f"{where} has dtype {value.dtype}; the model expects integers ({spec.dtype})")
        return cast_checked(value, spec.dtype, where)
    if kind != "f":  # integers for a float input are another dtype: raw uint8 pixels are not a float image
        raise UsageError(f"{where} has dtype {value.dtype}; the model expects {spec.dtype} (cast the array if "
                         "its values are meant as they are)")
    if kind == "f" and not allow_nonfinite and not np.isfinite(value).all():
        bad = int((~np.isfinite(value)).sum())
        raise UsageError(f"{where} holds {bad} NaN/Inf values (pass --allow-nonfinite-inputs to use them anyway)")
    return value.astype(_np_dtype(spec.dtype), copy=False)


def cast_checked(value: np.ndarray, dtype: str, where: str) -> np.ndarray:
    """Integer cast that refuses values which do not fit (int64 -> int32 must not wrap)."""
    target = np.dtype(dtype)
    if value.dtype == target:
        return value
    if value.dtype.kind in "iu" and target.kind in "iu" and value.size:
        info = np.iinfo(target)
        low, high = value.min(), value.max()
        if low < info.min or high > info.max:
            raise UsageError(
                f"{where}: values in [{low}, {high}] do not fit {target} ([{info.min}, {info.max}])"
            )
    return value.astype(target)


def adapt_for_backend(
    inputs: Mapping[str, np.ndarray], dtypes: Mapping[str, str] | None, backend: str
) -> dict[str, np.ndarray]:
    """The same values in the dtypes a runtime declares (e.g. int32 for an int32-cast ONNX)."""
    if not dtypes:
        return dict(inputs)
    adapted = {}
    for name, value in inputs.items():
        want = dtypes.get(name)
        if want is None or want == str(value.dtype):
            adapted[name] = value
        elif value.dtype.kind in "iu" and np.dtype(want).kind in "iu":
            adapted[name] = cast_checked(value, want, f"{backend}: input '{name}'")
        else:
            adapted[name] = value.astype(want)
    return adapted


def save_inputs(path: Path, inputs: Mapping[str, np.ndarray]) -> None:
    """Write the inputs as .npz (or .npy for a single input) so that a run can be replayed."""
    path = Path(path)
    buffer = io.BytesIO()
    if path.suffix.lower() == ".npy":
        if len(inputs) != 1:
            raise UsageError(f"--save-inputs '{path}': the model has {len(inputs)} inputs; use a .npz file")
        np.save(buffer, next(iter(inputs.values())), allow_pickle=False)
    elif path.suffix.lower() == ".npz":
        buffer.write(npz_bytes(inputs))
    else:
        raise UsageError(f"--save-inputs '{path}': use a .npz (or .npy for a single input) file name")
    atomic_write_bytes(path, buffer.getvalue())


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An .npz archive of named arrays, as np.savez writes it, for any names: np.savez(**arrays) takes
    an array named `file` or `allow_pickle` for its own argument."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()


def digest(inputs: Mapping[str, np.ndarray]) -> str:
    """Content hash of a set of inputs (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for name in sorted(inputs):
        value = np.ascontiguousarray(inputs[name])
        h.update(f"{name}|{value.dtype}|{value.shape}|".encode())
        h.update(memoryview(value).cast("B"))
    return h.hexdigest()

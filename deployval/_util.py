"""Small shared helpers: atomic writes, hashing, timed lazy imports, library versions."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Seconds spent importing heavy libraries, per module, in this process. The pipeline reports
# them as unavoidable work (any tool that runs a torch model pays them).
IMPORT_SECONDS: dict[str, float] = {}


def timed_import(name: str) -> Any:
    """Import a module and remember how long the first import took."""
    import sys

    if name in sys.modules:
        return sys.modules[name]
    start = time.perf_counter()
    module = importlib.import_module(name)
    IMPORT_SECONDS[name] = IMPORT_SECONDS.get(name, 0.0) + time.perf_counter() - start
    return module


@contextlib.contextmanager
def quiet_libraries(*logger_names: str) -> Iterator[None]:
    """Silence what exporters and quantizers print (stdout, warnings, the named loggers; "" is the
    root logger): the report says what matters."""
    import io
    import logging
    import warnings

    loggers = [logging.getLogger(name or None) for name in logger_names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), native_stdout_discarded():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def native_stdout_discarded() -> Iterator[None]:
    """What native code writes to file descriptor 1 goes nowhere meanwhile: torch's legacy ONNX exporter
    prints its whole TorchScript IR graph (hundreds of lines) from C++ when an export fails, before the
    report's table. Where descriptor 1 cannot be reassigned, nothing changes."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; reports and artifacts get the permissions any other file would.
FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    """Strict JSON: non-finite floats (an identical output's SQNR is infinite) are written as the
    strings "Infinity", "-Infinity" and "NaN", which float() reads back."""
    text = json.dumps(finite_json(data), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def finite_json(data: Any) -> Any:
    if isinstance(data, float):
        if data != data:
            return "NaN"
        if data in (float("inf"), float("-inf")):
            return "Infinity" if data > 0 else "-Infinity"
        return data
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    if hasattr(data, "to_dict"):
        return finite_json(data.to_dict())
    return data


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path next to `path` for writers that insist on a file name; renamed on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=_json_default).encode()).hexdigest()


def package_version(name: str) -> str | None:
    """Installed version of a distribution, without importing it."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    import platform

    from ._version import __version__

    versions: dict[str, str | None] = {"deployval": __version__, "python": platform.python_version()}
    for dist in ("torch", "numpy", "onnx", "onnxscript", "onnxsim", "onnxruntime", "onnxruntime-gpu", "tensorrt"):
        versions[dist] = package_version(dist)
    return versions


def check_writable(path: Path, what: str) -> None:
    """Refuse a report path that cannot be written before any long work starts. Permission bits do not
    say it (root passes every access check, /proc refuses new files): the writer's own first step, a temp
    file next to the target, is made and removed here."""
    from .errors import UsageError

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        if path.is_dir():
            raise UsageError(f"{what} path '{path}' is a directory, not a file")
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            raise UsageError(f"cannot write {what} '{path}': it is not a regular file (a device, pipe or socket)")
        if not parent.exists():
            raise UsageError(f"cannot write {what} '{path}': directory '{parent}' does not exist")
        if not parent.is_dir():
            raise UsageError(f"cannot write {what} '{path}': '{parent}' is not a directory")
        if path.exists() and not os.access(path, os.W_OK):
            raise UsageError(f"cannot write {what} '{path}': permission denied")
    except OSError as exc:
        raise UsageError(f"cannot write {what} '{path}': {exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise UsageError(f"cannot write {what} '{path}': no file can be created in '{parent}' "
                         f"({exc.strerror or exc})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)

"""Backends that fail the way native runtimes do: a hard abort (as a segfault would) and a hang, for
the isolation tests; an engine whose kernels depend on the build, for `--repeat`. They run the
pipeline's real ONNX artifact on ONNX Runtime until they misbehave."""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from deployval.backends.base import ONNX, Runner


class _OnnxRuntimeLike(Runner):
    artifacts: ClassVar[dict[str, str]] = {"fp32": ONNX}
    isolate_by_default: ClassVar[bool] = True

    def activate_impl(self) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(self.artifact.path), providers=["CPUExecutionProvider"])

    def to_host(self, outputs: Any) -> dict[str, Any]:
        return dict(zip(self.output_names, outputs))


class AbortingRunner(_OnnxRuntimeLike):
    """Calls abort() in the middle of inference: the process dies with SIGABRT."""

    name: ClassVar[str] = "aborting"

    def infer_impl(self, feeds: Any) -> Any:
        print("about to run the engine", flush=True)
        os.abort()


class HangingRunner(_OnnxRuntimeLike):
    """Never returns from inference."""

    name: ClassVar[str] = "hanging"

    def infer_impl(self, feeds: Any) -> Any:
        print("engine started, waiting forever", flush=True)
        while True:
            time.sleep(1)


class TacticDependentRunner(_OnnxRuntimeLike):
    """An engine-building runtime whose every fresh build picks other kernels, as TensorRT's timed
    tactic selection can: build N scales the outputs by 1 + N * 1e-6. The engine cache keeps builds."""

    name: ClassVar[str] = "tactics"
    isolate_by_default: ClassVar[bool] = False
    builds_engine: ClassVar[bool] = True
    builds: ClassVar[list[str | None]] = []  # the engine cache directory each build was given
    out_of_memory_after: ClassVar[int | None] = None  # builds after this many fail (as a GPU out of memory)

    def activate_impl(self) -> None:
        limit = type(self).out_of_memory_after
        if limit is not None and len(type(self).builds) >= limit:
            raise RuntimeError("out of device memory while building the engine")
        super().activate_impl()
        type(self).builds.append(self.options.get("engine_cache_dir"))
        self.scale = 1.0 + len(type(self).builds) * 1e-6

    def infer_impl(self, feeds: Any) -> Any:
        return [value * self.scale for value in self.session.run(None, dict(feeds))]


def _started() -> None:
    """Say that the row has begun (its process id, in the file $FAULTY_STARTED names): a test waits for it
    before it sends a signal."""
    path = os.environ.get("FAULTY_STARTED")
    if path:
        with open(path, "w") as handle:
            handle.write(f"{os.getpid()}\n")


def block_natively(seconds: int) -> int:
    """Wait `seconds` inside one C call that signals do not end (a mutex this thread already holds, locked
    again with a deadline), as a long torch or ONNX Runtime operation would: Python can run no signal
    handler until it returns. The call releases Python's lock, as those runtimes do."""
    import ctypes

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(64)  # zeroed: a default pthread mutex (glibc)
    libc.pthread_mutex_lock(mutex)
    return int(libc.pthread_mutex_timedlock(mutex, ctypes.byref(Timespec(int(time.time()) + seconds, 0))))


class SleepingRunner(_OnnxRuntimeLike):
    """Sleeps in inference (in Python, in this process) until it is interrupted."""

    name: ClassVar[str] = "sleeping"
    isolate_by_default: ClassVar[bool] = False

    def infer_impl(self, feeds: Any) -> Any:
        _started()
        while True:
            time.sleep(0.1)


class IsolatedSleepingRunner(SleepingRunner):
    """The same in its own process (the parent waits for the child)."""

    name: ClassVar[str] = "sleeping-isolated"
    isolate_by_default: ClassVar[bool] = True


class NativeBlockingRunner(_OnnxRuntimeLike):
    """Blocks for 60 s in one native call that signals do not interrupt."""

    name: ClassVar[str] = "native-blocking"
    isolate_by_default: ClassVar[bool] = False

    def infer_impl(self, feeds: Any) -> Any:
        _started()
        block_natively(60)
        return self.session.run(None, dict(feeds))


class ExitingRunner(_OnnxRuntimeLike):
    """Calls sys.exit(0) in inference, in this process."""

    name: ClassVar[str] = "exiting"
    isolate_by_default: ClassVar[bool] = False

    def infer_impl(self, feeds: Any) -> Any:
        import sys

        sys.exit(0)


class HardExitingRunner(_OnnxRuntimeLike):
    """Calls os._exit(0) in inference, in this process."""

    name: ClassVar[str] = "hard-exiting"
    isolate_by_default: ClassVar[bool] = False

    def infer_impl(self, feeds: Any) -> Any:
        os._exit(0)


ENTRY_POINTS = {runner.name: f"faulty_backends:{runner.__name__}" for runner in (
    AbortingRunner, HangingRunner, SleepingRunner, IsolatedSleepingRunner, NativeBlockingRunner, ExitingRunner,
    HardExitingRunner)}


def install_entry_points(directory: Any) -> Any:
    """A distribution in `directory` that names these backends as deployval entry points, so a deployval
    process started with `directory` (and tests/) on PYTHONPATH finds them by name."""
    info = directory / "faulty_backends-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: faulty-backends\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[deployval.backends]\n" + "".join(f"{name} = {target}\n" for name, target in ENTRY_POINTS.items()))
    return directory

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

"""Backends that fail the way native runtimes do, for the isolation tests: a hard abort (as a
segfault would) and a hang. They run the pipeline's real ONNX artifact until they misbehave."""

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

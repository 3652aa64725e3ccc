"""A third-party deployval backend, installed through the `deployval.backends` entry point:
runs the pipeline's ONNX with onnx's own reference evaluator (pure numpy)."""

from __future__ import annotations

from typing import Any, ClassVar

from deployval.backends.base import ONNX, Runner


class ReferenceEvaluatorRunner(Runner):
    name: ClassVar[str] = "onnxref"
    description: ClassVar[str] = "onnx.reference.ReferenceEvaluator (numpy)"
    artifacts: ClassVar[dict[str, str]] = {"fp32": ONNX}

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        try:
            import onnx.reference  # noqa: F401
        except ImportError as exc:
            return False, f"onnx.reference is missing: {exc}"
        return True, ""

    def activate_impl(self) -> None:
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator(str(self.artifact.path))
        self.output_names = tuple(self.evaluator.output_names)

    def infer_impl(self, feeds: Any) -> list[Any]:
        return self.evaluator.run(None, dict(feeds))

    def to_host(self, outputs: list[Any]) -> dict[str, Any]:
        return dict(zip(self.output_names, outputs))

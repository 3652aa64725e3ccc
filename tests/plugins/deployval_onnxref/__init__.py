"""A third-party deployval backend, installed through the `deployval.backends` entry point:
runs the pipeline's ONNX with onnx's own reference evaluator (pure numpy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from deployval.backends.base import ONNX, Runner


class ReferenceEvaluatorRunner(Runner):
    name: ClassVar[str] = "onnxref"
    description: ClassVar[str] = "onnx.reference.ReferenceEvaluator (numpy)"
    artifacts: ClassVar[dict[str, str]] = {"fp32": ONNX}

    @dataclass(frozen=True)
    class Options:
        """Set with `--backend-option onnxref.verbose=N`."""

        verbose: int = field(default=0, metadata={"help": "ReferenceEvaluator's verbosity (0: quiet)"})

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        try:
            import onnx.reference  # noqa: F401
        except ImportError as exc:
            return False, f"onnx.reference is missing: {exc}"
        return True, ""

    def activate_impl(self) -> None:
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator(str(self.artifact.path), verbose=self.backend_options.verbose)
        self.details["verbose"] = self.backend_options.verbose
        self.output_names = tuple(self.evaluator.output_names)

    def infer_impl(self, feeds: Any) -> list[Any]:
        return self.evaluator.run(None, dict(feeds))

    def to_host(self, outputs: list[Any]) -> dict[str, Any]:
        return dict(zip(self.output_names, outputs))

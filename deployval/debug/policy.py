"""What debug compares and how much work it spends: the artifact kinds it reads layer by layer, the
tolerance of one layer, and the budgets for own errors and triage. Shared by the PyTorch-model and the
ONNX-file debuggers."""

from __future__ import annotations

from dataclasses import replace

from ..export.artifacts import ONNX_KINDS  # noqa: F401  (the kinds debug reads layer by layer)
from ..model.spec import ModelSpec, RunConfig, Tolerance

OWN_ALL_BYTES = 64 << 20  # below this much exposed data, every layer's own error is computed
NEIGHBOURS = 3  # diverging layers after the first that also get their own error
TRIAGE_MAX_MACS = 3e9  # what onnx.reference (numpy) replays in seconds, not minutes


def layer_tolerance(spec: ModelSpec, backend: str, precision: str, label: str, config: RunConfig) -> Tolerance:
    """The model's tolerance for backend x precision (a spec entry may name a layer like an output);
    task bounds such as argmax agreement do not apply to activations. --atol/--rtol override."""
    tolerance = spec.tolerances.resolve(backend, precision, label)
    if config.atol is not None or config.rtol is not None:
        tolerance = replace(tolerance, atol=config.atol if config.atol is not None else (tolerance.atol or 0.0),
                            rtol=config.rtol if config.rtol is not None else (tolerance.rtol or 0.0))
    return tolerance

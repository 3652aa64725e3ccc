"""The simplify pass: constant folding and fusion with onnxsim (onnxsim imported inside).

It takes a ModelProto and returns a new one (the input is never mutated) plus a details
dataclass for the report; numerics are verified by the pipeline on real inputs, not here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ExportError, first_line
from .graph import DEFAULT_DOMAINS, copy_model, iter_nodes

if TYPE_CHECKING:
    from onnx import ModelProto

__all__ = ["SimplifyDetails", "simplify_onnx"]


@dataclass
class SimplifyDetails:
    nodes_before: int
    nodes_after: int
    ops_removed: dict[str, int] = field(default_factory=dict)  # op type -> how many fewer
    ops_added: dict[str, int] = field(default_factory=dict)  # fusions (e.g. MatMul+Add -> Gemm)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _op_counts(model: ModelProto) -> Counter[str]:
    return Counter(
        n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}::{n.op_type}" for n in iter_nodes(model.graph)
    )


def simplify_onnx(model: ModelProto) -> tuple[ModelProto, SimplifyDetails]:
    """Constant-fold and fuse with onnxsim; its random-input check is skipped on purpose.

    The pipeline verifies the simplified model on the user's real inputs, which is both
    stricter and cheaper than onnxsim's check on uniform noise. Node counts include subgraphs.
    """
    try:
        import onnxsim
    except ImportError as exc:  # a dependency missing here is the row's reason, not a crash of the run
        raise ExportError(f"onnx-simplifier is not installed or does not load ({first_line(exc, named=False)}): "
                          "pip install onnxsim") from None

    before = _op_counts(model)
    try:
        simplified, ok = onnxsim.simplify(copy_model(model), check_n=0)
    except Exception as exc:
        raise ExportError(f"onnxsim failed: {first_line(exc, named=False)}") from None
    if not ok:
        raise ExportError("onnxsim produced a model that fails its own validity check")
    # onnxsim rebuilds the ModelProto; keep what describes the model (producer, metadata).
    for name in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        if getattr(model, name) and not getattr(simplified, name):
            setattr(simplified, name, getattr(model, name))
    have = {p.key for p in simplified.metadata_props}
    for prop in model.metadata_props:
        if prop.key not in have:
            simplified.metadata_props.add(key=prop.key, value=prop.value)
    after = _op_counts(simplified)
    return simplified, SimplifyDetails(
        nodes_before=sum(before.values()),
        nodes_after=sum(after.values()),
        ops_removed=dict(sorted((before - after).items())),
        ops_added=dict(sorted((after - before).items())),
    )

"""What an operator's schema allows in fp16: the typing rules the fp16 pass (fp16.py) applies to
every node. A type parameter is converted when it is bound by an input, homogeneous, holds float
here, and the schema also allows tensor(float16) for it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnx import TypeProto

FLOAT, FLOAT16 = 1, 10


def operator_schema(op_type: str, domain: str, opset: int) -> Any:
    """The operator's schema at the opset; None for an unknown operator."""
    import onnx

    try:
        return onnx.defs.get_schema(op_type, opset, domain or "")
    except Exception:  # unknown operator
        return None


def holds_float(tp: TypeProto | None) -> bool:
    """A float tensor, or a sequence / optional of them."""
    while tp is not None and tp.WhichOneof("value") in ("sequence_type", "optional_type"):
        tp = tp.sequence_type.elem_type if tp.HasField("sequence_type") else tp.optional_type.elem_type
    return tp is not None and tp.HasField("tensor_type") and tp.tensor_type.elem_type == FLOAT


def fp16_precisions(schema: Any, elems_in: Sequence[int | None], elems_out: Sequence[int | None], *,
                    flexible: bool) -> tuple[list[int | None], list[int | None]] | None:
    """Per input the precision the node reads (None: whatever is there) and per output the one it
    gives (None: as in the source model); None when no float type parameter has an fp16 version.
    A `flexible` op (Shape, Size, Cast) reads either precision as it is."""
    constraints = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    in_params = [formal(schema.inputs, i) for i in range(len(elems_in))]
    out_params = [formal(schema.outputs, i) for i in range(len(elems_out))]
    bound_by_inputs = {p.type_str for p in in_params if p is not None}
    converted = {
        p.type_str for p, e in [*zip(in_params, elems_in), *zip(out_params, elems_out)]
        if p is not None and e == FLOAT and "tensor(float16)" in constraints.get(p.type_str, ())
        and p.is_homogeneous and p.type_str in bound_by_inputs
    }
    if not converted:
        return None
    wants = [None if e != FLOAT else (None if flexible else FLOAT16 if p is not None and p.type_str in converted
                                      else FLOAT) for p, e in zip(in_params, elems_in)]
    gives = [FLOAT16 if e == FLOAT and p is not None and p.type_str in converted else None
             for p, e in zip(out_params, elems_out)]
    return wants, gives


def formal(params: Any, index: int) -> Any:
    """The formal parameter of the index-th actual input/output (the last one may be variadic)."""
    if not params:
        return None
    if index < len(params):
        return params[index]
    last = params[-1]
    return last if last.option == last.option.Variadic else None

"""fp16 ranges of every float tensor of the fp32 ONNX graph, not only of module outputs.

An overflow in forward code between two modules (`norm(relu(boost(x)) * 250.0 * 250.0)`) never shows
in a module's output, and ONNX Runtime's CPU provider keeps such a product in fp32, so only the
values of the graph's own tensors tell. The fp32 ONNX artifact (the source of the fp16 one) runs on
ONNX Runtime's CPU provider with its float tensors exposed as outputs, in consecutive segments whose
exposed tensors fit the memory budget; each segment is fed the tensors earlier segments made, so the
graph runs once in all. Each tensor is named by the module of its node, through the raw export's
scopes (the simplifier keeps node names).

Exempt are tensors the fp16 artifact keeps in fp32 (made and read only by kept nodes: --keep-fp32,
the converter's block list) and tensors that carry a constant beyond fp16's range through
value-moving ops: an attention mask's finfo(float32).min is a stand-in for -inf that the converter
clamps to -65504, not an activation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..judge.ranges import LIMITS, LayerRange, RangeFinding, ValueRange, array_stats, range_fields
from ..model.spec import KeepFp32

if TYPE_CHECKING:
    import numpy as np
    from onnx import ModelProto

FLOAT = 1  # onnx.TensorProto.FLOAT: what the fp16 converter converts
PROTOBUF_LIMIT = 1_800_000_000  # above this a segment goes to ONNX Runtime as a file with external data
# Ops whose output carries an input's values (moved, selected, scaled or offset): a constant beyond
# fp16's range stays a stand-in for infinity through them.
VALUE_MOVING = frozenset({
    "Add", "Sub", "Mul", "Div", "Neg", "Where", "Min", "Max", "Clip", "Sum", "Mean", "Identity", "Cast", "CastLike",
    "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Expand", "Tile", "Concat", "Split", "Slice",
    "Gather", "GatherElements", "GatherND", "Pad", "Dropout", "ScatterND", "ScatterElements",
})
# Ops whose outputs are probabilities (or exp): values below fp16's subnormals are ~0 by design.
PROBABILITY = frozenset({"Softmax", "Sigmoid", "HardSigmoid", "Exp"})
LAYOUT = frozenset({"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Expand", "Tile",
                    "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "Where", "Dropout"})
CONSTANT_OPS = frozenset({"Constant", "ConstantOfShape"})
# Ops whose float output holds only values of their float inputs: not measured again when those were.
COPIES = frozenset({"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Concat", "Split", "Slice",
                    "Gather", "Expand", "Tile", "Dropout"})
Target = tuple[str, int, "int | None"]  # tensor, index of its producing node, bytes (None: unknown)


@dataclass(frozen=True, kw_only=True)
class TensorRange(ValueRange):
    """One tensor's values against the limits of the lower precisions; `module` is the innermost module
    of its node ('' outside every module or without module names)."""

    tensor: str
    node: str  # producing ONNX node ('' for a graph input)
    op: str  # its op type ('input' for a graph input)
    after: str  # for forward code outside modules: the nearest module upstream
    probability: bool = False  # softmax / sigmoid values: flushing the tiny ones to zero is harmless
    merged: str = ""  # op the simplifier merged into this node (its tensor holds that later value)

    def place(self) -> str:
        if self.op == "input":
            return f"input '{self.tensor}'"
        if self.module:
            return f"layer '{self.module}'"
        if self.after:
            return f"the forward code after layer '{self.after}'"
        return f"node '{self.node}' ({self.op})"

    def detail(self) -> str:
        if self.op == "input" or not (self.module or self.after):
            return ""
        merged = f", with the {self.merged} after it merged in" if self.merged else ""
        return f" in node '{self.node}' ({self.op}{merged})"


@dataclass
class TensorRangeCheck:
    """What the tensor-level check measured, and what it left out and why."""

    ranges: list[TensorRange]
    float_tensors: int  # float tensors of the graph (inputs and node outputs)
    kept_fp32: int  # exempt: made and read only by nodes the fp16 artifact keeps in fp32
    copies: int  # not measured: moved values of measured tensors (Reshape, Concat...)
    saturating: int  # exempt: carry a constant beyond fp16's range (masks' finfo.min)
    segments: int
    budget_bytes: int
    exposed_bytes: int
    seconds: float = 0.0
    map_source: str = "none"
    notes: list[str] = field(default_factory=list)
    from_modules: int = 0  # measured by the reference run's module hooks (the module's own output tensor)


def record_tensor_ranges(
    model_path: Path,
    feeds: Mapping[str, np.ndarray],
    *,
    raw_path: Path | None = None,
    module_names: Sequence[str] = (),
    keep_fp32: Sequence[str] = (),
    fp16_details: Mapping[str, Any] | None = None,
    budget_bytes: int | None = None,
    precisions: Sequence[str] = ("fp16",),
    module_ranges: Sequence[LayerRange] = (),
) -> TensorRangeCheck:
    """Run the fp32 ONNX model at `model_path` on `feeds` and measure every float tensor that the fp16
    artifact stores in fp16. `raw_path` (the raw export) and `module_names` name the modules;
    `keep_fp32` (the --keep-fp32 patterns) and `fp16_details` (the fp16 step's details: kept_fp32,
    op_block_list) say which nodes stay fp32. Exposed tensors per ONNX Runtime run stay within
    `budget_bytes` (default: debug's memory budget). `module_ranges` (the reference run's module
    outputs, precision.ranges) measure the tensors that are a module's own output: those are not
    exposed again (a 3D U-Net's every tensor is a layer's output: no second forward pass at all)."""
    from ..export.graph import GraphIndex, cast_feeds, node_inputs
    from ..export.onnx_io import load_onnx
    from ..memory import memory_budget

    start = time.perf_counter()
    budget = memory_budget(budget_bytes)
    model = load_onnx(model_path)
    index = GraphIndex(model)
    shapes = _run_shapes(model, feeds)
    feeds = cast_feeds({k: v for k, v in feeds.items() if k in index.inputs}, index)

    names = _Names(model, raw_path, module_names)
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(index.nodes):
        for name in node_inputs(node):
            consumers.setdefault(name, []).append(i)
    plan = _Plan(index, names, consumers, _kept_nodes(model, names.chains, keep_fp32, fp16_details),
                 _carriers(model, _saturating_constants(model), VALUE_MOVING),
                 _carriers(model, {o for n in model.graph.node if n.op_type in PROBABILITY for o in n.output}, LAYOUT),
                 precisions, TensorRangeCheck([], 0, 0, 0, 0, 0, budget, 0, map_source=names.source))
    plan.measure_inputs(feeds)
    targets = plan.targets(model, shapes, _module_outputs(model, names, module_ranges, consumers, index))
    guess = plan.note_unmeasured(targets)
    plan.measure(_segments(targets, guess, budget), feeds)
    plan.check.seconds = time.perf_counter() - start
    return plan.check


@dataclass
class _Plan:
    """One graph's tensors: which the fp16 artifact stores in fp16, and their measurement into `check`."""

    index: Any  # export.graph.GraphIndex
    names: _Names
    consumers: dict[str, list[int]]  # tensor -> the nodes reading it
    kept: set[str]  # nodes that stay fp32
    saturating: set[str]  # tensors carrying a saturating constant (not judged)
    probability: set[str]  # tensors carrying a probability (softmax and layout ops after it)
    precisions: Sequence[str]
    check: TensorRangeCheck
    measured: set[str] = field(default_factory=set)

    def stored_fp16(self, name: str, producer: int | None) -> bool:
        readers = self.consumers.get(name, [])
        made_fp16 = producer is not None and self.index.nodes[producer].name not in self.kept
        return made_fp16 or any(self.index.nodes[r].name not in self.kept for r in readers)

    def count(self, name: str, producer: int | None) -> bool:
        """Count a float tensor; true when it is stored in fp16 and neither saturating nor kept fp32."""
        self.check.float_tensors += 1
        if name in self.saturating:
            self.check.saturating += 1
        elif not self.stored_fp16(name, producer):
            self.check.kept_fp32 += 1
        else:
            return True
        return False

    def measure_inputs(self, feeds: Mapping[str, np.ndarray]) -> None:
        """The graph's float inputs, measured from the feeds."""
        import numpy as np

        for name in self.index.inputs:
            value = feeds.get(name)
            if value is None or value.dtype != np.float32:
                continue
            if self.count(name, None):
                self.check.ranges.append(_range(name, "", "input", "", "", value, self.precisions))
                self.measured.add(name)

    def targets(self, model: ModelProto, shapes: Mapping[str, Any], outputs_of: Mapping[str, LayerRange]
                ) -> list[Target]:
        """The tensors to measure, in graph order, with their size when known; a module's own output
        is taken from the module's range instead, a copy of measured values is not measured again."""
        index, check = self.index, self.check
        weight_types = {t.name: t.data_type for t in model.graph.initializer}
        targets: list[Target] = []
        for i, node in enumerate(index.nodes):
            if node.op_type in CONSTANT_OPS:
                continue
            floats_in = [n for n in node.input if n and weight_types.get(n, index.elem_type(n)) in (FLOAT, None)]
            copy = node.op_type in COPIES and bool(floats_in) and all(n in self.measured for n in floats_in)
            for out in node.output:
                elem = index.elem_type(out)
                if not out or elem not in (FLOAT, None) or not self.count(out, i):
                    continue
                if copy:  # its values are some of its inputs', measured already
                    check.copies += 1
                    self.measured.add(out)
                    continue
                shape = shapes.get(out)
                size = 4 * math.prod(shape) if shape is not None and None not in shape else None
                self.measured.add(out)
                layer = outputs_of.get(out)
                if layer is not None and size is not None and layer.elements * 4 == size and layer.elements:
                    check.ranges.append(_from_module(out, node, layer, self.precisions,
                                                     tensor_probability=out in self.probability))
                    check.from_modules += 1
                    continue
                targets.append((out, i, size))  # type: ignore[arg-type]
        return targets

    def note_unmeasured(self, targets: list[Target]) -> int:
        """The size a tensor of unknown shape counts as; notes what is guessed or left unmeasured."""
        import onnx

        known = [s for _, _, s in targets if s is not None]
        guess = max(known) if known else self.check.budget_bytes // 16
        if len(known) < len(targets):
            self.check.notes.append(f"{len(targets) - len(known)} tensors of unknown shape counted as {guess} bytes "
                                    "each")
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for n in self.index.nodes for a in n.attribute):
            self.check.notes.append("tensors inside If / Loop / Scan bodies are not measured (their outputs are)")
        return guess

    def measure(self, segments: list[list[Target]], feeds: Mapping[str, np.ndarray]) -> None:
        """Run the graph segment by segment, each exposing its targets and the frontier later ones
        read, holding only what a later segment still needs."""
        import numpy as np

        index, check = self.index, self.check
        check.segments = len(segments)
        last_use = {name: max(readers) for name, readers in self.consumers.items()}
        held: dict[str, np.ndarray] = dict(feeds)
        lo = -1
        for segment in segments:
            hi = max(i for _, i, _ in segment)
            frontier = [out for node in index.nodes[lo + 1:hi + 1] for out in node.output
                        if out and last_use.get(out, -1) > hi]
            wanted = [t for t, _, _ in segment]
            values = _run_segment(index, list(dict.fromkeys(wanted + frontier)), held)
            for tensor, i, _ in segment:
                value = values.get(tensor)
                if value is None or value.dtype != np.float32:
                    continue
                check.exposed_bytes += value.nbytes
                node = index.nodes[i]
                check.ranges.append(_range(tensor, node.name, node.op_type, *self.names.where(node.name), value,
                                           self.precisions, probability=tensor in self.probability,
                                           merged=self.names.changed.get(tensor, "")))
            held.update({t: values[t] for t in frontier if t in values})
            for name in [n for n in held if last_use.get(n, -1) <= hi and n not in feeds]:
                del held[name]
            values.clear()
            lo = hi


def findings(check: TensorRangeCheck, precision: str) -> list[RangeFinding]:
    """Overflowing tensors first (in graph order), then tensors that flush to zero (probabilities,
    whose tiny values are ~0 by design, excepted)."""
    if precision not in LIMITS:
        return []

    def finding(r: TensorRange, kind: str, value: float) -> RangeFinding:
        return RangeFinding(r.module or r.after, kind, value, precision, where=r.place(), detail=r.detail(),
                            node=r.node, tensor=r.tensor)

    result = [finding(r, "overflow", r.max_abs) for r in check.ranges if r.overflows(precision)]
    result += [finding(r, "flush", r.below[precision]) for r in check.ranges
               if not r.probability and r.flushes(precision)]
    return result


# ----------------------------------------------------------------------------- naming


class _Names:
    """Module scopes of the artifact's nodes, from the raw export: by node name, else by the raw
    producer of the node's output tensor, else by the raw readers of its weights (onnxsim's Gemm for
    MatMul + Add), else the scope its neighbours share."""

    def __init__(self, model: ModelProto, raw_path: Path | None, module_names: Sequence[str]) -> None:
        self.changed: dict[str, str] = {}
        self.source = "none"
        self.nodes = list(model.graph.node)
        self.index = {node.name: i for i, node in enumerate(self.nodes)}
        self.producer = {out: i for i, node in enumerate(self.nodes) for out in node.output if out}
        self.found: list[tuple[str, ...] | None] = [None] * len(self.nodes)
        self.chains: dict[str, tuple[str, ...]] = {}
        self.exact: dict[str, tuple[str, ...]] = {}  # chains read from the export's scopes, not inferred
        if raw_path is None or not module_names:
            return
        import onnx

        from ..export.meaning import changed_meaning
        from ..export.scopes import node_chains

        raw = onnx.load(str(raw_path), load_external_data=False)
        chains, self.source = node_chains(raw, module_names)
        by_name: dict[str, tuple[str, ...]] = {}
        by_output: dict[str, tuple[str, ...]] = {}
        by_weight: dict[str, list[tuple[str, ...]]] = {}
        for node, chain in zip(raw.graph.node, chains):
            if chain is None:
                continue
            by_name[node.name] = chain
            by_output.update(dict.fromkeys(node.output, chain))
            for name in node.input:
                by_weight.setdefault(name, []).append(chain)
        self.changed = changed_meaning(raw, model)
        del raw
        weights = {t.name for t in model.graph.initializer}
        readers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for name in node.input:
                readers.setdefault(name, []).append(i)
        found = self.found
        for i, node in enumerate(self.nodes):
            found[i] = by_name.get(node.name) or next((by_output[o] for o in node.output if o in by_output), None)
            if found[i] is not None:
                self.exact[node.name] = found[i]  # type: ignore[assignment]
            if found[i] is None:
                owners = [c for name in node.input if name in weights for c in by_weight.get(name, [])]
                found[i] = _common_prefix(owners) if owners else None
        for strict in (True, True, False, False):
            for i, node in enumerate(self.nodes):
                if found[i] is not None:
                    continue
                around = [found[self.producer[n]] for n in node.input if n in self.producer]
                around += [found[j] for out in node.output for j in readers.get(out, [])]
                known = [c for c in around if c is not None]
                if known and (not strict or len(known) == len(around)):
                    found[i] = _common_prefix(known)
        self.chains = {node.name: found[i] or () for i, node in enumerate(self.nodes)}

    def where(self, node: str) -> tuple[str, str]:
        """(innermost module, '') or, for forward code outside modules, ('', the nearest module upstream)."""
        chain = self.chains.get(node, ())
        if chain:
            return chain[-1], ""
        if node not in self.index or not self.chains:
            return "", ""
        pending, seen = [self.index[node]], {self.index[node]}
        while pending:
            j = pending.pop(0)
            for name in self.nodes[j].input:
                k = self.producer.get(name)
                if k is None or k in seen:
                    continue
                if self.found[k]:
                    return "", self.found[k][-1]  # type: ignore[index]
                seen.add(k)
                pending.append(k)
        return "", ""


def _module_outputs(model: ModelProto, names: _Names, module_ranges: Sequence[LayerRange],
                    consumers: Mapping[str, list[int]], index: Any) -> dict[str, LayerRange]:
    """ONNX tensors that are some module's own output, with that module's range from the reference run:
    the tensor's node is named exactly by the export's scopes (not inferred), the simplifier did not
    merge a later op into it, and no reader (nor none at all, for a graph output) sits inside the
    module: its value leaves the module, so it is what the module returned."""
    if not module_ranges or not names.exact:
        return {}
    recorded = {r.module: r for r in module_ranges}
    graph_outputs = {o.name for o in model.graph.output}
    found: dict[str, LayerRange] = {}
    for node in index.nodes:
        chain = names.exact.get(node.name)
        if not chain or chain[-1] not in recorded:
            continue
        module = chain[-1]
        for out in node.output:
            if not out or out in names.changed:
                continue
            readers = [names.chains.get(index.nodes[r].name, ()) for r in consumers.get(out, [])]
            inside = any(len(c) >= len(chain) and c[:len(chain)] == chain for c in readers)
            if not inside and (readers or out in graph_outputs):
                found[out] = recorded[module]
    return found


def _from_module(tensor: str, node: Any, layer: LayerRange, precisions: Sequence[str], *,
                 tensor_probability: bool) -> TensorRange:
    return TensorRange(tensor=tensor, node=node.name, op=node.op_type, module=layer.module, after="",
                       max_abs=layer.max_abs, elements=layer.elements, nonzero=layer.nonzero,
                       below={p: layer.below.get(p, 0.0) for p in precisions},
                       subnormal={p: layer.subnormal.get(p, 0.0) for p in precisions},
                       probability=tensor_probability)


def _common_prefix(chains: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    common: list[str] = []
    for parts in zip(*chains):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return tuple(common)


# ----------------------------------------------------------------------------- exemptions


def _kept_nodes(model: ModelProto, chains: Mapping[str, tuple[str, ...]], keep_fp32: Sequence[str],
                details: Mapping[str, Any] | None) -> set[str]:
    """Names of the nodes the fp16 artifact computes in fp32: those its conversion step reports, and
    (whether or not that step ran) those the converter's block list and --keep-fp32 name."""
    keep = KeepFp32.of(keep_fp32)
    blocked = set(keep.op_types)
    blocked |= set((details or {}).get("op_block_list") or ())
    from ..export.fp16 import DEFAULT_OP_BLOCK_LIST

    blocked |= set(DEFAULT_OP_BLOCK_LIST)
    patterns, node_patterns = keep.modules, keep.nodes
    kept = set((details or {}).get("kept_fp32") or ())
    for node in model.graph.node:
        if node.op_type in blocked or any(fnmatchcase(node.name, p) for p in node_patterns) or (patterns and any(
                fnmatchcase(m, p) for m in chains.get(node.name, ()) for p in patterns)):
            kept.add(node.name)
    return kept


def _saturating_constants(model: ModelProto) -> set[str]:
    """Float constants (initializers, Constant / ConstantOfShape values) with a finite value beyond fp16's
    range: the converter clamps them to +-65504."""
    import numpy as np
    from onnx import numpy_helper

    limit = LIMITS["fp16"]["max"]

    def beyond(tensor: Any) -> bool:
        if tensor.data_type != FLOAT:
            return False
        values = numpy_helper.to_array(tensor)
        if not values.size:
            return False
        peak = max(-float(values.min()), float(values.max()))  # no temporaries for the usual weights
        if math.isfinite(peak):
            return peak > limit
        finite = np.abs(values[np.isfinite(values)])
        return bool(finite.size) and float(finite.max()) > limit

    found = {t.name for t in model.graph.initializer if beyond(t)}
    for node in model.graph.node:
        if node.op_type in CONSTANT_OPS and any(a.HasField("t") and beyond(a.t) for a in node.attribute):
            found.update(node.output)
    return found


def _carriers(model: ModelProto, sources: set[str], through: frozenset[str]) -> set[str]:
    """`sources` and every tensor computed from one of them by `through` ops only."""
    carried = set(sources)
    for node in model.graph.node:  # graph order is topological
        if node.op_type in through and any(name in carried for name in node.input):
            carried.update(o for o in node.output if o)
    return carried


# ----------------------------------------------------------------------------- running


def _run_shapes(model: ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int | None, ...]]:
    """Every tensor's shape for this run's input shapes (for the memory budget), from shape inference on a
    light copy whose inputs have these dims; the model that runs keeps its own declarations (ONNX
    Runtime's If inference can fail on dims a branch does not expect)."""
    import onnx

    from ..export.graph import light_copy, shape_of

    copy = light_copy(model)
    for info in copy.graph.input:
        value = feeds.get(info.name)
        if value is None or not info.type.HasField("tensor_type"):
            continue
        dims = info.type.tensor_type.shape.dim
        if len(dims) != value.ndim:
            continue
        for dim, size in zip(dims, value.shape):
            dim.Clear()
            dim.dim_value = int(size)
    del copy.graph.value_info[:]
    try:
        copy = onnx.shape_inference.infer_shapes(copy, strict_mode=False)
    except Exception:
        return {}
    return {info.name: shape_of(info) for info in [*copy.graph.value_info, *copy.graph.output]
            if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape")}


def _segments(targets: list[Target], guess: int, budget: int) -> list[list[Target]]:
    """Consecutive runs of targets whose sizes add up to at most `budget` (one target at least)."""
    segments: list[list[Target]] = []
    current: list[Target] = []
    size = 0
    for target in targets:
        nbytes = target[2] if target[2] is not None else guess
        if current and size + nbytes > budget:
            segments.append(current)
            current, size = [], 0
        current.append(target)
        size += nbytes
    if current:
        segments.append(current)
    return segments


def _run_segment(index: Any, outputs: list[str], held: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The part of the graph that computes `outputs` from the `held` tensors, run once on ONNX Runtime's
    CPU provider."""
    import tempfile

    import onnx

    from ..export.graph import region
    from ..export.onnx_io import run_onnxruntime

    cut = region(index, outputs, held.keys())
    for info in cut.model.graph.input:  # a tensor shape inference could not type: type it from its value
        if not info.type.tensor_type.elem_type and info.name in held:
            value = held[info.name]
            info.CopyFrom(onnx.helper.make_tensor_value_info(
                info.name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))
    feeds = {name: held[name] for name in cut.inputs}
    weights = sum(math.prod(t.dims) * 8 for t in cut.model.graph.initializer)  # bound, without serializing
    if weights < PROTOBUF_LIMIT:
        return run_onnxruntime(cut.model, feeds)
    with tempfile.TemporaryDirectory(prefix="deployval-ranges-") as tmp:
        path = Path(tmp) / "segment.onnx"
        onnx.save(cut.model, str(path), save_as_external_data=True, location="weights.bin")
        return run_onnxruntime(path, feeds)


def _range(tensor: str, node: str, op: str, module: str, after: str, value: np.ndarray, precisions: Sequence[str],
           *, probability: bool = False, merged: str = "") -> TensorRange:
    return TensorRange(tensor=tensor, node=node, op=op, module=module, after=after, probability=probability,
                       merged=merged, **range_fields([array_stats(value, precisions)], precisions))

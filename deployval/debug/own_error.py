"""The own error of a layer (its ONNX sub-graph replayed on the backend with the reference inputs the
hooks captured) and the search for where the error is new, for the PyTorch-model debugger (see run.py,
steps 6 and 7). A mixin of ModelDebugger (model_debugger.py), whose state it reads."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeployvalError
from ..export.artifacts import ONNX_FP16, ONNX_FP16_INT32, ONNX_INT8, ONNX_INT8_INT32
from ..metric_table import REL_L2
from ..model.spec import Tolerance
from .plan import Row
from .policy import layer_tolerance
from .report import PASS, LayerResult, Localization
from .triage import Wording, jump_localization, triage_region


@dataclass
class OwnError:
    passed: bool
    metrics: dict[str, float]
    failures: list[str]
    region: Any  # graph.Region
    feeds: dict[str, np.ndarray]
    backend_value: np.ndarray
    eager_value: np.ndarray
    path: Path  # the region saved next to the weights, for onnx.reference


def match_input(shape: tuple[int | None, ...] | None, values: Sequence[np.ndarray], used: set[int]) -> int | None:
    """The first unused eager input of this ONNX shape; else one with as many elements (the
    simplifier may drop a reshape pair and keep the tensor's name)."""
    if shape is None:
        return None
    for index, value in enumerate(values):
        if index not in used and len(shape) == value.ndim and all(s in (None, v) for s, v in zip(shape, value.shape)):
            return index
    if None in shape:
        return None
    count = int(np.prod(shape)) if shape else 1
    return next((i for i, value in enumerate(values) if i not in used and value.size == count), None)


class OwnErrorSearch:
    """Own errors, the search for where the error is new, and the triage of that region."""

    # set by ModelDebugger
    spec: Any
    config: Any
    precision: str
    kind: str
    feeds: dict[str, np.ndarray]
    report: Any
    progress: Any
    workdir: Path
    timings: dict[str, Any]
    do_triage: bool
    map: Any
    index: Any
    meanings: Any  # meaning.Meanings
    raw_nodes: set[str]
    rows: list[Row]
    state: Any
    cache: Any
    held: dict[str, Any]
    first_value: np.ndarray | None
    region_runs: int

    def _run_backend(self, path: Path, outputs: Sequence[str], feeds: Mapping[str, np.ndarray], *,
                     what: str, input_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _transient_row(self, call: Any) -> Row | None:
        """A row for an enclosing call that the report leaves out (--modules), to test its own error."""
        tensor = self.map.tensor(call.key, 0)
        tensor = self.meanings.candidate(tensor) if tensor is not None else None  # the artifact's tensor of its value
        if call.kind != "module" or tensor is None or tensor in self.index.inputs:
            return None
        mapping = self.map.calls[call.key]
        result = LayerResult(index=-1, label=call.label, kind="module", type=call.type, tensor=tensor,
                             ops=mapping.ops, own_ops=mapping.own_ops, status=PASS)
        result.tolerance = layer_tolerance(self.spec, self.report.backend, self.precision, call.label,
                                           self.config).to_dict()
        return Row(result, call.key, 0, call.index)

    def _own_error(self, call: Any, row: Row, eager: np.ndarray, frame: Any) -> OwnError | None:
        from ..export.graph import region
        from ..judge.stats import compare_tensors

        result = row.result
        start = time.perf_counter()
        try:
            if call.kind == "mark":
                available = {name: value for name, value in self.cache.items() if name != result.tensor}
                cut = region(self.index, [result.tensor or ""], available)
                feeds = {n: available[n] for n in cut.inputs if n in available}
            else:
                if frame is None or frame.inputs_changed():
                    result.own = {"unavailable": "its inputs were modified in place during the call"}
                    return None
                cut, feeds = self._module_region(call, result, frame)
                if cut is None:
                    return None
            for name in cut.graph_inputs:
                feeds[name] = self.feeds[name]
            region_path = self.workdir / f"region-{self.region_runs}.onnx"
            self.region_runs += 1
            from ..export.graph import cast_feeds, save_model

            save_model(cut.model, region_path)
            values = self._run_backend(region_path, cut.targets, cast_feeds(feeds, self.index),
                                       what=f"the sub-graph of {result.label}", input_names=cut.inputs)
            backend = values[cut.targets[0]]
            stats, failures = compare_tensors(eager, backend, Tolerance(**result.tolerance))
        except DeployvalError as exc:
            result.own = {"unavailable": exc.one_line()}
            return None
        finally:
            self.timings["own_s"] += time.perf_counter() - start
        result.own = {"metrics": stats.metrics(), "passed": not failures, "failures": failures,
                      "region_nodes": len(cut.node_names)}
        return OwnError(not failures, stats.metrics(), failures, cut, feeds, backend, np.array(eager, copy=True),
                    region_path)

    def _module_region(self, call: Any, result: LayerResult, frame: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """The call's sub-graph, fed with the eager inputs matched to its boundary tensors by shape."""
        from ..export.graph import region
        from .capture import to_numpy

        mapping = self.map.calls.get(call.key)
        # the artifact's tensors holding the values of the call's input tensors (a merged node's under its name)
        boundary = list(dict.fromkeys(held for n in (mapping.inputs if mapping else [])
                                      if (held := self.meanings.candidate(n)) is not None))
        if mapping is not None and mapping.inputs_call:  # fused with the call before: its inputs feed the nodes
            frame = self.held.pop(mapping.inputs_call, None)
            if frame is None or frame.inputs_changed():
                result.own = {"unavailable": "the inputs of the call fused into it were not kept"}
                return None, {}
        eager_inputs = [to_numpy(t) for t in frame.inputs()]
        used: set[int] = set()
        feeds: dict[str, np.ndarray] = {}
        for name in boundary:
            shape = self.index.shape(name)
            match = match_input(shape, eager_inputs, used)
            if match is None:
                if name in self.index.inputs:
                    continue  # read straight from the model's inputs
                result.own = {"unavailable": f"its input tensor '{name}' matches none of the call's eager inputs"}
                return None, {}
            used.add(match)
            value = eager_inputs[match]
            if shape is not None and None not in shape and tuple(shape) != value.shape:
                value = value.reshape(tuple(shape))  # an optimizer dropped a reshape around it
            feeds[name] = value
        cut = region(self.index, [result.tensor or ""], feeds)
        own_nodes = set(mapping.nodes if mapping else [])
        strays = [n for n in cut.node_names if n in self.raw_nodes and n not in own_nodes]
        if strays:
            result.own = {"unavailable": f"in the {self.kind} artifact its inputs are fused with nodes outside it "
                                         f"({strays[0]})"}
            return None, {}
        return cut, feeds

    # ------------------------------------------------------------------ where the error is new
    def _search_step(self, call: Any, row: Row, own: OwnError | None) -> None:
        state = self.state
        first = state.first
        assert first is not None
        if own is None and row is first:
            state.localized = Localization(
                first.result.label, "layer",
                "its own error could not be separated from what it inherits "
                f"({(first.result.own or {}).get('unavailable', 'unknown')}); it is the first layer beyond tolerance",
                ops=first.result.own_ops or first.result.ops)
            state.search_done = True
            return
        if own is None or own.passed:
            if call.key == state.chain[-1]:
                self._search_root()
            return
        state.search_done = True
        share = row.result.new_share
        ratio = "" if share is None else f" ({share:.0%} of its total rel L2)"
        if row is first:
            what = "mark" if call.kind == "mark" else "layer"
            ops = row.result.ops if call.kind == "mark" else (row.result.own_ops or row.result.ops)
            if call.kind == "mark":
                ops = self._region_ops(own.region, exclude=set())
            explanation = (f"fed the reference inputs, it alone gives rel L2 {own.metrics[REL_L2]:.3g}{ratio}"
                           + (f"; ops: {', '.join(ops)}" if ops else ""))
            state.localized = Localization(row.result.label, what, explanation, ops)
        else:
            explanation = (f"{first.result.label} only inherits its error (fed the reference inputs its own error is "
                           f"{self._own_text(first)}); the new error arises in {row.result.label}'s own code outside "
                           f"its submodules (rel L2 {own.metrics[REL_L2]:.3g} fed the reference inputs"
                           + (f"; its own ops: {', '.join(row.result.own_ops)}" if row.result.own_ops else "") + ")")
            state.localized = Localization(row.result.label, "module-code", explanation, row.result.own_ops)
        self._triage(row.result, own)

    def _own_text(self, row: Row) -> str:
        own = row.result.own or {}
        if "metrics" in own:
            return f"rel L2 {own['metrics'][REL_L2]:.3g}, within tolerance"
        return own.get("unavailable", "unknown")

    def _search_root(self) -> None:
        """No enclosing module adds the error: it comes from the model's forward code outside modules.
        Replay the region from the nearest kept reference values to the first divergent layer."""
        state = self.state
        state.search_done = True
        first = state.first
        assert first is not None
        from ..export.graph import region
        from ..judge.stats import compare_tensors

        eager = self.first_value
        available = {k: v for k, v in self.cache.items() if k != first.result.tensor}
        own: OwnError | None = None
        if eager is not None:
            start = time.perf_counter()
            try:
                cut = region(self.index, [first.result.tensor or ""], available)
                feeds = {n: available[n] for n in cut.inputs if n in available}
                for name in cut.graph_inputs:
                    feeds[name] = self.feeds[name]
                from ..export.graph import cast_feeds, save_model

                path = save_model(cut.model, self.workdir / "region-root.onnx")
                values = self._run_backend(path, cut.targets, cast_feeds(feeds, self.index),
                                           what="the region before the first divergent layer",
                                           input_names=cut.inputs)
                backend = values[cut.targets[0]]
                stats, failures = compare_tensors(eager, backend, Tolerance(**first.result.tolerance))
                own = OwnError(not failures, stats.metrics(), failures, cut, feeds, backend, eager, path)
            except DeployvalError as exc:
                self.report.notes.append(f"could not replay the region before {first.result.label}: "
                                         f"{exc.one_line()}")
            finally:
                self.timings["own_s"] += time.perf_counter() - start
        own_first = set(self.map.calls[first.key].nodes) if first.key in self.map.calls else set()
        mapping = self.map.calls.get(first.key or "")
        passed = {r.result.tensor for r in self.rows if r.result.status == PASS and r.result.tensor}
        ops = self.map.model_code_ops(list(mapping.inputs), passed) if mapping is not None else []
        if not ops and own is not None:
            ops = self._region_ops(own.region, exclude=own_first)
        earlier = [r.result for r in self.rows if r.call_index < first.call_index]
        first_own = (first.result.own or {}).get("metrics", {}).get(REL_L2)
        jump = None if first_own is None else jump_localization(earlier, first.result, first_own, self.report.backend)
        if own is not None and own.passed and jump is not None:
            state.localized = jump
            return
        if own is not None and own.passed:
            state.localized = Localization(
                first.result.label, "accumulated",
                f"no layer adds an error beyond tolerance by itself: {first.result.label}'s own error is "
                f"{self._own_text(first)}, and replaying the {len(own.region.node_names)} nodes before it from the "
                f"nearest kept reference values gives rel L2 {own.metrics[REL_L2]:.3g}; the error builds up over "
                "the layers before it (the per-layer curve shows where it grows)", ops)
            return
        explanation = (f"{first.result.label} only inherits its error (its own error: {self._own_text(first)}) and "
                       "no enclosing module adds it: it enters from the model's own forward code outside every "
                       "hooked module" + (f" (ops: {', '.join(ops)})" if ops else "")
                       + "; wrap the suspect value with deployval.mark(x, \"name\") to localize it")
        state.localized = Localization("(model forward code)", "model-code", explanation, ops)
        if own is not None:
            self._triage(first.result, own)

    def _region_ops(self, cut: Any, exclude: set[str]) -> list[str]:
        names = set(cut.node_names) - exclude
        return list(dict.fromkeys(n.op_type for n in self.index.nodes if n.name in names
                                  and n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast")))

    # ------------------------------------------------------------------ triage
    def _triage(self, result: LayerResult, own: OwnError) -> None:
        if not self.do_triage:
            return
        from ..export.graph import cast_feeds

        def evaluate() -> Any:
            from onnx.reference import ReferenceEvaluator

            evaluator = ReferenceEvaluator(str(own.path))  # loads the weights it references
            return evaluator.run(None, cast_feeds(own.feeds, self.index))[0]

        converted = {ONNX_FP16: " (after the fp16 conversion)", ONNX_INT8: " (after int8 quantization)",
                     ONNX_FP16_INT32: " (after the fp16 conversion)",
                     ONNX_INT8_INT32: " (after int8 quantization)"}.get(self.kind, "")
        words = Wording(f"the ONNX graph{converted}", "eager", "eager", self.report.backend)
        self.state.triage = triage_region(result.label, self.index, own.region.node_names, evaluate, own.eager_value,
                                          own.backend_value, own.metrics, Tolerance(**result.tolerance), words,
                                          self.progress, self.timings)

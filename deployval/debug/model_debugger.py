"""The PyTorch-model debugger's work (run.py's steps 3 to 5, with own_error.py for 6 and 7): the rows
of the layer map, the chunked backend runs with the mapped tensors exposed, and the streamed eager
comparison layer by layer."""

from __future__ import annotations

import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._util import atomic_write_json
from ..backends.base import Runner
from ..errors import BackendError, DeployvalError, UsageError, first_line
from ..export.artifacts import Artifact
from ..export.store import ArtifactStore
from ..model import inputs as inputs_mod
from ..model.spec import ModelSpec, RunConfig, Tolerance, format_shape
from ..progress import Progress, Step
from .own_error import OwnError, OwnErrorSearch
from .plan import Chunk, Row, SearchState, plan_chunks, selected
from .policy import OWN_ALL_BYTES, layer_tolerance
from .report import FAIL, PASS, SKIPPED, UNMAPPED, VANISHED, DebugReport, LayerResult


class ModelDebugger(OwnErrorSearch):
    """One debug run of a PyTorch model: the plan, the chunked backend runs, the streamed comparison."""

    def __init__(self, spec: ModelSpec, cls: type[Runner], precision: str, config: RunConfig,
                 options: dict[str, Any], feeds: dict[str, np.ndarray], module: Any, args: list[Any], surveyed: Any,
                 reference: dict[str, np.ndarray] | None, outputs_info: Mapping[str, tuple[list[int], str]],
                 store: ArtifactStore, raw: Artifact, artifact: Artifact, kind: str,
                 report: DebugReport, progress: Progress, workdir: Path, patterns: Sequence[str] | None,
                 budget: int, own_errors: str, triage: bool, timings: dict[str, Any]) -> None:
        self.spec, self.cls, self.precision, self.config, self.options = spec, cls, precision, config, options
        self.feeds, self.module, self.args, self.survey, self.reference = feeds, module, args, surveyed, reference
        self.outputs_info = dict(outputs_info)
        self.store, self.raw, self.artifact, self.kind, self.report = store, raw, artifact, kind, report
        self.progress, self.workdir, self.patterns, self.budget = progress, workdir, patterns, budget
        self.own_mode, self.do_triage, self.timings = own_errors, triage, timings
        self.calls = surveyed.by_key()
        self.rows: list[Row] = []
        self.rows_by_key: dict[str, list[Row]] = {}
        self.state = SearchState()
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()  # tensor -> eager value (for regions)
        self.cache_bytes = 0
        self.region_runs = 0
        self.held: dict[str, Any] = {}  # call key -> frame, for calls whose inputs a fused successor needs
        self.first_value: np.ndarray | None = None
        timings.setdefault("own_s", 0.0)
        timings.setdefault("triage_s", 0.0)

    # ------------------------------------------------------------------ map
    def run(self) -> None:
        from ..export.graph import GraphIndex, externalize
        from ..export.meaning import meanings
        from ..export.onnx_io import load_onnx
        from .layermap import build_map

        names = [n for n, _ in self.module.named_modules() if n]
        with self.progress.step("layer map"):
            raw_model = load_onnx(self.raw.path)
            self.map = build_map(raw_model, self.survey, names)
            self.raw_nodes = {n.name for n in raw_model.graph.node if n.name}
            self.report.map_source = self.map.source
            marks = self._mark_tensors(raw_model) if any(c.kind == "mark" for c in self.survey.calls) else {}
            model = load_onnx(self.artifact.path)
            self.meanings = meanings(raw_model, model)  # by structure, while the weights are in memory
            del raw_model
            externalize(model, self.workdir)  # the weights are written once, not once per backend run
            self.index = GraphIndex(model)
        self._plan_rows(marks)
        sizes = {r.result.tensor: r.nbytes for r in self.rows if r.result.status == PASS and r.key is not None}
        total = sum(sizes.values())
        self.own_all = self.own_mode == "all" or (self.own_mode == "auto" and total <= OWN_ALL_BYTES)
        self.cache_limit = max(total, 1) if self.own_all else min(self.budget // 4, 256 << 20)
        chunks = plan_chunks(self.rows, self.budget)
        self.report.memory = {
            "budget_bytes": self.budget, "exposed_bytes": total, "chunks": len(chunks),
            "mode": ("one backend run" if len(chunks) == 1 else f"{len(chunks)} backend runs (streamed in chunks)")
            + f" exposing {len(set(t for c in chunks for t in c.tensors))} tensors ({total / 2**20:.1f} MiB)",
            "own_errors": "every layer" if self.own_all else "around the first divergent layer",
        }
        for number, chunk in enumerate(chunks):
            self._run_chunk(chunk, number, len(chunks))
        self._finish()

    def _mark_tensors(self, raw_model: Any) -> dict[tuple[str, int], tuple[str | None, str]]:
        from .layermap import MarkBinding, transfer_marks

        bindings = [MarkBinding(**b) for b in self._marker_export()]
        return transfer_marks(bindings, raw_model)

    def _marker_export(self) -> list[dict[str, Any]]:
        """Which tensor each mark() names: from an export with markers on, cached with the artifacts."""
        from .._util import sha256_json

        cache = self.store.directory / "debug-marks.json"
        key = sha256_json([self.store.key, "marks", 1])
        if self.config.use_cache and cache.exists():
            try:
                data = json.loads(cache.read_text())
                if data.get("key") == key:
                    self.store.steps.append(Step("debug-marker-export", cached=True,
                                                 details={"markers": len(data["bindings"])}))
                    return data["bindings"]
            except (OSError, ValueError, KeyError):
                pass
        import onnx

        from ..export.onnx import export_onnx
        from .layermap import marker_bindings
        from .marks import exporting_markers

        step = Step("debug-marker-export", reproduce=None)
        path = self.workdir / "marked.onnx"
        start = time.perf_counter()
        with self.progress.step(f"export with deployval.mark() markers ({self.store.exporter})"), exporting_markers():
            step.details = export_onnx(self.module, tuple(self.args), path, input_names=self.spec.input_names,
                                       output_names=tuple(self.outputs_info), exporter=self.store.exporter,
                                       opset=self.spec.export.opset, dynamic_axes=self.spec.export.dynamic_axes)
        step.seconds = time.perf_counter() - start
        bindings = [b.to_dict() for b in marker_bindings(onnx.load(str(path), load_external_data=False))]
        step.details["markers"] = len(bindings)
        self.store.steps.append(step)
        if self.config.use_cache:
            atomic_write_json(cache, {"key": key, "bindings": bindings})
        return bindings

    def _plan_rows(self, marks: Mapping[tuple[str, int], tuple[str | None, str]]) -> None:
        index = 0
        for call in self.survey.calls:
            if call.kind == "module" and not selected(call.name, self.patterns):
                continue
            mapping = self.map.calls.get(call.key) if call.kind == "module" else None
            for position, info in enumerate(call.outputs):
                label = call.label if len(call.outputs) == 1 else f"{call.label}[{position}]"
                result = LayerResult(index=index, label=label, kind=call.kind, type=call.type,
                                     shape=list(info.shape), ancestors=[self._label(a) for a in call.ancestors])
                index += 1
                if call.kind == "mark":
                    tensor, reason = marks.get((call.name, call.call), (None, "the marker export did not show it"))
                else:
                    tensor = mapping.tensors[position] if mapping else None
                    reason = (mapping.reason if mapping else "") or "not found in the export"
                    if mapping:
                        result.ops, result.own_ops = mapping.ops, mapping.own_ops
                        if mapping.note and tensor is not None:
                            reason = mapping.note
                self._add_row(result, call.key, position, call.index, info.nbytes, tensor, reason)
        for name, (shape, _dtype) in self.outputs_info.items():
            result = LayerResult(index=index, label=name, kind="output", type="output", shape=list(shape))
            index += 1
            self._add_row(result, None, 0, 1 << 60, 0, name, "")

    def _add_row(self, result: LayerResult, key: str | None, position: int, call_index: int, nbytes: int,
                 tensor: str | None, reason: str) -> None:
        result.tolerance = layer_tolerance(self.spec, self.report.backend, self.precision, result.label,
                                           self.config).to_dict()
        held = tensor if tensor is None or key is None else self.meanings.candidate(tensor)  # outputs: by name
        if tensor is None:
            result.status, result.reason = UNMAPPED, reason
        elif held is None or held not in self.index.tensor_names:
            result.status, result.reason = VANISHED, self.meanings.why_not(tensor, self.kind)
        elif held in self.index.inputs:
            result.status, result.reason = SKIPPED, "it is a graph input"
        elif held in self.index.initializers:
            result.status, result.reason = SKIPPED, f"it is a constant in the {self.kind} artifact (folded)"
        else:
            result.status = PASS  # provisional: compared later
            mapping = self.map.calls.get(key) if key is not None else None
            notes = [reason] if reason and mapping is not None and mapping.note == reason else []
            if held != tensor:  # the tensor of that name holds another value; this one holds the layer's
                merged = self.meanings.merged.get(held)
                notes.append(f"in the {self.kind} artifact the tensor '{held}' holds its value"
                             + (f" (the {merged.ops} merged into its node)" if merged else ""))
            result.reason = "; ".join(notes)
            tensor = held
        result.tensor = tensor
        row = Row(result, key, position, call_index, nbytes)
        self.rows.append(row)
        if key is not None:
            self.rows_by_key.setdefault(key, []).append(row)

    def _label(self, key: str) -> str:
        call = self.calls.get(key)
        return call.label if call is not None else key

    # ------------------------------------------------------------------ one chunk
    def _run_chunk(self, chunk: Chunk, number: int, total: int) -> None:
        from ..export.graph import expose, save_model

        label = f"{self.report.backend} {self.precision}" + (f" (chunk {number + 1}/{total})" if total > 1 else "")
        model = expose(self.index, chunk.tensors, keep_outputs=chunk.last)
        path = save_model(model, self.workdir / f"debug-{number}.onnx")
        outputs = tuple(o.name for o in model.graph.output)
        del model
        start = time.perf_counter()
        with self.progress.step(f"running the debug model on {label}"):
            values = self._run_backend(path, outputs, self.feeds, what="the debug model")
        self.timings["backend_s"] = self.timings.get("backend_s", 0.0) + time.perf_counter() - start
        users: dict[str, int] = {}
        for row in self.rows:
            if row.result.status == PASS and row.key is not None and chunk.lo <= row.call_index <= chunk.hi:
                users[row.result.tensor or ""] = users.get(row.result.tensor or "", 0) + 1
        start = time.perf_counter()
        with self.progress.step("comparing layer by layer (eager, streaming)"):
            self._stream(chunk, values, users)
        self.timings["stream_s"] = self.timings.get("stream_s", 0.0) + time.perf_counter() - start
        if chunk.last:
            self._compare_outputs(values)
        values.clear()
        path.unlink(missing_ok=True)

    def _run_backend(self, path: Path, outputs: Sequence[str], feeds: Mapping[str, np.ndarray], *,
                     what: str, input_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        artifact = Artifact(self.kind, path=path, input_names=tuple(input_names or self.spec.input_names),
                            output_names=tuple(outputs))
        runner = self.cls(artifact, self.precision, self.config.device, self.options)
        try:
            runner.activate()
            prepared = inputs_mod.adapt_for_backend(feeds, runner.input_dtypes(), runner.name)
            values = runner.infer(prepared)
        except DeployvalError:
            raise
        except Exception as exc:
            raise BackendError(f"{self.report.backend} could not run {what}: {first_line(exc)}") from exc
        finally:
            runner.deactivate()
        return {k: np.asarray(v) for k, v in values.items()}

    def _stream(self, chunk: Chunk, values: dict[str, np.ndarray], users: dict[str, int]) -> None:
        import torch

        from .capture import CallTracer, StopForward, tensor_leaves, to_numpy

        expected = iter(self.survey.calls)
        stop_after = None if chunk.last else chunk.hi

        def next_call(kind: str, name: str, number: int) -> Any:
            call = next(expected, None)
            if call is None or (call.kind, call.name, call.call) != (kind, name, number):
                raise UsageError("the model's forward calls different modules on the same inputs from one run to "
                                 "the next (is it deterministic?); debug needs the same calls in every pass")
            return call

        hold = {m.inputs_call for m in self.map.calls.values() if m.inputs_call}

        def handle(call: Any, tensors: list[torch.Tensor], frame: Any) -> None:
            if frame is not None and call.key in hold:
                self.held[call.key] = frame
            if chunk.lo <= call.index <= chunk.hi:
                for row in self.rows_by_key.get(call.key, []):
                    if row.result.status == PASS and row.output_index < len(tensors):
                        self._compare_row(row, to_numpy(tensors[row.output_index]), values, users)
                self._after_call(call, tensors, frame)
            if stop_after is not None and call.index >= stop_after:
                raise StopForward

        def on_module(frame: Any, output: Any) -> None:
            handle(next_call("module", frame.name, frame.call), tensor_leaves(output), frame)

        def on_mark(name: str, number: int, value: torch.Tensor, ancestors: tuple[str, ...]) -> None:
            handle(next_call("mark", name, number), [value], None)

        tracer = CallTracer(self.module, on_module, on_mark)
        with contextlib.suppress(StopForward):
            outputs = tracer.run(self.args)
            if chunk.last and self.reference is None:  # the survey came from the cache
                from ..backends.torch_common import name_outputs

                self.reference = {k: to_numpy(v) for k, v in
                                  name_outputs(outputs, tuple(self.outputs_info)).items()}

    # ------------------------------------------------------------------ per layer
    def _compare_row(self, row: Row, eager: np.ndarray, values: dict[str, np.ndarray],
                     users: dict[str, int]) -> None:
        from ..judge.stats import compare_tensors

        result = row.result
        tensor = result.tensor or ""
        backend = values.get(tensor)
        if backend is None:
            result.status, result.reason = SKIPPED, "the backend did not return its tensor"
            return
        tolerance = Tolerance(**result.tolerance)
        if backend.shape != eager.shape and backend.size == eager.size:
            result.reason = "; ".join(filter(None, (
                result.reason, f"the ONNX tensor has shape {format_shape(backend.shape)} (an optimizer removed a "
                               f"reshape); compared element by element as {format_shape(eager.shape)}")))
            backend = backend.reshape(eager.shape)
        stats, failures = compare_tensors(eager, backend, tolerance)
        result.metrics, result.failures = stats.metrics(), failures
        result.status = FAIL if failures else PASS
        users[tensor] = users.get(tensor, 1) - 1
        if users[tensor] <= 0 and tensor not in self.index.outputs:
            values.pop(tensor, None)  # released as soon as its last layer is compared
        self._remember(tensor, eager)
        if failures and self.state.first is None:
            self.state.first = row
            self.first_value = np.array(eager, copy=True)  # kept whatever the cache holds: regions end here
            call = self.calls[row.key or ""]
            self.state.chain = [call.key, *call.ancestors]

    def _remember(self, tensor: str, eager: np.ndarray) -> None:
        """Keep recent reference values (copies: later in-place ops must not change them), within a byte
        budget: replaying a region from them gives the own error of marks and of code outside modules."""
        if tensor in self.cache or eager.nbytes > (self.cache_limit if self.own_all else self.cache_limit // 4):
            return
        self.cache[tensor] = np.array(eager, copy=True)
        self.cache_bytes += eager.nbytes
        while self.cache_bytes > self.cache_limit and self.cache:
            _, dropped = self.cache.popitem(last=False)
            self.cache_bytes -= dropped.nbytes

    def _after_call(self, call: Any, tensors: list[Any], frame: Any) -> None:
        """Own errors where they are wanted, and the search for where the error is new."""
        from .capture import to_numpy

        state = self.state
        rows = [r for r in self.rows_by_key.get(call.key, []) if r.result.compared]
        in_chain = not state.search_done and call.key in state.chain
        search_row: Row | None = None
        if in_chain:
            if state.first is not None and state.first.key == call.key:
                search_row = state.first
            else:
                search_row = rows[0] if rows else self._transient_row(call)
        search_own: OwnError | None = None
        for row in rows:
            wanted = self.own_all or row is search_row or (row.result.status == FAIL and state.neighbours_left > 0)
            done_key = f"{call.key}[{row.output_index}]"
            if not wanted or done_key in state.own_done:
                continue
            state.own_done.add(done_key)
            if row.result.status == FAIL and row is not state.first and row is not search_row:
                state.neighbours_left -= 1
            own = self._own_error(call, row, to_numpy(tensors[row.output_index]), frame)
            if row is search_row:
                search_own = own
        if not in_chain:
            return
        if search_row is not None and search_row not in rows and search_row.output_index < len(tensors):
            search_own = self._own_error(call, search_row, to_numpy(tensors[search_row.output_index]), frame)
        if search_row is None:  # an enclosing call that cannot be compared: look past it
            if call.key == state.chain[-1]:
                self._search_root()
            return
        self._search_step(call, search_row, search_own)

    # ------------------------------------------------------------------ outputs and summary
    def _compare_outputs(self, values: Mapping[str, np.ndarray]) -> None:
        from ..judge.metrics import compare_output

        for row in self.rows:
            if row.key is not None or row.result.status != PASS:
                continue
            result = row.result
            name = result.tensor or result.label
            tolerance = self.spec.tolerances.resolve(self.report.backend, self.precision, name)
            if self.config.atol is not None or self.config.rtol is not None:
                tolerance = Tolerance(**result.tolerance)
            comparison = compare_output(name, self.reference[name], values.get(name), tolerance, self.spec.task,
                                        slices=self.config.slices)
            result.tolerance = tolerance.to_dict()
            result.metrics = {**comparison.metrics, **{f"task_{k}": v for k, v in comparison.task.items()
                                                       if isinstance(v, float)}}
            result.failures = list(comparison.failures)
            result.status = PASS if comparison.passed else FAIL
            if comparison.histogram is not None:
                result.histogram = comparison.histogram
            if result.status == FAIL and self.state.first is None:
                self.state.first = row

    def _finish(self) -> None:
        state, report = self.state, self.report
        report.layers = [r.result for r in self.rows]
        for row in self.rows:  # rows that were never reached (e.g. a chunk stopped early) are not "pass"
            if row.result.status == PASS and not row.result.metrics:
                row.result.status, row.result.reason = SKIPPED, "not reached in the streamed run"
        if state.first is not None:
            report.first_divergent = state.first.result.label
            if state.localized is None and state.first.key is None:
                report.notes.append("only the final outputs diverge: no mapped layer exceeds its tolerance")
            report.localized = state.localized
            report.triage = state.triage
        unmapped = [r for r in self.rows if r.result.status in (UNMAPPED, VANISHED)]
        if unmapped:
            report.notes.append(f"{len(unmapped)} of {len(self.rows)} layers could not be compared (see their reasons)")
        if self.rows and all(r.result.status in (UNMAPPED, VANISHED) for r in self.rows if r.key is not None):
            report.warnings.append(f"no layer could be mapped onto the ONNX graph ({self.map.source})")


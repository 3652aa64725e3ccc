"""`debug` for a model that exists only as an ONNX file (Polygraphy's `--onnx-outputs mark all`, with
localization): the layers are the file's nodes, the reference is ONNX Runtime fp32 on the CPU running
the file itself, the candidate is the artifact the backend runs at the precision (the simplified,
fp16 or int8 ONNX that the artifact store builds from the file).

1. **Rows**: one per output of every top-level node, in graph order, labelled by the node's name and
   typed by its op. The fp16 converter and the int8 quantizer keep the names of the node outputs they
   convert (their Cast and Q/DQ nodes get new names), but a node that absorbed the ops after it
   (BatchNormalization folded into a Conv) keeps its name and not its value: which candidate tensor
   holds which reference value is decided by structure (meaning.py). A node whose value the candidate
   holds under another name is compared with that tensor; one whose value it lacks (folded or fused)
   is listed as vanished, with the reason. Nodes in If/Loop/Scan bodies cannot be graph outputs: their
   enclosing node's outputs stand for them.
2. **Chunks**: consecutive rows whose tensors, and the reference values their replays read, fit half
   the memory budget, both sides being held (sizes from shape inference, then measured). Per chunk the
   reference and the candidate each run once with those tensors exposed (graph.expose), the rows are
   compared (stats.compare_tensors) and every value is released before the next chunk.
3. **New versus inherited**: a row's *own* error is what the candidate's nodes computing its tensor
   from tensors the reference has (the node with its Cast or Q/DQ wrappers) give when fed the
   reference values. A chunk's regions are merged into one model, their tensors renamed apart, so a
   chunk costs one backend run for all its own errors instead of one per node (for TensorRT, one
   engine build per node); regions holding If/Loop bodies, which read outer names, run alone.
4. **Localization**: the error is new in the first divergent node when its own error exceeds the
   tolerance; otherwise it accumulates over the nodes before it. **Triage** replays that region on
   onnx.reference: a conversion that computes something else, or a runtime departing from the spec.
"""

from __future__ import annotations

import fnmatch
import itertools
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._util import sha256_file, timed_import
from ..backends.base import Runner, check_available
from ..errors import BackendError, DeployvalError, UsageError, first_line
from ..export.artifacts import ONNX, ONNX_INT32, ONNX_RAW, Artifact
from ..metric_table import REL_L2
from ..model import inputs as inputs_mod
from ..model.spec import ModelSpec, RunConfig, Tolerance
from ..progress import Progress
from ..run.session import Session
from .policy import NEIGHBOURS, ONNX_KINDS, OWN_ALL_BYTES, layer_tolerance
from .report import FAIL, PASS, SKIPPED, VANISHED, DebugReport, LayerResult, Localization, debugging
from .triage import Wording, jump_localization, triage_region

if TYPE_CHECKING:
    from onnx import ModelProto


PROBE_ROWS = 16  # rows of the first chunk when shape inference could not size every tensor,
PROBE_MARGIN = 64  # unless 64 times the estimate still fits the budget
REGION_MAX_NODES = 64  # a replay region larger than this is no longer "the node"
WRAPPERS = ("Cast", "QuantizeLinear", "DequantizeLinear")  # what conversions put around a node
CONVERSIONS = {"fp16": "the fp16 conversion", "int8": "int8 quantization"}  # what made a non-fp32 artifact


@dataclass
class _Row:
    result: LayerResult  # its tensor: the candidate's, once placed
    reference: str = ""  # the file's tensor
    candidate: str = ""  # the candidate's tensor holding its value
    nodes: list[int] = field(default_factory=list)  # candidate nodes computing it from tensors the reference has
    inputs: list[str] = field(default_factory=list)  # their inputs: candidate tensors holding reference values
    sources: dict[str, str] = field(default_factory=dict)  # each input -> the reference tensor fed to it
    subgraphs: bool = False  # the region holds an If/Loop/Scan node: replayed alone, names kept


@dataclass
class _Own:
    """The first divergent node's replay, kept for the triage."""

    row: _Row
    feeds: dict[str, np.ndarray]
    value: np.ndarray
    reference: np.ndarray
    metrics: dict[str, float]


def debug_onnx_file(session: Session, cls: type[Runner], precision: str, *, patterns: Sequence[str] | None,
                    command: str | None, budget: int, own_errors: str, triage: bool) -> DebugReport:
    """Localize where `cls` at `precision` diverges from ONNX Runtime fp32 on the session's file, node by
    node. `patterns` (fnmatch) select nodes by name or op type."""
    started = time.perf_counter()
    timed_import("onnx")
    timed_import("onnxruntime")
    from ..backends.onnxruntime import OnnxRuntimeRunner

    ok, reason = check_available(OnnxRuntimeRunner, "cpu")
    if not ok:
        raise UsageError(f"ONNX models need ONNX Runtime for the reference run: {reason}")
    spec, config, feeds, progress = session.spec, session.config, session.feeds, session.progress
    record = session.run_record(command or shlex.join(["deployval", "debug", spec.path or spec.name, "--backend",
                                                       cls.name, "--precision", precision]))
    record.model.update(sha256=session.model_digest, output_names=list(spec.output_names or ()))
    report = DebugReport.from_record(record, backend=cls.name, precision=precision,
                                     faithful=cls.faithful(precision, config.device),
                                     map_source="the file's node outputs, matched by graph structure")
    report.warnings.extend(cls.caveats(precision, config.device))
    store = session.store(tuple(spec.output_names or ()),
                          reproduce=f"deployval export {shlex.quote(spec.path or '')} --out DIR")
    timings = session.timings
    timings.update(reference_s=0.0, backend_s=0.0, own_s=0.0, triage_s=0.0)
    with debugging(report, store, timings, started) as workdir:
        options = session.backend_options(store)
        options["engine_cache_dir"] = None  # debug graphs are one-off, and their weights live outside the file
        kind = cls.artifact_for(precision, options)
        if kind not in ONNX_KINDS:
            raise UsageError(f"'{spec.name}' is an ONNX file: the {cls.name} backend runs '{kind}' (debug it on an "
                             "ONNX backend: ort, trt, ort-trt)")
        artifact = store.get(kind)
        report.artifact = {**artifact.to_dict(), "kind": kind}
        _FileDebugger(spec, cls, OnnxRuntimeRunner, precision, config, options, feeds, Path(artifact.path or ""),
                      kind, report, progress, workdir, patterns, budget, own_errors, triage, timings).run()
    return report


class _FileDebugger:
    def __init__(self, spec: ModelSpec, cls: type[Runner], reference_cls: type[Runner], precision: str,
                 config: RunConfig, options: dict[str, Any], feeds: dict[str, np.ndarray], candidate: Path, kind: str,
                 report: DebugReport, progress: Progress, workdir: Path, patterns: Sequence[str] | None,
                 budget: int, own_errors: str, triage: bool, timings: dict[str, Any]) -> None:
        self.spec, self.cls, self.reference_cls, self.precision = spec, cls, reference_cls, precision
        self.config, self.options, self.feeds, self.candidate_path = config, options, feeds, candidate
        self.kind, self.report, self.progress, self.workdir = kind, report, progress, workdir
        self.patterns, self.budget, self.own_mode, self.do_triage = patterns, budget, own_errors, triage
        self.timings = timings
        self.rows: list[_Row] = []
        self.first: _Row | None = None
        self.first_own: _Own | None = None
        self.neighbours_left = NEIGHBOURS
        self.runs = self.largest = self.largest_run = 0

    # ------------------------------------------------------------------ plan
    def run(self) -> None:
        from ..export.graph import GraphIndex, externalize, iter_nodes, subgraphs, tensor_bytes
        from ..export.meaning import meanings
        from ..export.onnx_io import load_onnx

        with self.progress.step("reading the ONNX file and the debugged artifact"):
            reference, candidate = load_onnx(Path(self.spec.path or "")), load_onnx(self.candidate_path)
            self.ref_index, self.index = GraphIndex(reference), GraphIndex(candidate)
            self.meanings = meanings(reference, candidate)  # before the weights are written out
            self.sizes = tensor_bytes(reference, self.feeds)
            self.largest = max(self.sizes.values(), default=0)
            producer = " ".join(filter(None, (reference.producer_name, reference.producer_version)))
            self.report.exporter = f"none: an ONNX file (made by {producer or 'an unrecorded producer'})"
            self.report.model["nodes"] = len(reference.graph.node)
            hidden = [n for n in reference.graph.node if subgraphs(n)]
            if hidden:
                inner = sum(1 for n in hidden for sub in subgraphs(n) for _ in iter_nodes(sub))
                self.report.notes.append(
                    f"{inner} nodes inside the bodies of {len(hidden)} {'/'.join(sorted({n.op_type for n in hidden}))} "
                    "nodes cannot be exposed as graph outputs: the enclosing node's outputs are compared for them")
            externalize(reference, self.workdir / "reference")  # weights written once, not once per run
            externalize(candidate, self.workdir / "candidate")
        self._plan_rows()
        todo = [r for r in self.rows if r.result.status == PASS and r.result.kind == "node"]
        total, compared = sum(self._estimate(r.reference) for r in todo), len(todo)
        self.own_all = self.own_mode == "all" or (self.own_mode == "auto" and total <= OWN_ALL_BYTES)
        unsized = any(r.reference not in self.sizes for r in todo)
        chunks, self.probing = 0, unsized and total * PROBE_MARGIN > self.budget
        while todo or not chunks:
            rows, extra = self._next_chunk(todo)
            self._run_chunk(rows, extra, chunks, last=not todo)
            chunks += 1
        self.report.memory = {
            "budget_bytes": self.budget, "exposed_bytes": total, "chunks": chunks,
            "largest_run_bytes": self.largest_run,
            "mode": ("one run each" if chunks == 1 else f"{chunks} runs each (streamed in chunks)")
            + f" of the reference and the candidate, exposing {compared} node outputs ({total / 2**20:.1f} MiB)",
            "own_errors": "every node" if self.own_all else "around the first divergent node",
        }
        self._finish()

    def _plan_rows(self) -> None:
        ref = self.ref_index
        available = {name: value for name, value in self.meanings.sources().items()
                     if value in ref.producer or value in ref.inputs}
        labels: set[str] = set()
        constants = 0
        for position, node in enumerate(ref.nodes):
            if node.op_type == "Constant":
                constants += 1
                continue
            label = base = node.name or f"{node.op_type}_{position}"
            for n in itertools.count(2):
                if label not in labels:
                    break
                label = f"{base}#{n}"
            labels.add(label)
            if self.patterns and not any(fnmatch.fnmatchcase(label, p) or fnmatch.fnmatchcase(node.op_type, p)
                                         for p in self.patterns):
                continue
            outputs = [o for o in node.output if o]
            for k, tensor in enumerate(outputs):
                result = LayerResult(index=len(self.rows), label=label if len(outputs) == 1 else f"{label}[{k}]",
                                     kind="node", type=node.op_type, tensor=tensor, ops=[node.op_type])
                result.tolerance = layer_tolerance(self.spec, self.cls.name, self.precision, result.label,
                                                   self.config).to_dict()
                row = _Row(result, reference=tensor)
                self._place(row, available)
                self.rows.append(row)
        if constants:
            self.report.notes.append(f"{constants} Constant nodes are not listed (nothing to compare)")
        for name in ref.outputs:
            result = LayerResult(index=len(self.rows), label=name, kind="output", type="output", tensor=name,
                                 status=PASS if name in self.index.tensor_names else VANISHED)
            result.reason = "" if result.status == PASS else f"the {self.kind} artifact has no output '{name}'"
            self.rows.append(_Row(result, reference=name, candidate=name))

    def _place(self, row: _Row, available: Mapping[str, str]) -> None:
        """Which candidate tensor holds the row's value, and the candidate's nodes computing it from
        tensors that hold reference values (`available`: candidate tensor -> reference tensor)."""
        import onnx

        from ..export.graph import node_inputs

        result, index = row.result, self.index
        tensor = row.reference
        row.candidate = self.meanings.candidate(tensor) or ""
        result.tensor = row.candidate or tensor
        if not row.candidate:
            result.status, result.reason = VANISHED, self.meanings.why_not(tensor, self.kind)
        elif row.candidate in index.initializers:
            result.status, result.reason = SKIPPED, f"it is a constant in the {self.kind} artifact (folded)"
        elif row.candidate in index.inputs:
            result.status, result.reason = SKIPPED, "it is a graph input"
        else:
            result.status = PASS  # provisional: compared later
            producer = index.producer[row.candidate]
            if row.candidate != tensor:
                merged = self.meanings.merged.get(row.candidate)
                result.reason = (f"in the {self.kind} artifact node '{index.nodes[producer].name}' computes it"
                                 + (f" (the {merged.ops} merged into it)" if merged else "")
                                 + f": compared with its tensor '{row.candidate}'")
            root = self.meanings.root(tensor)  # a wrapped copy of its own value is no place to start from
            stop = {name for name, value in available.items() if self.meanings.root(value) != root}
            nodes, reached = index.ancestors(node_inputs(index.nodes[producer]), stop)
            row.nodes = sorted({*nodes, producer})
            row.inputs = [n for n in dict.fromkeys(i for k in row.nodes for i in node_inputs(index.nodes[k]))
                          if n in reached]
            row.sources = {n: available.get(n, n) for n in row.inputs}
            row.subgraphs = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                for k in row.nodes for a in index.nodes[k].attribute)
            ops = list(dict.fromkeys(index.nodes[k].op_type for k in row.nodes))
            result.ops = [op for op in ops if op not in WRAPPERS] + [op for op in ops if op in WRAPPERS]

    def _estimate(self, tensor: str) -> int:
        """A tensor's bytes: inferred or measured; else the largest tensor seen so far."""
        if tensor in self.sizes:
            return self.sizes[tensor]
        return max([self.largest, *(v.nbytes for v in self.feeds.values())])

    def _next_chunk(self, todo: list[_Row]) -> tuple[list[_Row], list[str]]:
        """The next rows (taken off `todo`) whose tensors, and the other reference tensors their replays
        read, fit half the budget: the reference's and the candidate's (or the replays') values are held
        together. While shape inference left sizes unknown, the first chunk is a short probe."""
        rows: list[_Row] = []
        seen: set[str] = set()
        size = 0
        while todo:
            wanted = [t for t in dict.fromkeys([todo[0].reference, *todo[0].sources.values()])
                      if t not in self.feeds]
            extra = sum(self._estimate(t) for t in wanted if t not in seen)
            if rows and (size + extra > self.budget // 2 or (self.probing and len(rows) >= PROBE_ROWS)):
                break
            rows.append(todo.pop(0))
            seen.update(wanted)
            size += extra
        skip = {r.reference for r in rows} | set(self.feeds)
        return rows, [t for t in dict.fromkeys(t for r in rows for t in r.sources.values()) if t not in skip]

    # ------------------------------------------------------------------ one chunk
    def _run_chunk(self, rows: list[_Row], extra: list[str], number: int, last: bool) -> None:
        part = f" (chunk {number + 1})" if number or not last else ""
        tensors = [r.reference for r in rows]
        start = time.perf_counter()
        with self.progress.step(f"reference: onnxruntime fp32 on the file{part}"):
            reference = self._exposed("reference", [*tensors, *extra], number, last)
        middle = time.perf_counter()
        with self.progress.step(f"candidate: {self.cls.name} {self.precision} on the {self.kind} artifact{part}"):
            candidate = self._exposed("candidate", [r.candidate for r in rows], number, last)
        self.timings["reference_s"] += middle - start
        self.timings["backend_s"] += time.perf_counter() - middle
        for name, value in reference.items():  # measured: later chunks are planned with real sizes
            self.sizes[name] = value.nbytes
            self.largest = max(self.largest, value.nbytes)
        self.largest_run = max(self.largest_run, sum(v.nbytes for v in (*reference.values(), *candidate.values())))
        self.probing = False
        reference.update(self.feeds)
        for row in rows:
            self._compare(row, reference, candidate)
        if last:
            self._compare_outputs(reference, candidate)
        candidate.clear()
        wanted = [r for r in rows if r.result.compared and (self.own_all or self._neighbour(r))]
        if wanted:
            start = time.perf_counter()
            with self.progress.step(f"own errors: {len(wanted)} nodes fed the reference values{part}"):
                self._own_errors(wanted, reference)
            self.timings["own_s"] += time.perf_counter() - start
        reference.clear()

    def _exposed(self, side: str, tensors: list[str], number: int, last: bool) -> dict[str, np.ndarray]:
        from ..export.graph import expose, save_model

        model = expose(self.ref_index if side == "reference" else self.index, tensors, keep_outputs=last)
        path = save_model(model, self.workdir / side / f"debug-{number}.onnx")
        return self._run(path, [o.name for o in model.graph.output], self.feeds, what=f"the {side} model",
                         reference=side == "reference")

    def _neighbour(self, row: _Row) -> bool:
        """Own errors around the first divergent node: it and the next few diverging ones."""
        if row.result.status != FAIL or row is self.first:
            return row is self.first
        self.neighbours_left -= 1
        return self.neighbours_left >= 0

    def _run(self, path: Path, outputs: Sequence[str], feeds: Mapping[str, np.ndarray], *, what: str,
             input_names: Sequence[str] | None = None, reference: bool = False) -> dict[str, np.ndarray]:
        artifact = Artifact(ONNX_RAW if reference else self.kind, path=path, sha256=sha256_file(path),
                            input_names=tuple(input_names or self.spec.input_names), output_names=tuple(outputs))
        runner = (self.reference_cls(artifact, "fp32", "cpu") if reference
                  else self.cls(artifact, self.precision, self.config.device, self.options))
        self.runs += 1
        try:
            runner.activate()
            values = runner.infer(inputs_mod.adapt_for_backend(feeds, runner.input_dtypes(), runner.name))
        except DeployvalError:
            raise
        except Exception as exc:
            who = "onnxruntime (the fp32 reference)" if reference else self.cls.name
            raise BackendError(f"{who} could not run {what}: {first_line(exc)}") from exc
        finally:
            runner.deactivate()
        return {k: np.asarray(v) for k, v in values.items()}

    def _compare(self, row: _Row, reference: Mapping[str, np.ndarray], values: Mapping[str, np.ndarray]) -> None:
        from ..judge.stats import compare_tensors

        result = row.result
        ref, cand = reference.get(row.reference), values.get(row.candidate)
        if ref is None or cand is None:
            result.status = SKIPPED
            result.reason = f"the {'reference' if ref is None else self.cls.name} run did not return its tensor"
            return
        result.shape = list(ref.shape)
        stats, failures = compare_tensors(ref, cand, Tolerance(**result.tolerance))  # fp16 values upcast blockwise
        result.metrics, result.failures = stats.metrics(), failures
        result.status = FAIL if failures else PASS
        if failures and self.first is None:
            self.first = row

    def _compare_outputs(self, reference: Mapping[str, np.ndarray], values: Mapping[str, np.ndarray]) -> None:
        """The graph outputs, judged as `compare` judges them (the outputs' tolerance, task metrics)."""
        from ..judge.metrics import compare_output
        from ..judge.stats import compare_tensors

        for result in (r.result for r in self.rows if r.result.kind == "output" and r.result.status == PASS):
            name = result.tensor or ""
            tolerance = self.spec.tolerances.resolve(self.cls.name, self.precision, name)
            if self.config.atol is not None or self.config.rtol is not None:
                tolerance = layer_tolerance(self.spec, self.cls.name, self.precision, name, self.config)
            comparison = compare_output(name, reference[name], values.get(name), tolerance, self.spec.task,
                                        slices=self.config.slices)
            result.shape, result.tolerance = list(np.shape(reference[name])), tolerance.to_dict()
            result.metrics = {**comparison.metrics, **{f"task_{k}": v for k, v in comparison.task.items()
                                                       if isinstance(v, float)}}
            result.failures = list(comparison.failures)
            result.status = PASS if comparison.passed else FAIL
            if values.get(name) is not None and np.shape(values[name]) == np.shape(reference[name]):
                result.histogram = compare_tensors(reference[name], values[name], tolerance,
                                                   histogram=True)[0].histogram()
            if result.status == FAIL and self.first is None:
                self.first = next(r for r in self.rows if r.result is result)

    # ------------------------------------------------------------------ own errors
    def _own_errors(self, rows: list[_Row], reference: Mapping[str, np.ndarray]) -> None:
        for row in rows:
            if len(row.nodes) > REGION_MAX_NODES:
                row.result.own = {"unavailable": f"in the {self.kind} artifact its tensor is {len(row.nodes)} nodes "
                                                 "away from any tensor the reference has"}
        small = [r for r in rows if len(r.nodes) <= REGION_MAX_NODES]
        merged = [r for r in small if not r.subgraphs]
        for batch in ([merged] if merged else []) + [[r] for r in small if r.subgraphs]:
            try:
                self._replay(batch, reference)
            except DeployvalError as exc:
                if len(batch) == 1:
                    batch[0].result.own = {"unavailable": exc.one_line()}
                    continue
                for row in batch:  # the merged model failed: the diverging nodes one by one
                    row.result.own = {"unavailable": exc.one_line()}
                    if row.result.status == FAIL:
                        try:
                            self._replay([row], reference)
                        except DeployvalError as again:
                            row.result.own = {"unavailable": again.one_line()}

    def _replay(self, rows: list[_Row], reference: Mapping[str, np.ndarray]) -> None:
        from ..export.graph import cast_feeds, save_model
        from ..judge.stats import compare_tensors

        feeds = {n: reference[r.sources[n]] for r in rows for n in r.inputs}
        model, names = self._merged(rows, feeds)
        path = save_model(model, self.workdir / "candidate" / f"own-{self.runs}.onnx")
        values = self._run(path, list(names.values()), cast_feeds(feeds, self.index),
                           what="the nodes fed the reference values", input_names=list(feeds))
        for row in rows:
            result, tensor = row.result, row.reference
            value = values[names[row.candidate]]
            stats, failures = compare_tensors(reference[tensor], value, Tolerance(**result.tolerance))
            result.own = {"metrics": stats.metrics(), "passed": not failures, "failures": failures,
                          "region_nodes": len(row.nodes)}
            if row is self.first:
                self.first_own = _Own(row, {n: reference[row.sources[n]] for n in row.inputs}, value,
                                      np.array(reference[tensor], copy=True), stats.metrics())

    def _merged(self, rows: list[_Row], feeds: Mapping[str, np.ndarray]) -> tuple[ModelProto, dict[str, str]]:
        """One model computing every row's tensor from the reference values: each row's region is a
        copy with its tensors renamed apart (a lone region keeps its names: If bodies read them)."""
        import onnx

        from ..export.graph import PRODUCER, model_of

        index, rename = self.index, len(rows) > 1
        nodes, names = [], {}
        for k, row in enumerate(rows):
            suffix = f"__own{k}" if rename else ""
            inner = {o for i in row.nodes for o in index.nodes[i].output if o}
            for i in row.nodes:
                node = onnx.NodeProto()
                node.CopyFrom(index.nodes[i])
                node.input[:] = [n + suffix if n in inner else n for n in node.input]
                node.output[:] = [n + suffix if n else n for n in node.output]
                node.name += suffix
                nodes.append(node)
            names[row.candidate] = row.candidate + suffix
        inputs = [onnx.helper.make_tensor_value_info(
            name, index.elem_type(name) or onnx.helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))
            for name, value in feeds.items()]
        outputs = [onnx.helper.make_tensor_value_info(name, index.elem_type(tensor), None) if index.elem_type(tensor)
                   else onnx.helper.make_empty_tensor_value_info(name) for tensor, name in names.items()]
        return model_of(index.model, nodes, inputs, outputs, "own-errors", PRODUCER), names

    # ------------------------------------------------------------------ summary
    def _finish(self) -> None:
        report, first = self.report, self.first
        report.layers = [r.result for r in self.rows]
        vanished = sum(r.result.status == VANISHED for r in self.rows)
        if vanished:
            report.notes.append(f"{vanished} of {len(self.rows)} node outputs could not be compared (see their "
                                "reasons)")
        if first is None:
            return
        result, own = first.result, first.result.own or {}
        report.first_divergent = result.label
        if result.kind == "output":
            report.notes.append("only the graph outputs diverge: no node exceeds its tolerance")
        elif "metrics" not in own:
            report.localized = Localization(
                result.label, "layer", "its own error could not be separated from what it inherits "
                f"({own.get('unavailable', 'not computed')}); it is the first node beyond tolerance", result.ops)
        elif not own["passed"]:
            share = result.new_share
            report.localized = Localization(
                result.label, "layer", f"fed the reference inputs, it alone gives rel L2 {own['metrics'][REL_L2]:.3g}"
                + ("" if share is None else f" ({share:.0%} of its total rel L2)")
                + f"; in the {self.kind} artifact: {', '.join(result.ops)}", result.ops)
            self._triage()
        elif self._jumped(result, own):
            return
        else:
            before = [(r.result.own["metrics"][REL_L2], r.result.label) for r in self.rows[:result.index]
                      if r.result.own and "metrics" in r.result.own]
            hint = "" if not before else "; the largest own error before it is {1}'s (rel L2 {0:.3g})".format(
                *max(before))
            report.localized = Localization(
                result.label, "accumulated",
                f"no node adds an error beyond tolerance by itself: fed the reference inputs, {result.label} gives "
                f"rel L2 {own['metrics'][REL_L2]:.3g}, within tolerance; the error builds up over the nodes before "
                f"it (the per-node curve shows where it grows){hint}", result.ops)

    def _jumped(self, result: LayerResult, own: Mapping[str, Any]) -> bool:
        """Localize a first divergent node whose error jumps far above its inputs' (jump_localization)."""
        jump = jump_localization([r.result for r in self.rows[:result.index]], result, own["metrics"][REL_L2],
                                 self.cls.name)
        if jump is not None:
            self.report.localized = jump
        return jump is not None

    def _triage(self) -> None:
        """onnx.reference on the first divergent node's region: the conversion or the runtime?"""
        own = self.first_own
        if not self.do_triage or own is None:
            return
        from ..export.graph import cast_feeds, save_model

        result = own.row.result
        names = [self.index.nodes[i].name for i in own.row.nodes]

        def evaluate() -> Any:
            from onnx.reference import ReferenceEvaluator

            model, out = self._merged([own.row], own.feeds)
            path = self.workdir / "candidate" / "triage.onnx"
            try:
                evaluator = ReferenceEvaluator(str(save_model(model, path)))
            except Exception as exc:  # onnx.reference implements Q/DQ from opset 19 on only
                if "No implementation" not in str(exc):
                    raise
                from ..export.graph import upgrade_opset

                opset = max(19, *(o.version for o in model.opset_import if not o.domain))
                evaluator = ReferenceEvaluator(str(save_model(upgrade_opset(model, opset), path)))
            return evaluator.run([out[own.row.candidate]], cast_feeds(own.feeds, self.index))[0]

        converted = self.kind not in (ONNX_RAW, ONNX, ONNX_INT32) and self.precision in CONVERSIONS
        graph = f"the {self.kind} graph" + (f" (after {CONVERSIONS[self.precision]})" if converted else "")
        words = Wording(graph, "the file", "the fp32 reference", self.cls.name)
        self.report.triage = triage_region(result.label, self.index, names, evaluate, own.reference, own.value,
                                           own.metrics, Tolerance(**result.tolerance), words, self.progress,
                                           self.timings)

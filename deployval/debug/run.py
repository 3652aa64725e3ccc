"""`debug`: where (which layer) and why (export or runtime) a backend diverges from PyTorch eager.

The method, in the order it runs:

1. **Survey** (one eager forward pass with hooks on every submodule, and `mark()`): the module calls
   and marks in execution order, their enclosing calls and output shapes. No activation is kept; the
   survey itself is cached for an exact replay (same model digest, same inputs).
2. **Artifacts** from the same cache as `compare`: the raw export (for the layer map) and the artifact
   the backend runs at this precision (simplified / fp16 / int8 ONNX). Models that call `mark()` get
   one more export with markers switched on; only which tensor each marker names is kept (cached).
3. **Layer map** (see layermap.py), applied to the debugged artifact: layers whose tensor vanished
   in simplification or conversion are listed as such, not compared, and so are tensors that kept
   their name but changed their meaning (onnxsim merging a following Mul into a Conv).
4. **Backend run**: the artifact with the mapped tensors as extra graph outputs, on the chosen
   backend, once when their total size fits the memory budget; otherwise in chunks of consecutive
   layers, each chunk's model cut down to what its outputs need (early chunks stop early).
5. **Streaming comparison**: a second eager pass compares each layer the moment its module returns
   (block-wise statistics, stats.py) and lets the activation go, so eager and backend activations
   are never all held at once. The first layer beyond its tolerance is the *first divergent layer*.
6. **New versus inherited error**: a layer's *own* error is that of its ONNX sub-graph (cut out of the
   artifact between the tensors of its inputs and its output) run on the same backend with the
   *reference* inputs captured by the hooks; what the full run shows beyond it is inherited. It is
   computed for every layer when the model is small, otherwise for the first divergent layer, the
   next diverging layers and the enclosing calls of the first one. If the first divergent layer only
   inherits its error, the error is new in the first enclosing module whose own error exceeds the
   tolerance (its code outside its submodules), or, when none does, in the model's own forward code
   outside every module: then the region from the nearest layers whose reference values were kept
   to the diverging layer is replayed instead, and `mark()` is the way to narrow it down. When even
   that replay stays within tolerance, no single place adds the error: it accumulates, and the report
   says so.
7. **Triage**: the region where the error is new runs on `onnx.reference` (numpy, faithful to the
   ONNX spec, also in fp16) with the same reference inputs. Agreeing with the backend but not with
   eager: the exported graph computes something else (*export*, including the fp16/int8
   conversions); agreeing with eager but not with the backend: *runtime*. Regions too large for a
   numpy evaluator are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import json
import shlex
import tempfile
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import inputs as inputs_mod
from .._util import IMPORT_SECONDS, atomic_write_json, library_versions, timed_import
from ..backends.base import Runner, check_available, get_backend
from ..errors import BackendError, BackendUnavailable, DeployvalError, UsageError, first_line
from ..export.artifacts import (
    ONNX_FP16,
    ONNX_FP16_INT32,
    ONNX_INT8,
    ONNX_INT8_INT32,
    ONNX_RAW,
    Artifact,
)
from ..export.store import ArtifactStore
from ..memory import memory_budget
from ..progress import Progress, Step
from ..spec import PRECISIONS, ModelSpec, RunConfig, Tolerance, format_shape
from .policy import NEIGHBOURS, ONNX_KINDS, OWN_ALL_BYTES, TRIAGE_MAX_MACS, layer_tolerance
from .report import FAIL, PASS, SKIPPED, UNMAPPED, VANISHED, DebugReport, LayerResult, Localization, Triage

# ----------------------------------------------------------------------------- plan


@dataclass
class _Row:
    result: LayerResult
    key: str | None  # call key; None for final outputs
    output_index: int = 0
    call_index: int = 1 << 60
    nbytes: int = 0


@dataclass
class _Own:
    passed: bool
    metrics: dict[str, float]
    failures: list[str]
    region: Any  # graph.Region
    feeds: dict[str, np.ndarray]
    backend_value: np.ndarray
    eager_value: np.ndarray
    path: Path  # the region saved next to the weights, for onnx.reference


@dataclass
class _Chunk:
    lo: int  # call indices covered (inclusive)
    hi: int
    tensors: list[str]
    last: bool = False


@dataclass
class _State:
    first: _Row | None = None
    chain: list[str] = field(default_factory=list)  # call keys to search for the new error, in order
    neighbours_left: int = NEIGHBOURS
    localized: Localization | None = None
    triage: Triage | None = None
    own_done: set[str] = field(default_factory=set)
    search_done: bool = False


def _selected(name: str, patterns: Sequence[str] | None) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _match_input(shape: tuple[int | None, ...] | None, values: Sequence[np.ndarray], used: set[int]) -> int | None:
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


# ----------------------------------------------------------------------------- entry point


def run_debug(
    spec: ModelSpec,
    backend: str = "ort",
    precision: str = "fp32",
    config: RunConfig | None = None,
    *,
    modules: Sequence[str] | None = None,
    inputs: Mapping[str, np.ndarray] | Path | str | None = None,
    allow_nonfinite_inputs: bool = False,
    trust_checkpoint: bool = False,
    progress: Progress | None = None,
    command: str | None = None,
    memory_budget_bytes: int | None = None,
    own_errors: str = "auto",
    triage: bool = True,
) -> DebugReport:
    """Localize where `backend` at `precision` diverges from PyTorch eager, layer by layer.

    `modules`: fnmatch patterns of module names to report (default: every submodule; marks are
    always reported). `own_errors`: "auto" (every layer when small, else around the first divergent
    layer), "all" or "divergent".
    """
    started = time.perf_counter()
    config = config or RunConfig()
    progress = progress or Progress()
    if spec.kind not in ("module", "onnx"):
        raise UsageError(f"debug needs a PyTorch model (a registered model or pkg.module:factory) or an ONNX "
                         f"file; '{spec.name}' is a {spec.kind} file")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if own_errors not in ("auto", "all", "divergent"):
        raise UsageError(f"unknown own-error mode '{own_errors}' (auto, all or divergent)")
    cls = get_backend(backend)
    supported, why = cls.supports(precision, config.device)
    if not supported:
        raise UsageError(f"cannot debug {backend}:{precision}: {why}")
    ok, reason = check_available(cls, config.device)
    if not ok:
        raise BackendUnavailable(f"{backend} cannot run on {config.device}: {reason}")

    feeds, inputs_source, seed = _inputs(spec, config, inputs, allow_nonfinite_inputs)
    if spec.kind == "onnx":  # the file's nodes are the layers, ONNX Runtime fp32 the reference
        from .onnx_file import debug_onnx_file

        return debug_onnx_file(spec, cls, precision, config, feeds, inputs_source, seed, patterns=modules,
                               progress=progress, command=command, budget=memory_budget(memory_budget_bytes),
                               own_errors=own_errors, triage=triage)
    timings: dict[str, Any] = {}
    timed_import("torch")
    timed_import("onnx")
    from ..backends._torch import name_outputs, to_tensors
    from ..loading import build_module, module_digest, parameter_count
    from ..pipeline import backend_options, device_info
    from .capture import survey

    with progress.step(f"building {spec.name}"):
        start = time.perf_counter()
        module = build_module(spec, trust_checkpoint=trust_checkpoint).to(config.device)
        timings["model_build_s"] = time.perf_counter() - start
    report = DebugReport(
        command=command or shlex.join(["deployval", "debug", spec.name, "--backend", backend, "--precision",
                                       precision]),
        model={**spec.to_dict(), "parameters": parameter_count(module)},
        inputs=[{**i.to_dict(), "sha256": inputs_mod.digest({i.name: feeds[i.name]})} for i in spec.inputs],
        seed=seed, inputs_source=inputs_source, device=device_info(config.device), versions=library_versions(),
        backend=backend, precision=precision, faithful=cls.faithful(precision, config.device),
    )
    report.warnings.extend(cls.caveats(precision, config.device))
    args = to_tensors(feeds, spec.input_names, config.device)
    model_digest, inputs_digest = module_digest(spec, module), inputs_mod.digest(feeds)
    survey_cache = _survey_cache(config, spec, model_digest, inputs_digest)
    cached = _load_survey(survey_cache)
    reference: dict[str, np.ndarray] | None = None
    if cached is not None:
        surveyed, outputs_info = cached
        timings["survey_s"] = 0.0
        report.notes.append("module calls from the cached survey of these inputs (one eager pass saved)")
    else:
        with progress.step("survey: module calls and marks (eager, hooks)"):
            start = time.perf_counter()
            try:
                surveyed = survey(module, args)
            except Exception as exc:
                shapes = ", ".join(f"{k}={format_shape(v.shape)}:{v.dtype}" for k, v in feeds.items())
                raise UsageError(f"the reference run failed on inputs {shapes}: {first_line(exc)}") from None
            timings["survey_s"] = time.perf_counter() - start
        from .capture import to_numpy

        reference = {k: to_numpy(v) for k, v in name_outputs(surveyed.outputs, spec.output_names or ()).items()}
        surveyed.outputs = None  # the reference outputs are kept as numpy above
        outputs_info = {k: (list(v.shape), str(v.dtype)) for k, v in reference.items()}
        _save_survey(survey_cache, surveyed, outputs_info)
    output_names = tuple(outputs_info)
    report.model["output_names"] = list(output_names)

    store = ArtifactStore(spec, feeds, config, module=lambda: module, output_names=output_names,
                          model_digest=model_digest, inputs_digest=inputs_digest,
                          progress=progress, reproduce=f"deployval export {shlex.quote(spec.name)} --out DIR")
    workdir = tempfile.TemporaryDirectory(prefix="deployval-debug-")
    try:
        options = backend_options(spec, config, store)
        kind = cls.artifact_for(precision, options)
        if kind not in ONNX_KINDS:
            raise UsageError(f"debug compares the layers of an ONNX artifact; {backend} runs '{kind}' "
                             f"(use an ONNX backend such as ort, trt or ort-trt)")
        raw = store.get(ONNX_RAW)
        artifact = store.get(kind)
        report.artifact = {**artifact.to_dict(), "kind": kind}
        report.exporter = str(raw.details.get("exporter", store.exporter))
        debugger = _Debugger(spec, cls, precision, config, options, feeds, module, args, surveyed, reference,
                             outputs_info, store, raw, artifact, kind, report, progress, Path(workdir.name), modules,
                             memory_budget(memory_budget_bytes), own_errors, triage, timings)
        debugger.run()
    finally:
        report.steps = list(store.steps)
        store.close()
        workdir.cleanup()
    timings["imports_s"] = dict(IMPORT_SECONDS)
    timings["total_s"] = time.perf_counter() - started
    report.timings = timings
    report.complete = True
    return report


SURVEY_FORMAT = 1


def _survey_cache(config: RunConfig, spec: ModelSpec, model_digest: str, inputs_digest: str) -> Path | None:
    """Where the survey of this model on these very inputs is kept (the call structure can depend on
    the values, so only an exact replay reuses it)."""
    if not config.use_cache:
        return None
    from .._util import sha256_json
    from .._version import __version__
    from ..export.store import default_cache_dir

    key = sha256_json([SURVEY_FORMAT, __version__, model_digest, inputs_digest, config.device,
                       [(i.name, list(i.shape), i.dtype) for i in spec.inputs]])
    root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    return root / "debug-surveys" / f"{key[:32]}.json"


def _load_survey(path: Path | None) -> tuple[Any, dict[str, tuple[list[int], str]]] | None:
    if path is None or not path.exists():
        return None
    from .capture import Survey

    try:
        data = json.loads(path.read_text())
        return Survey.from_json(data["calls"]), {k: (list(v[0]), v[1]) for k, v in data["outputs"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_survey(path: Path | None, surveyed: Any, outputs: Mapping[str, tuple[list[int], str]]) -> None:
    if path is None:
        return
    with contextlib.suppress(OSError):
        atomic_write_json(path, {"calls": surveyed.calls_to_json(),
                                 "outputs": {k: list(v) for k, v in outputs.items()}})


def _inputs(spec: ModelSpec, config: RunConfig, inputs: Any, allow_nonfinite: bool,
            ) -> tuple[dict[str, np.ndarray], str, int | None]:
    if isinstance(inputs, (str, Path)):
        loaded = inputs_mod.load_inputs(Path(inputs), spec.inputs)
        feeds = inputs_mod.check_inputs(loaded, spec.inputs, exact_shapes=False, allow_nonfinite=allow_nonfinite,
                                        source=str(inputs))
        return feeds, str(inputs), None
    if inputs is not None:
        feeds = inputs_mod.check_inputs(inputs, spec.inputs, exact_shapes=False, allow_nonfinite=allow_nonfinite,
                                        source="inputs")
        return feeds, "given", None
    for input_spec in spec.inputs:
        input_spec.check_shape(input_spec.shape)
    return inputs_mod.make_inputs(spec.inputs, config.seed), f"random (seed {config.seed})", config.seed


# ----------------------------------------------------------------------------- the work


class _Debugger:
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
        self.rows: list[_Row] = []
        self.rows_by_key: dict[str, list[_Row]] = {}
        self.state = _State()
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()  # tensor -> eager value (for regions)
        self.cache_bytes = 0
        self.region_runs = 0
        self.held: dict[str, Any] = {}  # call key -> frame, for calls whose inputs a fused successor needs
        self.first_value: np.ndarray | None = None
        timings.setdefault("own_s", 0.0)
        timings.setdefault("triage_s", 0.0)

    # ------------------------------------------------------------------ map
    def run(self) -> None:
        from ..export.onnx_io import load_onnx
        from .graph import GraphIndex, externalize
        from .layermap import build_map, changed_meaning

        names = [n for n, _ in self.module.named_modules() if n]
        with self.progress.step("layer map"):
            raw_model = load_onnx(self.raw.path)
            self.map = build_map(raw_model, self.survey, names)
            self.raw_nodes = {n.name for n in raw_model.graph.node if n.name}
            self.report.map_source = self.map.source
            marks = self._mark_tensors(raw_model) if any(c.kind == "mark" for c in self.survey.calls) else {}
            model = load_onnx(self.artifact.path)
            self.changed = changed_meaning(raw_model, model)
            del raw_model
            externalize(model, self.workdir)  # the weights are written once, not once per backend run
            self.index = GraphIndex(model)
            self.present = self.index.tensor_names
        self._plan_rows(marks)
        sizes = {r.result.tensor: r.nbytes for r in self.rows if r.result.status == PASS and r.key is not None}
        total = sum(sizes.values())
        self.own_all = self.own_mode == "all" or (self.own_mode == "auto" and total <= OWN_ALL_BYTES)
        self.cache_limit = max(total, 1) if self.own_all else min(self.budget // 4, 256 << 20)
        chunks = self._chunks()
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
            if call.kind == "module" and not _selected(call.name, self.patterns):
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
        if tensor is None:
            result.status, result.reason = UNMAPPED, reason
        elif tensor not in self.present:
            result.status = VANISHED
            result.reason = f"its tensor is not in the {self.kind} artifact (removed by simplification or conversion)"
        elif tensor in self.changed and key is not None:
            result.status = VANISHED
            result.reason = (f"in the {self.kind} artifact the {self.changed[tensor]} after it was merged into its "
                             f"node: the tensor '{tensor}' holds that later value")
        elif tensor in self.index.inputs:
            result.status, result.reason = SKIPPED, "it is a graph input"
        elif tensor in self.index.initializers:
            result.status, result.reason = SKIPPED, f"it is a constant in the {self.kind} artifact (folded)"
        else:
            result.status = PASS  # provisional: compared later
            result.reason = reason if reason and key is not None and tensor is not None and \
                self.map.calls.get(key) is not None and self.map.calls[key].note == reason else ""
        result.tensor = tensor
        row = _Row(result, key, position, call_index, nbytes)
        self.rows.append(row)
        if key is not None:
            self.rows_by_key.setdefault(key, []).append(row)

    def _label(self, key: str) -> str:
        call = self.calls.get(key)
        return call.label if call is not None else key

    def _chunks(self) -> list[_Chunk]:
        rows = sorted((r for r in self.rows if r.result.status == PASS and r.key is not None),
                      key=lambda r: r.call_index)
        chunks: list[_Chunk] = []
        current: list[_Row] = []
        size = 0
        seen: set[str] = set()
        for row in rows:
            tensor = row.result.tensor or ""
            extra = 0 if tensor in seen else row.nbytes
            if current and size + extra > self.budget and current[-1].call_index != row.call_index:
                chunks.append(_Chunk(current[0].call_index, current[-1].call_index,
                                     list(dict.fromkeys(r.result.tensor or "" for r in current))))
                current, size, seen = [], 0, set()
                extra = row.nbytes
            current.append(row)
            size += extra
            seen.add(tensor)
        if current:
            chunks.append(_Chunk(current[0].call_index, current[-1].call_index,
                                 list(dict.fromkeys(r.result.tensor or "" for r in current))))
        if not chunks:
            chunks.append(_Chunk(0, -1, []))
        chunks[0].lo = 0
        for before, after in itertools.pairwise(chunks):
            after.lo = before.hi + 1
        chunks[-1].hi = 1 << 60
        chunks[-1].last = True
        return chunks

    # ------------------------------------------------------------------ one chunk
    def _run_chunk(self, chunk: _Chunk, number: int, total: int) -> None:
        from .graph import expose, save_model

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

    def _stream(self, chunk: _Chunk, values: dict[str, np.ndarray], users: dict[str, int]) -> None:
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
                from ..backends._torch import name_outputs

                self.reference = {k: to_numpy(v) for k, v in
                                  name_outputs(outputs, tuple(self.outputs_info)).items()}

    # ------------------------------------------------------------------ per layer
    def _compare_row(self, row: _Row, eager: np.ndarray, values: dict[str, np.ndarray],
                     users: dict[str, int]) -> None:
        from ..stats import compare_tensors

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
        search_row: _Row | None = None
        if in_chain:
            if state.first is not None and state.first.key == call.key:
                search_row = state.first
            else:
                search_row = rows[0] if rows else self._transient_row(call)
        search_own: _Own | None = None
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

    def _transient_row(self, call: Any) -> _Row | None:
        """A row for an enclosing call that the report leaves out (--modules), to test its own error."""
        tensor = self.map.tensor(call.key, 0)
        if call.kind != "module" or tensor is None or tensor not in self.present or tensor in self.index.inputs:
            return None
        mapping = self.map.calls[call.key]
        result = LayerResult(index=-1, label=call.label, kind="module", type=call.type, tensor=tensor,
                             ops=mapping.ops, own_ops=mapping.own_ops, status=PASS)
        result.tolerance = layer_tolerance(self.spec, self.report.backend, self.precision, call.label,
                                           self.config).to_dict()
        return _Row(result, call.key, 0, call.index)

    def _own_error(self, call: Any, row: _Row, eager: np.ndarray, frame: Any) -> _Own | None:
        from ..stats import compare_tensors
        from .graph import region

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
            from .graph import cast_feeds, save_model

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
        return _Own(not failures, stats.metrics(), failures, cut, feeds, backend, np.array(eager, copy=True),
                    region_path)

    def _module_region(self, call: Any, result: LayerResult, frame: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """The call's sub-graph, fed with the eager inputs matched to its boundary tensors by shape."""
        from .capture import to_numpy
        from .graph import region

        mapping = self.map.calls.get(call.key)
        boundary = [n for n in (mapping.inputs if mapping else []) if n in self.present]
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
            match = _match_input(shape, eager_inputs, used)
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
    def _search_step(self, call: Any, row: _Row, own: _Own | None) -> None:
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
            explanation = (f"fed the reference inputs, it alone gives rel L2 {own.metrics['rel_l2']:.3g}{ratio}"
                           + (f"; ops: {', '.join(ops)}" if ops else ""))
            state.localized = Localization(row.result.label, what, explanation, ops)
        else:
            explanation = (f"{first.result.label} only inherits its error (fed the reference inputs its own error is "
                           f"{self._own_text(first)}); the new error arises in {row.result.label}'s own code outside "
                           f"its submodules (rel L2 {own.metrics['rel_l2']:.3g} fed the reference inputs"
                           + (f"; its own ops: {', '.join(row.result.own_ops)}" if row.result.own_ops else "") + ")")
            state.localized = Localization(row.result.label, "module-code", explanation, row.result.own_ops)
        self._triage(row.result, own)

    def _own_text(self, row: _Row) -> str:
        own = row.result.own or {}
        if "metrics" in own:
            return f"rel L2 {own['metrics']['rel_l2']:.3g}, within tolerance"
        return own.get("unavailable", "unknown")

    def _search_root(self) -> None:
        """No enclosing module adds the error: it comes from the model's forward code outside modules.
        Replay the region from the nearest kept reference values to the first divergent layer."""
        state = self.state
        state.search_done = True
        first = state.first
        assert first is not None
        from ..stats import compare_tensors
        from .graph import region

        eager = self.first_value
        available = {k: v for k, v in self.cache.items() if k != first.result.tensor}
        own: _Own | None = None
        if eager is not None:
            start = time.perf_counter()
            try:
                cut = region(self.index, [first.result.tensor or ""], available)
                feeds = {n: available[n] for n in cut.inputs if n in available}
                for name in cut.graph_inputs:
                    feeds[name] = self.feeds[name]
                from .graph import cast_feeds, save_model

                path = save_model(cut.model, self.workdir / "region-root.onnx")
                values = self._run_backend(path, cut.targets, cast_feeds(feeds, self.index),
                                           what="the region before the first divergent layer",
                                           input_names=cut.inputs)
                backend = values[cut.targets[0]]
                stats, failures = compare_tensors(eager, backend, Tolerance(**first.result.tolerance))
                own = _Own(not failures, stats.metrics(), failures, cut, feeds, backend, eager, path)
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
        if own is not None and own.passed:
            state.localized = Localization(
                first.result.label, "accumulated",
                f"no layer adds an error beyond tolerance by itself: {first.result.label}'s own error is "
                f"{self._own_text(first)}, and replaying the {len(own.region.node_names)} nodes before it from the "
                f"nearest kept reference values gives rel L2 {own.metrics['rel_l2']:.3g}; the error builds up over "
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
    def _triage(self, result: LayerResult, own: _Own) -> None:
        if not self.do_triage:
            return
        from ..stats import passes
        from .graph import cast_feeds, estimate_macs

        start = time.perf_counter()
        nodes = len(own.region.node_names)
        macs = estimate_macs(self.index, own.region.node_names)
        if macs > TRIAGE_MAX_MACS:
            self.state.triage = Triage("skipped", result.label,
                                       f"the region ({nodes} nodes, {macs / 1e9:.1f} G multiply-adds) is too large for "
                                       "the numpy reference evaluator", region_nodes=nodes)
            return
        try:
            from onnx.reference import ReferenceEvaluator

            with self.progress.step(f"triage: {result.label} on onnx.reference"):
                evaluator = ReferenceEvaluator(str(own.path))  # loads the weights it references
                value = np.asarray(evaluator.run(None, cast_feeds(own.feeds, self.index))[0])
        except Exception as exc:
            self.state.triage = Triage("skipped", result.label, f"onnx.reference could not run the region: "
                                       f"{first_line(exc)}", region_nodes=nodes)
            self.timings["triage_s"] += time.perf_counter() - start
            return
        tolerance = Tolerance(**result.tolerance)
        ref_eager_ok, ref_eager = passes(own.eager_value, value, tolerance)
        ref_backend_ok, ref_backend = passes(value, own.backend_value, tolerance)
        backend = self.report.backend
        numbers = (f"onnx.reference vs eager rel L2 {ref_eager['rel_l2']:.3g}, vs {backend} "
                   f"{ref_backend['rel_l2']:.3g}; {backend} vs eager {own.metrics['rel_l2']:.3g}")
        converted = {ONNX_FP16: " (after the fp16 conversion)", ONNX_INT8: " (after int8 quantization)",
                     ONNX_FP16_INT32: " (after the fp16 conversion)",
                     ONNX_INT8_INT32: " (after int8 quantization)"}.get(self.kind, "")
        if ref_backend_ok and not ref_eager_ok:
            verdict = "export"
            text = (f"the ONNX graph{converted} computes something else than eager in this region: the reference "
                    f"evaluator agrees with {backend}, not with eager ({numbers})")
        elif ref_eager_ok and not ref_backend_ok:
            verdict = "runtime"
            text = (f"{backend} computes this region differently from the ONNX specification: the reference "
                    f"evaluator agrees with eager, not with {backend} ({numbers})")
        elif not ref_eager_ok and not ref_backend_ok:
            verdict = "both"
            text = f"the ONNX graph differs from eager and {backend} differs from the ONNX graph ({numbers})"
        else:
            verdict = "inconclusive"
            text = f"the reference evaluator is within tolerance of both ({numbers})"
        self.state.triage = Triage(verdict, result.label, text, own.metrics, ref_eager, ref_backend, nodes,
                                   time.perf_counter() - start)
        self.timings["triage_s"] += time.perf_counter() - start

    # ------------------------------------------------------------------ outputs and summary
    def _compare_outputs(self, values: Mapping[str, np.ndarray]) -> None:
        from ..metrics import compare_output
        from ..stats import compare_tensors

        for row in self.rows:
            if row.key is not None or row.result.status != PASS:
                continue
            result = row.result
            name = result.tensor or result.label
            tolerance = self.spec.tolerances.resolve(self.report.backend, self.precision, name)
            if self.config.atol is not None or self.config.rtol is not None:
                tolerance = Tolerance(**result.tolerance)
            comparison = compare_output(name, self.reference[name], values.get(name), tolerance, self.spec.task)
            result.tolerance = tolerance.to_dict()
            result.metrics = {**comparison.metrics, **{f"task_{k}": v for k, v in comparison.task.items()
                                                       if isinstance(v, float)}}
            result.failures = list(comparison.failures)
            result.status = PASS if comparison.passed else FAIL
            if values.get(name) is not None and np.shape(values[name]) == np.shape(self.reference[name]):
                result.histogram = compare_tensors(self.reference[name], values[name], tolerance,
                                                   histogram=True)[0].histogram()
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

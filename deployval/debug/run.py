"""`debug`: where (which layer) and why (export or runtime) a backend diverges from PyTorch eager.

The method, in the order it runs:

1. **Survey** (one eager forward pass with hooks on every submodule, and `mark()`): the module calls
   and marks in execution order, their enclosing calls and output shapes. No activation is kept; the
   survey itself is cached for an exact replay (same model digest, same inputs).
2. **Artifacts** from the same cache as `compare`: the raw export (for the layer map) and the artifact
   the backend runs at this precision (simplified / fp16 / int8 ONNX), int8 calibrated as compare
   calibrates (`--calibration`, or a `--dataset`'s first sample), so it is the artifact compare judged.
   Models that call `mark()` get one more export with markers switched on; only which tensor each
   marker names is kept (cached).
3. **Layer map** (see layermap.py), applied to the debugged artifact by structure (meaning.py): a
   layer whose value a merged node holds under another name (a Mul or BatchNormalization folded into
   the Conv before it) is compared with that tensor; layers whose value vanished in simplification or
   conversion are listed as such, not compared, and so are tensors that kept their name but not their
   meaning (the Conv's own output after the fold).
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

This module is the entry point (checks, inputs, survey, artifacts); the work is in model_debugger.py,
with plan.py (rows, chunks), own_error.py (6), triage.py (7) and survey_cache.py.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._util import timed_import
from ..backends.base import Runner, check_available, get_backend
from ..errors import BackendUnavailable, UsageError, first_line
from ..export.artifacts import ONNX_RAW
from ..memory import memory_budget
from ..model.dataset import Dataset
from ..model.spec import PRECISIONS, ModelSpec, RunConfig, format_shape
from ..progress import Progress
from ..run.session import Session
from .model_debugger import ModelDebugger
from .policy import ONNX_KINDS
from .report import DebugReport, debugging
from .survey_cache import load_survey, save_survey, survey_cache_path


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
    repro: Path | None = None,
    model_explorer: Path | None = None,
    dataset: Dataset | None = None,
) -> DebugReport:
    """Localize where `backend` at `precision` diverges from PyTorch eager, layer by layer.

    `modules`: fnmatch patterns of module names to report (default: every submodule; marks are
    always reported). `own_errors`: "auto" (every layer when small, else around the first divergent
    layer), "all" or "divergent". `repro`: a directory for the first divergent layer as a model of its own
    (repro.py); `model_explorer`: a node data JSON file for Model Explorer (model_explorer.py).
    `dataset`: the data set a `compare --dataset` run was given; int8 is calibrated as that run calibrates
    (on its first usable sample, unless `config.calibration` names a directory), so that the artifact is
    the one compare judged, and without `inputs` that first sample is debugged.
    """
    started = time.perf_counter()
    config = config or RunConfig()
    progress = progress or Progress()
    cls = _debuggable(spec, backend, precision, config, own_errors)

    calibration, calibrated = _calibration(spec, config, dataset, allow_nonfinite_inputs)
    if dataset is not None and inputs is None:
        _first, _faults, inputs = dataset.first(spec)  # the sample compare's rows begin with
    session = Session(spec, config, inputs, allow_nonfinite=allow_nonfinite_inputs,
                      trust_checkpoint=trust_checkpoint, progress=progress, calibration=calibration)
    spec, feeds = session.spec, session.feeds
    if spec.kind == "onnx":  # the file's nodes are the layers, ONNX Runtime fp32 the reference
        from .onnx_file import debug_onnx_file

        file_report = debug_onnx_file(session, cls, precision, patterns=modules, command=command,
                                      budget=memory_budget(memory_budget_bytes), own_errors=own_errors, triage=triage)
        if precision == "int8":
            file_report.notes.append(calibrated)
        if repro is not None or model_explorer is not None:
            from .repro import file_outputs

            file_outputs(session, file_report, repro, model_explorer, command)
        return file_report
    timings = session.timings
    timed_import("torch")
    timed_import("onnx")
    from ..backends.torch_common import to_tensors

    module = session.module().to(config.device)
    record = session.run_record(command or shlex.join(["deployval", "debug", spec.name, "--backend", backend,
                                                       "--precision", precision]))  # after the build: parameters
    report = DebugReport.from_record(record, backend=backend, precision=precision,
                                     faithful=cls.faithful(precision, config.device))
    report.warnings.extend(cls.caveats(precision, config.device))
    if precision == "int8":
        report.notes.append(calibrated)
    args = to_tensors(feeds, spec.input_names, config.device)
    surveyed, outputs_info, reference = _survey(session, module, args, report)
    output_names = tuple(outputs_info)
    report.model["output_names"] = list(output_names)

    store = session.store(output_names, reproduce=f"deployval export {shlex.quote(spec.name)} --out DIR")
    with debugging(report, store, timings, started) as workdir:
        options = session.backend_options(store)
        kind = cls.artifact_for(precision, options)
        if kind not in ONNX_KINDS:
            raise UsageError(f"debug compares the layers of an ONNX artifact; {backend} runs '{kind}' "
                             f"(use an ONNX backend such as ort, trt or ort-trt)")
        raw = store.get(ONNX_RAW)
        artifact = store.get(kind)
        report.artifact = {**artifact.to_dict(), "kind": kind}
        report.exporter = str(raw.details.get("exporter", store.exporter))
        debugger = ModelDebugger(spec, cls, precision, config, options, feeds, module, args, surveyed, reference,
                             outputs_info, store, raw, artifact, kind, report, progress, workdir, modules,
                             memory_budget(memory_budget_bytes), own_errors, triage, timings)
        debugger.run()
        if repro is not None or model_explorer is not None:  # while the reference values are held
            from .repro import module_outputs

            module_outputs(debugger, report, repro, model_explorer, command)
    return report


def _debuggable(spec: ModelSpec, backend: str, precision: str, config: RunConfig, own_errors: str) -> type[Runner]:
    """The backend class, once the model kind, precision, own-error mode and backend are known to fit
    (a UsageError or BackendUnavailable that says why not)."""
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
    return cls


def _survey(session: Session, module: Any, args: Any, report: DebugReport
            ) -> tuple[Any, dict[str, tuple[list[int], str]], dict[str, np.ndarray] | None]:
    """The module calls and marks of one eager pass (cached for these inputs), the outputs' shapes and
    dtypes, and the reference outputs when the pass ran (None from the cache)."""
    from ..backends.torch_common import name_outputs
    from .capture import survey

    spec, config, feeds, timings = session.spec, session.config, session.feeds, session.timings
    survey_cache = survey_cache_path(config, spec, session.model_digest, session.inputs_digest)
    cached = load_survey(survey_cache)
    if cached is not None:
        surveyed, outputs_info = cached
        timings["survey_s"] = 0.0
        report.notes.append("module calls from the cached survey of these inputs (one eager pass saved)")
        return surveyed, outputs_info, None
    with session.progress.step("survey: module calls and marks (eager, hooks)"):
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
    save_survey(survey_cache, surveyed, outputs_info)
    return surveyed, outputs_info, reference


def _calibration(spec: ModelSpec, config: RunConfig, dataset: Dataset | None,
                 allow_nonfinite: bool) -> tuple[list[dict[str, np.ndarray]] | None, str]:
    """The int8 calibration samples the session is given (None: the config's --calibration directory, or
    the run's own inputs), and what the report says about them. The directory is checked before any
    work."""
    from ..model.dataset import sample_files
    from ..run.session import dataset_calibration

    if config.calibration is not None:
        files = sample_files(Path(config.calibration), "--calibration", config.calibration_limit)
        return None, (f"int8 calibrated on --calibration '{config.calibration}' ({len(files)} samples, "
                      f"{config.calibration_method}), as compare with the same options")
    if dataset is None:
        return None, ("int8 calibrated on the debugged inputs themselves; to debug the int8 artifact a compare "
                      "run judged, give its --calibration or --dataset options")
    first, samples = dataset_calibration(dataset, spec, config, allow_nonfinite)
    return samples, (f"int8 calibrated on the --dataset's first sample '{first.name}' "
                     f"({config.calibration_method}), as compare --dataset calibrates")

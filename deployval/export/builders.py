"""How each artifact kind is made from its sources, for the store's table (export/store.py).

A builder looks at its sources and the run and returns what to do: the `Artifact` itself (the
in-memory module), a `Given` file (the model already is that artifact: nothing to export), or a
`Plan`: what a cache entry must have been built with to be reused, and how to write the file. The
store does the rest (cache check, step, timing, failure record, metadata) the same way for all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._util import atomic_path, sha256_json
from ..errors import DeployvalError, ExportError, UsageError, first_line
from ..metric_table import MAX_ABS
from ..model.spec import KeepFp32
from ..progress import Step
from .artifacts import MODULE, ONNX_RAW, SERVED, Artifact

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import numpy as np

    from ..model.spec import ModelSpec, RunConfig
    from ..progress import Progress

# Simplification must leave outputs unchanged up to float re-association: |s - r| <= tol * (max|r| + |r|).
SIMPLIFY_TOLERANCE = 1e-5
PENDING = "pending"  # a simplified model's verification waits for its row (cache entries so marked are not reused)


@dataclass
class Given:
    """The model file already is the artifact: it is used as is, and its step reads "skipped"."""

    path: Path
    reason: str


@dataclass
class Plan:
    """How to build one artifact. `run(step, path)` writes the file, fills the step's details and
    returns extra metadata for the cache sidecar; `fresh(meta)` says whether a cached entry was built
    the same way; `prelude` runs (and records its own steps) before the build, not on a cache hit,
    where `on_cache_hit(meta)` replays them instead. `description` is the progress line (None: not timed)."""

    run: Callable[[Step, Path], Mapping[str, Any] | None]
    description: str | None
    fresh: Callable[[Mapping[str, Any]], bool] = lambda meta: True
    prelude: Callable[[], None] | None = None
    on_cache_hit: Callable[[Mapping[str, Any]], None] | None = None
    skipped_on: tuple[type[Exception], ...] = field(default=())


class Workshop(Protocol):
    """What a builder may use of the store (export/store.py's ArtifactStore is one)."""

    spec: ModelSpec
    config: RunConfig
    inputs: dict[str, np.ndarray]
    inputs_digest: str
    exporter: str
    output_names: tuple[str, ...]
    progress: Progress
    reproduce: str | None
    simplify_verified_by_row: bool
    traced_module: Any

    @property
    def has_calibration(self) -> bool: ...
    def module(self) -> Any: ...
    def torch_args(self) -> tuple[Any, ...]: ...
    def calibration_samples(self) -> list[dict[str, np.ndarray]]: ...
    def get(self, kind: str) -> Artifact: ...
    def record(self, step: Step, artifact: Artifact | None) -> None: ...
    def timed(self, step: Step, description: str) -> AbstractContextManager[Step]: ...


# builder(store, kind, sources) -> what to do; sources are the built artifacts of the kind's sources.
Builder = Callable[[Workshop, str, Sequence[Artifact]], "Artifact | Given | Plan"]


def module(store: Workshop, kind: str, sources: Sequence[Artifact]) -> Artifact:
    if store.spec.kind == "onnx":
        raise UsageError(f"model '{store.spec.name}' is an ONNX file: there is no PyTorch module to run")
    return Artifact(kind=MODULE, obj=store.module(), input_names=store.spec.input_names,
                    output_names=store.output_names)


def served(store: Workshop, kind: str, sources: Sequence[Artifact]) -> Artifact:
    """The model as a server serves it: nothing is built here; the names are the reference's, which the
    runner maps onto the served model's own."""
    return Artifact(kind=SERVED, input_names=store.spec.input_names, output_names=store.output_names)


def torchscript(store: Workshop, kind: str, sources: Sequence[Artifact]) -> Given | Plan:
    if store.spec.kind == "onnx":
        raise UsageError(f"model '{store.spec.name}' is an ONNX file: there is no TorchScript to run")
    if store.spec.kind == "torchscript":  # its runner binds any --arg values at load
        return Given(Path(store.spec.path or ""), "the model is a TorchScript file")
    mode, device = store.spec.export.torchscript, store.config.device

    def run(step: Step, path: Path) -> None:
        from .torchscript import export_torchscript, save_torchscript

        if mode == "trace" and store.traced_module is not None:  # traced during the reference run
            step.details = {**save_torchscript(store.traced_module, path), "device": device,
                            "traced": "during the reference run (one forward pass for both)"}
            return
        module, args = store.module(), store.torch_args()
        if device != "cpu":  # trace where it will run (a copy: the reference stays put)
            import copy

            module = copy.deepcopy(module).to(device)
            args = tuple(a.to(device) for a in args)
        step.details = {**export_torchscript(module, args, path, mode), "device": device}

    return Plan(run, f"TorchScript ({mode})")


def aoti_package(store: Workshop, kind: str, sources: Sequence[Artifact]) -> Plan:
    """torch.export -> AOTInductor .pt2 of the module at the kind's precision (export/aoti.py)."""
    if store.spec.kind != "module":
        raise UsageError(f"model '{store.spec.name}' is a {store.spec.kind} file: torch.export needs the PyTorch "
                         "module")
    from .artifacts import PT2_KINDS

    precision = next(p for p, k in PT2_KINDS.items() if k == kind)

    def run(step: Step, path: Path) -> None:
        from .aoti import compile_package

        step.details = compile_package(store.module(), store.torch_args(), path, precision, store.config.device)

    return Plan(run, f"torch.export + AOTInductor ({precision})")


def onnx_raw(store: Workshop, kind: str, sources: Sequence[Artifact]) -> Given | Plan:
    if store.spec.kind == "onnx":
        return Given(Path(store.spec.path or ""), "the model is an ONNX file")

    def run(step: Step, path: Path) -> None:
        from .onnx import export_onnx

        step.details = export_onnx(
            store.module(), store.torch_args(), path,
            input_names=store.spec.input_names, output_names=store.output_names,
            exporter=store.exporter, opset=store.spec.export.opset,
            dynamic_axes=store.spec.export.dynamic_axes,
        )
        if step.details.get("fallback_reason"):
            step.reason = f"fell back to the legacy exporter: {step.details['fallback_reason']}"

    # A TorchScript file exports with the legacy exporter whatever was asked (export_onnx says why)
    return Plan(run, f"ONNX export ({'legacy' if store.spec.kind == 'torchscript' else store.exporter})")


def onnx(store: Workshop, kind: str, sources: Sequence[Artifact]) -> Plan:
    """Checked and simplified ONNX; the simplification is verified on this run's inputs and
    dropped (with the reason) if it changes the outputs."""
    (raw,) = sources
    check = Step("check", reproduce=store.reproduce)

    def replay_check(meta: Mapping[str, Any]) -> None:
        previous = meta.get("check", {})
        store.record(Step("check", status=previous.get("status", "ok"), reason=previous.get("reason", ""),
                          cached=True), None)

    def run_check() -> None:
        from . import onnx_io

        with store.timed(check, "onnx.checker"):
            try:
                onnx_io.check_onnx(raw.path)
            except DeployvalError as exc:
                check.status, check.reason = "fail", exc.one_line()
        store.record(check, None)
        if check.status == "fail":
            error_type = UsageError if store.spec.kind == "onnx" else ExportError
            raise error_type(f"the ONNX model does not pass onnx.checker: {check.reason}")

    deferred = store.simplify_verified_by_row

    def run(step: Step, path: Path) -> dict[str, Any]:
        if not store.spec.export.simplify:
            step.status, step.reason = "skipped", "simplification is off in the model's export options"
            shutil.copyfile(raw.path, path)  # type: ignore[arg-type]
        else:
            _simplify_verified(store, raw.path, path, step, deferred)  # type: ignore[arg-type]
        return {"verified_inputs": step.details.get("verified_inputs"), "check": check.to_dict()}

    description = None if not store.spec.export.simplify else (
        "onnx-simplifier" if deferred else "onnx-simplifier + verification")
    return Plan(run, description,
                # An entry still waiting for its row's verdict is reused only by a run whose row judges it too
                # (two processes sharing a cache build it once).
                fresh=lambda meta: meta.get("verified_inputs") in (store.inputs_digest, None)
                or (deferred and meta.get("verified_inputs") == PENDING),
                prelude=run_check, on_cache_hit=replay_check)


def _simplify_verified(store: Workshop, raw_path: Path, path: Path, step: Step, deferred: bool = False) -> None:
    """Simplify, then verify on this run's inputs that the outputs did not change; `deferred`: the row
    that runs the simplified model verifies it against the reference instead (two ONNX Runtime runs
    fewer; see `settle_simplification`), and the cache entry counts as unverified until it does."""
    from . import onnx_io, simplify

    model = onnx_io.load_onnx(raw_path)
    try:
        simplified, details = simplify.simplify_onnx(model)
    except DeployvalError as exc:
        step.status = "fail"
        step.reason = f"onnx-simplifier failed, keeping the unsimplified model: {exc.one_line()}"
        shutil.copyfile(raw_path, path)
        return
    step.details = {**as_dict(details)}
    import onnx

    tmp = path.with_name(path.name + ".candidate")
    if deferred:
        with atomic_path(path) as target:
            onnx.save(simplified, str(target))
    else:
        onnx.save(simplified, str(tmp))
    refusal = loads_in_runtime(step, path if deferred else tmp, raw_path, "onnx-simplifier", fatal=False)
    if refusal:
        step.status, step.reason = "fail", f"{refusal}; keeping the unsimplified model"
        tmp.unlink(missing_ok=True)
        shutil.copyfile(raw_path, path)
        return
    if deferred:
        step.details["verification"] = {"status": "deferred", "reason": "verified by the row that runs it"}
        step.details["verified_inputs"] = PENDING
        return
    try:
        verdict = verify_same_outputs(raw_path, tmp, store.inputs, tolerance=SIMPLIFY_TOLERANCE)
    except DeployvalError as exc:
        verdict = {"status": "skipped", "reason": exc.one_line()}
    step.details["verification"] = verdict
    if verdict["status"] == "fail":
        step.status = "fail"
        step.reason = f"simplified model changes outputs ({verdict['reason']}); keeping the unsimplified model"
        tmp.unlink()
        shutil.copyfile(raw_path, path)
        return
    if verdict["status"] == "skipped":
        step.reason = f"simplified model not verified: {verdict['reason']}"
    else:
        step.details["verified_inputs"] = store.inputs_digest
    os.replace(tmp, path)


def blame_simplification(raw_path: Path | None, simplified_path: Path | None,
                         inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """When the row running the simplified model fails: does the unsimplified model give other outputs?
    "fail" puts the blame on onnx-simplifier; "ok" clears it (the exported graph or the runtime is the cause)."""
    try:
        return verify_same_outputs(raw_path, simplified_path, inputs, tolerance=SIMPLIFY_TOLERANCE)
    except DeployvalError as exc:
        return {"status": "skipped", "reason": exc.one_line()}


def int32_of(store: Workshop, kind: str, sources: Sequence[Artifact]) -> Plan:
    """The int64 -> int32 pass on another ONNX artifact, verified to give identical outputs."""
    (source,) = sources

    def run(step: Step, path: Path) -> None:
        from . import int32, onnx_io

        model, details = int32.cast_int64_to_int32(onnx_io.load_onnx(source.path))
        step.details = as_dict(details)
        import onnx

        onnx_io.check_onnx(model)
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
        loads_in_runtime(step, path, source.path, "int64 -> int32")
        verdict = verify_same_outputs(source.path, path, store.inputs, tolerance=0.0)
        step.details["verification"] = verdict
        if verdict["status"] == "fail":
            raise ExportError(f"the int32 model computes something else: {verdict['reason']}")

    return Plan(run, f"int64 -> int32 ({source.kind})")


def onnx_fp16(store: Workshop, kind: str, sources: Sequence[Artifact]) -> Plan:
    """fp16 ONNX with fp32 I/O; modules and op types named by --keep-fp32 stay in fp32 (the usual
    cure when normalizations or reductions overflow)."""
    (source,) = sources
    from . import fp16, onnx_io

    model = onnx_io.load_onnx(source.path)
    nodes, op_types = _keep_fp32(store, model)
    recipe = {"nodes": nodes, "op_types": op_types, "converter": fp16.CONVERTER}

    def run(step: Step, path: Path) -> dict[str, Any]:
        converted, details = fp16.convert_fp16(model, keep_io_types=True, op_block_list=op_types,
                                                 node_block_list=nodes)
        step.details = as_dict(details)
        step.details["weights"] = _named_weights(store, details.weights)
        if details.unconvertible:  # fp32 in the artifact though nobody asked: said once here
            first, more = details.unconvertible[0], len(details.unconvertible) - 1
            store.progress.note(f"fp16: node '{first}' kept fp32 ({details.kept_fp32_reasons[first]})"
                                + (f"; {more} more in the fp16 step's details" if more else ""))
        import onnx

        with atomic_path(path) as tmp:
            onnx.save(converted, str(tmp))
        loads_in_runtime(step, path, source.path, "fp16")
        return {"recipe": recipe}

    return Plan(run, "fp16 conversion" + (f" ({len(nodes)} nodes kept fp32)" if nodes else ""),
                fresh=lambda meta: meta.get("recipe") == recipe)


def _named_weights(store: Workshop, found: list[Any]) -> list[dict[str, Any]]:
    """The weights the fp16 ONNX cannot hold, named by module (through the raw export's scopes) with
    the --keep-fp32 value that keeps each fp32; the first few said at once, every fp16 row carries them."""
    if not found:
        return []
    from ..judge.weight_ranges import name_onnx_findings

    modules: dict[str, str] = {}
    if store.spec.kind != "onnx":
        from . import onnx_io
        from .scopes import node_chains

        try:
            raw = onnx_io.load_onnx(store.get(ONNX_RAW).path)
            chains, _ = node_chains(raw, [name for name, _ in store.module().named_modules() if name])
            modules = {node.name: chain[-1] for node, chain in zip(raw.graph.node, chains) if chain}
        except Exception:  # no scopes to read: each reader is named by its op type (op:TYPE) instead
            modules = {}
    named = name_onnx_findings(found, modules)
    for finding in named[:3]:
        store.progress.note(f"fp16 weights: {finding.describe()}")
    if len(named) > 3:
        store.progress.note(f"fp16 weights: {len(named) - 3} more tensors in the fp16 step's details")
    return [f.to_dict() for f in named]


def _keep_fp32(store: Workshop, model: Any) -> tuple[list[str], list[str]]:
    """--keep-fp32 patterns -> node names of the matching modules (through the raw export's
    module scopes: the simplifier keeps node names) or nodes ("node:NAME", fnmatch over ONNX node
    names), and op types ("op:TYPE")."""
    from fnmatch import fnmatchcase

    keep = KeepFp32.of(store.config.keep_fp32)
    op_types, node_patterns, module_patterns = list(keep.op_types), keep.nodes, keep.modules
    names = [node.name for node in model.graph.node]
    for pattern in node_patterns:
        if not any(fnmatchcase(n, pattern) for n in names):
            raise UsageError(f"--keep-fp32 'node:{pattern}' matches no node of the ONNX graph (nodes look like "
                             f"{', '.join(n for n in names[:3] if n)})")
    by_name = [n for n in names if any(fnmatchcase(n, p) for p in node_patterns)]
    if not module_patterns:
        return sorted(set(by_name)), op_types
    if store.spec.kind == "onnx":
        raise UsageError("--keep-fp32 module patterns need a PyTorch model; for an ONNX file use node:NAME or "
                         "op:TYPE")
    from . import onnx_io
    from .scopes import node_chains

    module_names = [name for name, _ in store.module().named_modules() if name]
    unknown = [p for p in module_patterns if not any(fnmatchcase(n, p) for n in module_names)]
    if unknown:
        raise UsageError(f"--keep-fp32 '{unknown[0]}' matches no module (modules look like "
                         f"{', '.join(module_names[:3])}; or use op:TYPE)")
    raw = onnx_io.load_onnx(store.get(ONNX_RAW).path)
    chains, _ = node_chains(raw, module_names)
    kept = {node.name for node, chain in zip(raw.graph.node, chains)
            if chain and any(fnmatchcase(m, p) for m in chain for p in module_patterns)}
    present = {node.name for node in model.graph.node}
    nodes = sorted(kept & present)
    if not nodes:
        raise UsageError(f"--keep-fp32 {', '.join(module_patterns)}: no ONNX node could be traced to those "
                         "modules (the exporter left no module scopes); use node:NAME or op:TYPE")
    return sorted(set(nodes) | set(by_name)), op_types


def onnx_int8(store: Workshop, kind: str, sources: Sequence[Artifact]) -> Plan:
    (source,) = sources
    samples = store.calibration_samples()
    from . import int8, onnx_io

    model = onnx_io.load_onnx(source.path)
    nodes, op_types = int8_exclusions(model, store.config.int8_exclude)
    activation_matmuls = store.config.int8_activation_matmuls
    recipe = {"method": store.config.calibration_method, "nodes": nodes, "op_types": op_types,
              "placement": int8.PLACEMENT, "quantizer": int8.QUANTIZER, "activation_matmuls": activation_matmuls}
    digest = calibration_digest(samples, recipe)
    source_name = str(store.config.calibration) if store.config.calibration else "the run's inputs"

    def run(step: Step, path: Path) -> dict[str, Any]:
        details = int8.quantize_int8(model, samples, path, method=recipe["method"],
                                     exclude_nodes=nodes, exclude_op_types=op_types,
                                     quantize_activation_matmuls=activation_matmuls)
        step.details = {**as_dict(details), "calibration_source": source_name}
        loads_in_runtime(step, path, source.path, "int8")
        if not store.has_calibration:
            step.reason = "calibrated on the run's own inputs; pass --calibration DIR with real data"
        return {"calibration": digest}

    return Plan(run, f"int8 Q/DQ calibration ({len(samples)} samples, {recipe['method']})",
                fresh=lambda meta: meta.get("calibration") == digest,
                skipped_on=(int8.NothingToQuantize,))


def int8_exclusions(model: Any, patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """`--int8-exclude` patterns -> (node names, op types). A pattern that matches nothing is an
    error rather than a silently quantized layer."""
    from fnmatch import fnmatchcase

    names = [n.name for n in model.graph.node]
    ops = sorted({n.op_type for n in model.graph.node})
    nodes: list[str] = []
    op_types: list[str] = []
    for pattern in patterns:
        if pattern.startswith("op:"):
            wanted = pattern[3:]
            if wanted not in ops:
                raise UsageError(f"--int8-exclude '{pattern}': the model has no {wanted} op (it has {', '.join(ops)})")
            op_types.append(wanted)
            continue
        matched = [n for n in names if fnmatchcase(n, pattern)]
        if not matched:
            raise UsageError(f"--int8-exclude '{pattern}' matches no ONNX node (names look like "
                             f"{', '.join(names[:3])}; or use op:TYPE)")
        nodes.extend(m for m in matched if m not in nodes)
    return nodes, op_types


def loads_in_runtime(step: Step, artifact: Any, source: Path | None, pass_name: str, *, fatal: bool = True) -> str:
    """No step says ok for an artifact the runtime refuses: load it in ONNX Runtime (CPU provider, no
    graph optimizations, which is enough to resolve the graph) and make a refusal the step's failure,
    an ExportError naming the pass and, where the runtime's message names one, the node (`fatal=False`:
    the reason is returned instead). Where the source model does not load either (an operator only
    TensorRT has), the refusal is not the pass's doing and the check is recorded as skipped. The
    outcome and its cost are in the step's details (`load_check`)."""
    import time

    from . import onnx_io

    start = time.perf_counter()
    try:
        refusal = onnx_io.runtime_refusal(artifact)
    except ImportError:
        step.details["load_check"] = {"status": "skipped", "reason": "onnxruntime is not installed"}
        return ""
    check: dict[str, Any] = {"status": "ok", "seconds": round(time.perf_counter() - start, 4)}
    step.details["load_check"] = check
    if refusal is None:
        return ""
    source_refusal = onnx_io.runtime_refusal(source) if source is not None else None
    if source_refusal is not None:
        check.update(status="skipped", reason=f"ONNX Runtime does not load the source model either: {source_refusal}")
        return ""
    node = onnx_io.refused_node(refusal)
    reason = (f"the {pass_name} pass made a model ONNX Runtime refuses"
              + (f" at node '{node}'" if node else "") + f": {refusal}")
    check.update(status="fail", reason=reason)
    if fatal:
        raise ExportError(reason)
    return reason


def as_dict(details: Any) -> dict[str, Any]:
    if details is None:
        return {}
    if isinstance(details, Mapping):
        return dict(details)
    from dataclasses import asdict, is_dataclass

    return asdict(details) if is_dataclass(details) else {"details": str(details)}


def calibration_digest(samples: list[dict[str, np.ndarray]], recipe: Mapping[str, Any]) -> str:
    """What a calibrated artifact was made from: the samples' contents and the recipe, so a cached entry
    calibrated on other data or another way is never taken for this one."""
    from ..model.inputs import digest

    return sha256_json([[sorted(s) for s in samples], dict(recipe)]) + sha256_json([digest(s) for s in samples])


def verify_same_outputs(
    reference_path: Path | None, candidate_path: Path | None, inputs: Mapping[str, np.ndarray], tolerance: float
) -> dict[str, Any]:
    """Run two ONNX models on ONNX Runtime (CPU) with the same inputs and compare every output.

    tolerance 0 demands identical values; otherwise |c - r| <= tolerance * (max|r| + |r|).
    """
    import numpy as np

    from .onnx_io import run_onnxruntime

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UsageError("onnxruntime is not installed, so the ONNX pass cannot be verified") from None
    try:
        reference = run_onnxruntime(reference_path, dict(inputs))
        candidate = run_onnxruntime(candidate_path, _feeds_for(candidate_path, inputs))
    except Exception as exc:
        return {"status": "fail", "reason": f"ONNX Runtime could not run it: {first_line(exc)}"}
    worst = 0.0
    for name, ref in reference.items():
        if name not in candidate:
            return {"status": "fail", "reason": f"output '{name}' is missing"}
        cand = np.asarray(candidate[name])
        ref = np.asarray(ref)
        if cand.shape != ref.shape:
            return {"status": "fail", "reason": f"output '{name}' has shape {cand.shape}, expected {ref.shape}"}
        r, c = ref.astype(np.float64), cand.astype(np.float64)
        both_nan = np.isnan(r) & np.isnan(c)
        # NaN/Inf must be the same value at the same position (inf - inf is NaN; an Inf must not widen the bound)
        finite_r = np.isfinite(r)
        with np.errstate(invalid="ignore"):
            diff = np.where(both_nan | (r == c), 0.0, np.where(finite_r, np.abs(c - r), np.inf))
        diff[np.isnan(diff)] = np.inf
        scale = np.abs(r[finite_r]).max() if finite_r.any() else 0.0
        bound = tolerance * (scale + np.where(finite_r, np.abs(r), 0.0))
        if tolerance == 0.0 and not np.array_equal(r[~both_nan], c[~both_nan]):
            return {"status": "fail", "reason": f"output '{name}' differs (max |diff| {np.nanmax(diff):.3g})"}
        if tolerance > 0.0 and not (diff <= bound).all():
            return {"status": "fail", "reason": f"output '{name}' max |diff| {np.nanmax(diff):.3g}"}
        worst = max(worst, float(np.nanmax(diff)) if diff.size else 0.0)
    return {"status": "ok", "reason": "", MAX_ABS: worst, "tolerance": tolerance}


def _feeds_for(path: Path | None, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs cast to what the model declares (int32 after the int64 pass), range-checked."""
    from ..model.inputs import adapt_for_backend
    from .onnx_io import onnx_input_dtypes

    return adapt_for_backend(inputs, onnx_input_dtypes(path), "verification")

"""Artifacts on demand, cached: TorchScript, ONNX (raw -> checked -> simplified and verified), the
int64->int32 ONNX, the fp16 ONNX and the int8 Q/DQ ONNX.

Each artifact is built only when a backend needs it, once per run, and is kept under a cache key
made of the model's identity (weights and code), the input spec, the export options and the tool
versions, so a second run skips exports. Every build records a step (ok / fail / skipped, with its
reason) for the report.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .._util import atomic_path, atomic_write_json, library_versions, sha256_file, sha256_json
from ..backends.base import (
    MODULE,
    ONNX,
    ONNX_FP16,
    ONNX_FP16_INT32,
    ONNX_INT8,
    ONNX_INT8_INT32,
    ONNX_INT32,
    ONNX_RAW,
    TORCHSCRIPT,
    Artifact,
)
from ..errors import DeployvalError, ExportError, UsageError, first_line
from ..progress import Progress, Step
from ..spec import ModelSpec, RunConfig

CACHE_FORMAT = 1
FILE_NAMES = {
    TORCHSCRIPT: "model.ts",
    ONNX_RAW: "exported.onnx",
    ONNX: "model.onnx",
    ONNX_INT32: "model.int32.onnx",
    ONNX_FP16: "model.fp16.onnx",
    ONNX_INT8: "model.int8.onnx",
    ONNX_FP16_INT32: "model.fp16.int32.onnx",
    ONNX_INT8_INT32: "model.int8.int32.onnx",
}
DEVICE_KINDS = (TORCHSCRIPT,)  # traced on the device its rows run on
# The int64 -> int32 variant of each ONNX artifact, and what it is made from.
INT32_SOURCES = {ONNX_INT32: ONNX, ONNX_FP16_INT32: ONNX_FP16, ONNX_INT8_INT32: ONNX_INT8}
# Simplification must leave outputs unchanged up to float re-association: |s - r| <= tol * (max|r| + |r|).
SIMPLIFY_TOLERANCE = 1e-5


def default_cache_dir() -> Path:
    root = os.environ.get("DEPLOYVAL_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "deployval" if xdg else Path.home() / ".cache" / "deployval"


class ArtifactStore:
    """Builds artifacts for one model and one set of inputs, through the cache."""

    def __init__(
        self,
        spec: ModelSpec,
        inputs: Mapping[str, np.ndarray],
        config: RunConfig,
        *,
        module: Callable[[], Any],
        output_names: tuple[str, ...],
        model_digest: str,
        inputs_digest: str,
        progress: Progress | None = None,
        reproduce: str | None = None,
        calibration: Callable[[], list[dict[str, np.ndarray]]] | None = None,
    ) -> None:
        self.spec = spec
        self.inputs = dict(inputs)
        self.config = config
        self._module = module
        self.output_names = output_names
        self.inputs_digest = inputs_digest
        self.progress = progress or Progress()
        self.reproduce = reproduce
        self._calibration = calibration
        self.steps: list[Step] = []
        self._built: dict[str, Artifact] = {}
        self._failed: dict[str, DeployvalError] = {}
        exporter = config.exporter or spec.export.exporter
        self.key_data = {
            "format": CACHE_FORMAT,
            "model": model_digest,
            "kind": spec.kind,
            "inputs": [(i.name, list(i.shape), i.dtype) for i in spec.inputs],
            "outputs": list(output_names),
            "export": {**spec.export.to_dict(), "exporter": exporter},
            "versions": library_versions(),
        }
        self.exporter = exporter
        self.key = sha256_json(self.key_data)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if config.use_cache:
            root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.name)[:60]
            self.directory = root / f"{safe}-{self.key[:16]}"
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot use cache directory '{root}': {first_line(exc)}") from None
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="deployval-")
            self.directory = Path(self._tmp.name)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ------------------------------------------------------------------ public
    def get(self, kind: str) -> Artifact:
        """The artifact of `kind`, built (or taken from the cache) the first time it is asked for.
        A failure is remembered, so later backends needing it fail fast with the same reason."""
        if kind in self._built:
            return self._built[kind]
        if kind in self._failed:
            raise self._failed[kind]
        builders: dict[str, Callable[[], Artifact]] = {
            MODULE: self._module_artifact,
            TORCHSCRIPT: self._torchscript,
            ONNX_RAW: self._onnx_raw,
            ONNX: self._onnx,
            ONNX_INT32: lambda: self._int32_of(ONNX_INT32),
            ONNX_FP16: self._onnx_fp16,
            ONNX_INT8: self._onnx_int8,
            ONNX_FP16_INT32: lambda: self._int32_of(ONNX_FP16_INT32),
            ONNX_INT8_INT32: lambda: self._int32_of(ONNX_INT8_INT32),
        }
        if kind not in builders:
            raise ExportError(f"unknown artifact kind '{kind}'")
        try:
            with self._lock(kind):
                artifact = builders[kind]()
        except DeployvalError as exc:
            self._failed[kind] = exc
            raise
        self._built[kind] = artifact
        return artifact

    def step_for(self, name: str) -> Step | None:
        return next((s for s in reversed(self.steps) if s.name == name), None)

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _lock(self, kind: str) -> Iterator[None]:
        """Hold an exclusive lock on one cache entry while it is checked and built, so that two
        deployval processes sharing a cache do not build the same artifact twice (the second waits
        and then finds it cached). Locks follow the artifact dependencies downwards, so they cannot
        deadlock. POSIX only; elsewhere the atomic writes still keep entries whole."""
        if kind not in FILE_NAMES or not self.config.use_cache:
            yield
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        lock_path = self._path(kind).with_name(self._path(kind).name + ".lock")
        with open(lock_path, "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.progress.note(f"waiting for another deployval process to finish {FILE_NAMES[kind]}")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _path(self, kind: str) -> Path:
        return self.artifact_path(kind)

    def artifact_path(self, kind: str) -> Path:
        """Where the artifact of `kind` lives in this store. A traced TorchScript is per device: tracing
        freezes devices (`torch.arange(..., device=x.device)` becomes a CPU constant), so a CUDA row runs
        a module traced on CUDA."""
        name = FILE_NAMES[kind]
        if kind in DEVICE_KINDS and self.config.device != "cpu":
            stem, _, suffix = name.rpartition(".")
            name = f"{stem}.{self.config.device}.{suffix}"
        return self.directory / name

    def _meta_path(self, kind: str) -> Path:
        return self._path(kind).with_suffix(self._path(kind).suffix + ".json")

    def _cached(self, kind: str) -> dict[str, Any] | None:
        """The sidecar of a cached artifact, if the file is there and its hash matches."""
        if not self.config.use_cache:
            return None
        path, meta_path = self._path(kind), self._meta_path(kind)
        if not (path.exists() and meta_path.exists()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return None
        if meta.get("key") != self.key or meta.get("sha256") != sha256_file(path):
            self.progress.note(f"cache entry {path.name} is stale or damaged; rebuilding")
            return None
        return meta

    def _save_meta(self, kind: str, artifact: Artifact, step: Step, extra: Mapping[str, Any] | None = None) -> None:
        if self.config.use_cache:
            atomic_write_json(self._meta_path(kind), {
                "key": self.key, "kind": kind, "sha256": artifact.sha256, "step": step.to_dict(),
                "details": artifact.details, **(extra or {}),
            })

    def _file_artifact(self, kind: str, path: Path, details: dict[str, Any] | None = None,
                       sha256: str | None = None) -> Artifact:
        return Artifact(kind=kind, path=path, sha256=sha256 or sha256_file(path), input_names=self.spec.input_names,
                        output_names=self.output_names, details=details or {})

    def _record(self, step: Step, artifact: Artifact | None) -> None:
        if artifact is not None and artifact.path is not None:
            step.artifact = artifact.to_dict()
        self.steps.append(step)

    def _from_cache(self, kind: str, step_name: str, meta: dict[str, Any] | None = None) -> Artifact | None:
        meta = meta if meta is not None else self._cached(kind)
        if meta is None:
            return None
        artifact = self._file_artifact(kind, self._path(kind), meta.get("details", {}), sha256=meta["sha256"])
        previous = meta.get("step", {})
        step = Step(step_name, status=previous.get("status", "ok"), reason=previous.get("reason", ""),
                    cached=True, details=previous.get("details", {}), reproduce=self.reproduce)
        self._record(step, artifact)
        return artifact

    @contextmanager
    def _timed(self, step: Step, description: str) -> Iterator[Step]:
        start = time.perf_counter()
        with self.progress.step(description):
            try:
                yield step
            finally:
                step.seconds = time.perf_counter() - start

    def _torch_args(self) -> tuple[Any, ...]:
        import torch

        return tuple(torch.from_numpy(self.inputs[name]) for name in self.spec.input_names)

    # ------------------------------------------------------------------ builders
    def _module_artifact(self) -> Artifact:
        if self.spec.kind == "onnx":
            raise UsageError(f"model '{self.spec.name}' is an ONNX file: there is no PyTorch module to run")
        return Artifact(kind=MODULE, obj=self._module(), input_names=self.spec.input_names,
                        output_names=self.output_names)

    def _torchscript(self) -> Artifact:
        if self.spec.kind == "onnx":
            raise UsageError(f"model '{self.spec.name}' is an ONNX file: there is no TorchScript to run")
        if self.spec.kind == "torchscript":  # its runner binds any --arg values at load
            artifact = self._file_artifact(TORCHSCRIPT, Path(self.spec.path or ""))
            self._record(Step("torchscript", status="skipped", reason="the model is a TorchScript file"), artifact)
            return artifact
        cached = self._from_cache(TORCHSCRIPT, "torchscript")
        if cached:
            return cached
        from .torchscript import export_torchscript

        mode = self.spec.export.torchscript
        step = Step("torchscript", reproduce=self.reproduce)
        try:
            with self._timed(step, f"TorchScript ({mode})"):
                module, args = self._module(), self._torch_args()
                if self.config.device != "cpu":  # trace where it will run (a copy: the reference stays put)
                    import copy

                    module = copy.deepcopy(module).to(self.config.device)
                    args = tuple(a.to(self.config.device) for a in args)
                step.details = {**export_torchscript(module, args, self._path(TORCHSCRIPT), mode),
                                "device": self.config.device}
        except DeployvalError as exc:
            step.status, step.reason = "fail", exc.one_line()
            self._record(step, None)
            raise
        artifact = self._file_artifact(TORCHSCRIPT, self._path(TORCHSCRIPT), step.details)
        self._record(step, artifact)
        self._save_meta(TORCHSCRIPT, artifact, step)
        return artifact

    def _onnx_raw(self) -> Artifact:
        if self.spec.kind == "onnx":
            artifact = self._file_artifact(ONNX_RAW, Path(self.spec.path or ""))
            self._record(Step("export-onnx", status="skipped", reason="the model is an ONNX file"), artifact)
            return artifact
        cached = self._from_cache(ONNX_RAW, "export-onnx")
        if cached:
            return cached
        from .onnx import export_onnx

        step = Step("export-onnx", reproduce=self.reproduce)
        try:
            with self._timed(step, f"ONNX export ({self.exporter})"):
                step.details = export_onnx(
                    self._module(), self._torch_args(), self._path(ONNX_RAW),
                    input_names=self.spec.input_names, output_names=self.output_names,
                    exporter=self.exporter, opset=self.spec.export.opset,
                    dynamic_axes=self.spec.export.dynamic_axes,
                )
        except DeployvalError as exc:
            step.status, step.reason = "fail", exc.one_line()
            self._record(step, None)
            raise
        if step.details.get("fallback_reason"):
            step.reason = f"fell back to the legacy exporter: {step.details['fallback_reason']}"
        artifact = self._file_artifact(ONNX_RAW, self._path(ONNX_RAW), step.details)
        self._record(step, artifact)
        self._save_meta(ONNX_RAW, artifact, step)
        return artifact

    def _onnx(self) -> Artifact:
        """Checked and simplified ONNX; the simplification is verified on this run's inputs and
        dropped (with the reason) if it changes the outputs."""
        raw = self.get(ONNX_RAW)
        meta = self._cached(ONNX)
        if meta is not None and meta.get("verified_inputs") in (self.inputs_digest, None):
            previous = meta.get("check", {})
            self._record(Step("check", status=previous.get("status", "ok"), reason=previous.get("reason", ""),
                              cached=True), None)
            return self._from_cache(ONNX, "simplify", meta)  # type: ignore[return-value]
        from . import onnx_io

        check = Step("check", reproduce=self.reproduce)
        with self._timed(check, "onnx.checker"):
            try:
                onnx_io.check_onnx(raw.path)
            except DeployvalError as exc:
                check.status, check.reason = "fail", exc.one_line()
        self._record(check, None)
        if check.status == "fail":
            error_type = UsageError if self.spec.kind == "onnx" else ExportError
            raise error_type(f"the ONNX model does not pass onnx.checker: {check.reason}")

        step = Step("simplify", reproduce=self.reproduce)
        path = self._path(ONNX)
        if not self.spec.export.simplify:
            step.status, step.reason = "skipped", "simplification is off in the model's export options"
            shutil.copyfile(raw.path, path)  # type: ignore[arg-type]
        else:
            with self._timed(step, "onnx-simplifier + verification"):
                self._simplify_verified(raw.path, path, step)  # type: ignore[arg-type]
        artifact = self._file_artifact(ONNX, path, step.details)
        self._record(step, artifact)
        self._save_meta(ONNX, artifact, step, {"verified_inputs": step.details.get("verified_inputs"),
                                               "check": check.to_dict()})
        return artifact

    def _simplify_verified(self, raw_path: Path, path: Path, step: Step) -> None:
        from . import onnx_io, simplify

        model = onnx_io.load_onnx(raw_path)
        try:
            simplified, details = simplify.simplify_onnx(model)
        except DeployvalError as exc:
            step.status = "fail"
            step.reason = f"onnx-simplifier failed, keeping the unsimplified model: {exc.one_line()}"
            shutil.copyfile(raw_path, path)
            return
        step.details = {**_as_dict(details)}
        import onnx

        tmp = path.with_name(path.name + ".candidate")
        onnx.save(simplified, str(tmp))
        try:
            verdict = verify_same_outputs(raw_path, tmp, self.inputs, tolerance=SIMPLIFY_TOLERANCE)
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
            step.details["verified_inputs"] = self.inputs_digest
        os.replace(tmp, path)

    def _int32_of(self, kind: str) -> Artifact:
        """The int64 -> int32 pass on another ONNX artifact, verified to give identical outputs."""
        source = self.get(INT32_SOURCES[kind])
        step_name = "int64-to-int32" + ("" if kind == ONNX_INT32 else f" ({INT32_SOURCES[kind]})")
        cached = self._from_cache(kind, step_name)
        if cached:
            return cached
        from . import int32, onnx_io

        step = Step(step_name, reproduce=self.reproduce)
        try:
            with self._timed(step, f"int64 -> int32 ({INT32_SOURCES[kind]})"):
                model, details = int32.cast_int64_to_int32(onnx_io.load_onnx(source.path))
                step.details = _as_dict(details)
                import onnx

                onnx_io.check_onnx(model)
                with atomic_path(self._path(kind)) as tmp:
                    onnx.save(model, str(tmp))
                verdict = verify_same_outputs(source.path, self._path(kind), self.inputs, tolerance=0.0)
                step.details["verification"] = verdict
                if verdict["status"] == "fail":
                    raise ExportError(f"the int32 model computes something else: {verdict['reason']}")
        except DeployvalError as exc:
            step.status, step.reason = "fail", exc.one_line()
            self._record(step, None)
            raise
        artifact = self._file_artifact(kind, self._path(kind), step.details)
        self._record(step, artifact)
        self._save_meta(kind, artifact, step)
        return artifact

    def _onnx_fp16(self) -> Artifact:
        """fp16 ONNX with fp32 I/O; modules and op types named by --keep-fp32 stay in fp32 (the usual
        cure when normalizations or reductions overflow)."""
        source = self.get(ONNX)
        from . import fp16, onnx_io

        model = onnx_io.load_onnx(source.path)
        nodes, op_types = self._keep_fp32(model)
        recipe = {"nodes": nodes, "op_types": op_types, "converter": fp16.CONVERTER}
        meta = self._cached(ONNX_FP16)
        if meta is not None and meta.get("recipe") == recipe:
            return self._from_cache(ONNX_FP16, "fp16", meta)  # type: ignore[return-value]
        step = Step("fp16", reproduce=self.reproduce)
        try:
            with self._timed(step, "fp16 conversion" + (f" ({len(nodes)} nodes kept fp32)" if nodes else "")):
                converted, details = fp16.convert_fp16(model, keep_io_types=True, op_block_list=op_types,
                                                         node_block_list=nodes)
                step.details = _as_dict(details)
                if details.unconvertible:  # fp32 in the artifact though nobody asked: said once here
                    first, more = details.unconvertible[0], len(details.unconvertible) - 1
                    self.progress.note(f"fp16: node '{first}' kept fp32 ({details.kept_fp32_reasons[first]})"
                                       + (f"; {more} more in the fp16 step's details" if more else ""))
                import onnx

                with atomic_path(self._path(ONNX_FP16)) as tmp:
                    onnx.save(converted, str(tmp))
        except DeployvalError as exc:
            step.status, step.reason = "fail", exc.one_line()
            self._record(step, None)
            raise
        artifact = self._file_artifact(ONNX_FP16, self._path(ONNX_FP16), step.details)
        self._record(step, artifact)
        self._save_meta(ONNX_FP16, artifact, step, {"recipe": recipe})
        return artifact

    def _keep_fp32(self, model: Any) -> tuple[list[str], list[str]]:
        """--keep-fp32 patterns -> node names of the matching modules (through the raw export's
        module scopes: the simplifier keeps node names) and op types ("op:TYPE")."""
        patterns = self.config.keep_fp32
        op_types = [p[3:] for p in patterns if p.startswith("op:")]
        module_patterns = [p for p in patterns if not p.startswith("op:")]
        if not module_patterns:
            return [], op_types
        if self.spec.kind == "onnx":
            raise UsageError("--keep-fp32 module patterns need a PyTorch model; for an ONNX file use op:TYPE")
        from fnmatch import fnmatchcase

        from . import onnx_io
        from .scopes import node_chains

        module_names = [name for name, _ in self._module().named_modules() if name]
        unknown = [p for p in module_patterns if not any(fnmatchcase(n, p) for n in module_names)]
        if unknown:
            raise UsageError(f"--keep-fp32 '{unknown[0]}' matches no module (modules look like "
                             f"{', '.join(module_names[:3])}; or use op:TYPE)")
        raw = onnx_io.load_onnx(self.get(ONNX_RAW).path)
        chains, _ = node_chains(raw, module_names)
        kept = {node.name for node, chain in zip(raw.graph.node, chains)
                if chain and any(fnmatchcase(m, p) for m in chain for p in module_patterns)}
        present = {node.name for node in model.graph.node}
        nodes = sorted(kept & present)
        if not nodes:
            raise UsageError(f"--keep-fp32 {', '.join(module_patterns)}: no ONNX node could be traced to those "
                             "modules (the exporter left no module scopes); use op:TYPE")
        return nodes, op_types

    def _onnx_int8(self) -> Artifact:
        source = self.get(ONNX)
        samples = self._calibration() if self._calibration else [self.inputs]
        from . import int8, onnx_io

        model = onnx_io.load_onnx(source.path)
        nodes, op_types = int8_exclusions(model, self.config.int8_exclude)
        activation_matmuls = bool(self.config.backend_options.get(int8.ACTIVATION_MATMULS_OPTION, False))
        recipe = {"method": self.config.calibration_method, "nodes": nodes, "op_types": op_types,
                  "placement": int8.PLACEMENT, "activation_matmuls": activation_matmuls}
        calibration_digest = sha256_json([[sorted(s) for s in samples], recipe]) + _samples_digest(samples)
        meta = self._cached(ONNX_INT8)
        if meta is not None and meta.get("calibration") == calibration_digest:
            return self._from_cache(ONNX_INT8, "int8", meta)  # type: ignore[return-value]

        step = Step("int8", reproduce=self.reproduce)
        source_name = str(self.config.calibration) if self.config.calibration else "the run's inputs"
        try:
            with self._timed(step, f"int8 Q/DQ calibration ({len(samples)} samples, {recipe['method']})"):
                details = int8.quantize_int8(model, samples, self._path(ONNX_INT8), method=recipe["method"],
                                               exclude_nodes=nodes, exclude_op_types=op_types,
                                               quantize_activation_matmuls=activation_matmuls)
                step.details = {**_as_dict(details), "calibration_source": source_name}
        except DeployvalError as exc:
            step.status = "skipped" if isinstance(exc, int8.NothingToQuantize) else "fail"
            step.reason = exc.one_line()
            self._record(step, None)
            raise
        if not self._calibration:
            step.reason = "calibrated on the run's own inputs; pass --calibration DIR with real data"
        artifact = self._file_artifact(ONNX_INT8, self._path(ONNX_INT8), step.details)
        self._record(step, artifact)
        self._save_meta(ONNX_INT8, artifact, step, {"calibration": calibration_digest})
        return artifact

    def export_all(self, out_dir: Path, kinds: tuple[str, ...]) -> tuple[dict[str, Path], dict[str, DeployvalError]]:
        """Build `kinds` and copy them to `out_dir`; returns what was written and, per kind, why
        not (failures are recorded as steps too)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        errors: dict[str, DeployvalError] = {}
        for kind in kinds:
            try:
                artifact = self.get(kind)
            except DeployvalError as exc:
                errors[kind] = exc
                continue
            if artifact.path is None:
                continue
            target = out_dir / FILE_NAMES[kind]
            if Path(artifact.path).resolve() != target.resolve():
                shutil.copyfile(artifact.path, target)
            written[kind] = target
        return written, errors


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


def _as_dict(details: Any) -> dict[str, Any]:
    if details is None:
        return {}
    if isinstance(details, Mapping):
        return dict(details)
    from dataclasses import asdict, is_dataclass

    return asdict(details) if is_dataclass(details) else {"details": str(details)}


def _samples_digest(samples: list[dict[str, np.ndarray]]) -> str:
    from ..inputs import digest

    return sha256_json([digest(s) for s in samples])


def verify_same_outputs(
    reference_path: Path | None, candidate_path: Path | None, inputs: Mapping[str, np.ndarray], tolerance: float
) -> dict[str, Any]:
    """Run two ONNX models on ONNX Runtime (CPU) with the same inputs and compare every output.

    tolerance 0 demands identical values; otherwise |c - r| <= tolerance * (max|r| + |r|).
    """
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
        diff = np.where(both_nan, 0.0, np.abs(c - r))
        bound = tolerance * (np.nanmax(np.abs(r)) if r.size else 0.0) + tolerance * np.abs(r)
        if tolerance == 0.0 and not np.array_equal(r[~both_nan], c[~both_nan]):
            return {"status": "fail", "reason": f"output '{name}' differs (max |diff| {np.nanmax(diff):.3g})"}
        if tolerance > 0.0 and not (diff <= bound).all():
            return {"status": "fail", "reason": f"output '{name}' max |diff| {np.nanmax(diff):.3g}"}
        worst = max(worst, float(np.nanmax(diff)) if diff.size else 0.0)
    return {"status": "ok", "reason": "", "max_abs": worst, "tolerance": tolerance}


def _feeds_for(path: Path | None, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs cast to what the model declares (int32 after the int64 pass), range-checked."""
    from ..inputs import adapt_for_backend
    from .onnx_io import onnx_input_dtypes

    return adapt_for_backend(inputs, onnx_input_dtypes(path), "verification")

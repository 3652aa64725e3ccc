"""Artifacts on demand, cached: TorchScript, ONNX (raw -> checked -> simplified and verified), the
int64->int32 ONNX, the fp16 ONNX and the int8 Q/DQ ONNX.

Each artifact is built only when a backend needs it, once per run, and is kept under a cache key
made of the model's identity (weights and code), the input spec, the export options and the tool
versions, so a second run skips exports. Every build records a step (ok / fail / skipped, with its
reason) for the report.

The store is a table, `BUILDS`: per kind, the kinds it is made from, its builder (export/builders.py)
and its step name. One wrapper, `ArtifactStore._build`, does for every kind what a build needs
around the builder: the cache check, the step, its timing, the failure record, the metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util import atomic_write_json, library_versions, sha256_file, sha256_json
from ..errors import DeployvalError, ExportError, UsageError, first_line
from ..progress import Progress, Step
from ..spec import ModelSpec, RunConfig
from . import builders
from .artifacts import (
    DEVICE_KINDS,
    FILE_NAMES,
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

if TYPE_CHECKING:
    import numpy as np

CACHE_FORMAT = 1


@dataclass(frozen=True)
class Build:
    """How one kind is made: the kinds it is built from, the builder, and the step it is reported as."""

    sources: tuple[str, ...]
    builder: builders.Builder
    step: str


BUILDS: dict[str, Build] = {
    MODULE: Build((), builders.module, "module"),  # in memory: no file, no cache, no step
    TORCHSCRIPT: Build((), builders.torchscript, "torchscript"),
    ONNX_RAW: Build((), builders.onnx_raw, "export-onnx"),
    ONNX: Build((ONNX_RAW,), builders.onnx, "simplify"),
    ONNX_FP16: Build((ONNX,), builders.onnx_fp16, "fp16"),
    ONNX_INT8: Build((ONNX,), builders.onnx_int8, "int8"),
    ONNX_INT32: Build((ONNX,), builders.int32_of, "int64-to-int32"),
    ONNX_FP16_INT32: Build((ONNX_FP16,), builders.int32_of, "int64-to-int32 (onnx-fp16)"),
    ONNX_INT8_INT32: Build((ONNX_INT8,), builders.int32_of, "int64-to-int32 (onnx-int8)"),
}


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
        self.simplify_verified_by_row = False  # set by a run whose ORT fp32 row runs the simplified ONNX first
        self.traced_module: Any = None  # a TorchScript traced during the reference run, saved instead of a new trace
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
        if kind not in BUILDS:
            raise ExportError(f"unknown artifact kind '{kind}'")
        try:
            with self._lock(kind):
                artifact = self._build(kind)
        except DeployvalError as exc:
            self._failed[kind] = exc
            raise
        self._built[kind] = artifact
        return artifact

    def step_for(self, name: str) -> Step | None:
        return next((s for s in reversed(self.steps) if s.name == name), None)

    @property
    def simplification_pending(self) -> bool:
        """The simplified ONNX was built in this run and waits for its row's verdict."""
        step = self.step_for(BUILDS[ONNX].step)
        return ONNX in self._built and step is not None and step.details.get("verified_inputs") == builders.PENDING

    def settle_simplification(self, row_passed: bool, row: str) -> dict[str, Any]:
        """Verify a deferred simplification by its row: a passing row verifies it; after a failing one
        the raw ONNX is run too, and where the simplification changed the outputs the store goes back
        to the unsimplified model (the caller reruns the row). Returns the verdict."""
        step = self.step_for(BUILDS[ONNX].step)
        assert step is not None and self.simplification_pending
        if row_passed:
            verdict: dict[str, Any] = {"status": "ok", "reason": "", "by": f"the {row} row, against the reference"}
        else:
            blame = Step("simplify-blame", reproduce=self.reproduce)
            with self.timed(blame, f"onnx-simplifier verification (the {row} row failed)"):
                verdict = builders.blame_simplification(self._built[ONNX_RAW].path, self._built[ONNX].path,
                                                        self.inputs)
            verdict["by"] = f"the unsimplified model, after the {row} row failed"
            step.seconds += blame.seconds
        step.details["verification"] = verdict
        step.details["verified_inputs"] = self.inputs_digest if verdict["status"] != "skipped" else None
        artifact = self._built[ONNX]
        if verdict["status"] == "fail":
            step.status = "fail"
            step.reason = f"simplified model changes outputs ({verdict['reason']}); keeping the unsimplified model"
            shutil.copyfile(self._built[ONNX_RAW].path, artifact.path)  # type: ignore[arg-type]
            artifact = self._file_artifact(ONNX, self._path(ONNX), step.details)
            self._built[ONNX] = artifact
            step.artifact = artifact.to_dict()
        elif verdict["status"] == "skipped":
            step.reason = f"simplified model not verified: {verdict['reason']}"
        if self.config.use_cache:
            try:
                extra = json.loads(self._meta_path(ONNX).read_text())
            except (OSError, ValueError):
                extra = {}
            extra = {k: v for k, v in extra.items() if k not in ("key", "kind", "sha256", "step", "details")}
            self._save_meta(ONNX, artifact, step, {**extra, "verified_inputs": step.details["verified_inputs"]})
        return verdict

    # ------------------------------------------------------------------ for the builders
    def module(self) -> Any:
        """The PyTorch module (loaded on first use)."""
        return self._module()

    def torch_args(self) -> tuple[Any, ...]:
        import torch

        return tuple(torch.from_numpy(self.inputs[name]) for name in self.spec.input_names)

    @property
    def has_calibration(self) -> bool:
        return self._calibration is not None

    def calibration_samples(self) -> list[dict[str, np.ndarray]]:
        """The calibration set (--calibration), or the run's own inputs."""
        return self._calibration() if self._calibration else [self.inputs]

    def record(self, step: Step, artifact: Artifact | None) -> None:
        if artifact is not None and artifact.path is not None:
            step.artifact = artifact.to_dict()
        self.steps.append(step)

    @contextmanager
    def timed(self, step: Step, description: str) -> Iterator[Step]:
        start = time.perf_counter()
        with self.progress.step(description):
            try:
                yield step
            finally:
                step.seconds = time.perf_counter() - start

    # ------------------------------------------------------------------ the one build wrapper
    def _build(self, kind: str) -> Artifact:
        """Sources, then the builder, then (for a file) the cache or the build, as one recorded step."""
        build = BUILDS[kind]
        sources = [self.get(source) for source in build.sources]
        made = build.builder(self, kind, sources)
        if isinstance(made, Artifact):
            return made
        if isinstance(made, builders.Given):
            artifact = self._file_artifact(kind, made.path)
            self.record(Step(build.step, status="skipped", reason=made.reason), artifact)
            return artifact
        plan, path = made, self._path(kind)
        meta = self._cached(kind)
        if meta is not None and plan.fresh(meta):
            if plan.on_cache_hit is not None:
                plan.on_cache_hit(meta)
            return self._from_cache(kind, build.step, meta)
        if plan.prelude is not None:
            plan.prelude()
        step = Step(build.step, reproduce=self.reproduce)
        try:
            if plan.description is None:
                extra = plan.run(step, path)
            else:
                with self.timed(step, plan.description):
                    extra = plan.run(step, path)
        except DeployvalError as exc:
            step.status = "skipped" if isinstance(exc, plan.skipped_on) else "fail"
            step.reason = exc.one_line()
            self.record(step, None)
            raise
        artifact = self._file_artifact(kind, path, step.details)
        self.record(step, artifact)
        self._save_meta(kind, artifact, step, extra)
        return artifact

    # ------------------------------------------------------------------ cache
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

    def _from_cache(self, kind: str, step_name: str, meta: Mapping[str, Any]) -> Artifact:
        artifact = self._file_artifact(kind, self._path(kind), meta.get("details", {}), sha256=meta["sha256"])
        previous = meta.get("step", {})
        step = Step(step_name, status=previous.get("status", "ok"), reason=previous.get("reason", ""),
                    cached=True, details=previous.get("details", {}), reproduce=self.reproduce)
        self.record(step, artifact)
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


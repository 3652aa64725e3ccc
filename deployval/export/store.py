"""Artifacts on demand, cached: TorchScript, ONNX (raw -> checked -> simplified and verified), the
int64->int32 ONNX, the fp16 ONNX and the int8 Q/DQ ONNX.

Each artifact is built only when a backend needs it, once per run, and is kept under a cache key
made of the model's identity (weights and code), the input spec, the export options and the tool
versions, so a second run skips exports. Every build records a step (ok / fail / skipped, with its
reason) for the report.

An entry that cannot be trusted (export/cache_entry.py says which) is moved aside and rebuilt, with a
note; temporary files an interrupted build left are removed under the entry's lock. A cache that
cannot be written is used read-only: valid entries are read without a lock, and whatever must be
built is built in a temporary directory instead.

The store is a table, `BUILDS`: per kind, the kinds it is made from, its builder (export/builders.py)
and its step name. One wrapper, `ArtifactStore._build`, does for every kind what a build needs
around the builder: the cache check, the step, its timing, the failure record, the metadata.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util import atomic_path, atomic_write_json, library_versions, sha256_file, sha256_json
from ..errors import DeployvalError, ExportError, UsageError, first_line
from ..model.spec import ModelSpec, RunConfig
from ..progress import Progress, Step
from . import builders, cache_entry, nncf_int8
from .artifacts import (
    DEVICE_KINDS,
    FILE_NAMES,
    INT32_SOURCES,
    MODULE,
    ONNX,
    ONNX_FP16,
    ONNX_FP16_INT32,
    ONNX_INT8,
    ONNX_INT8_INT32,
    ONNX_INT8_NNCF,
    ONNX_INT32,
    ONNX_KINDS,
    ONNX_RAW,
    PT2,
    PT2_BF16,
    PT2_FP16,
    SERVED,
    TORCHSCRIPT,
    Artifact,
)

if TYPE_CHECKING:
    import numpy as np

# 2: keys cover the module's structure, hyperparameters, all buffers and the factory's source, and an
# ONNX model's external data; sidecars record the artifact's input signature.
CACHE_FORMAT = 2
# Errors that make a cache directory unwritable rather than wrong: it is then used read-only.
READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


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
    ONNX_INT8_NNCF: Build((ONNX,), nncf_int8.onnx_int8_nncf, "int8 (nncf)"),
    PT2: Build((), builders.aoti_package, "aoti"),
    PT2_FP16: Build((), builders.aoti_package, "aoti (fp16)"),
    PT2_BF16: Build((), builders.aoti_package, "aoti (bf16)"),
    SERVED: Build((), builders.served, "served"),  # the model as served elsewhere: nothing to build
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
        self._scratch: tempfile.TemporaryDirectory[str] | None = None  # builds a read-only cache cannot take
        self._elsewhere: set[str] = set()  # kinds built in the scratch directory
        self._read_only: str | None = None  # why the cache entry cannot be written, once known
        if config.use_cache:
            root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.name)[:60]
            self.directory = root / f"{safe}-{self.key[:16]}"
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if exc.errno not in READ_ONLY_ERRNOS:
                    raise UsageError(f"cannot use cache directory '{root}': {first_line(exc)}") from None
                self._read_only = first_line(exc)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="deployval-")
            self.directory = Path(self._tmp.name)

    def close(self) -> None:
        for tmp in (self._tmp, self._scratch):
            if tmp is not None:
                tmp.cleanup()
        self._tmp = self._scratch = None

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
        with self._lock(ONNX):
            artifact = self._built[ONNX]
            if verdict["status"] == "fail":
                if not self._writable() and ONNX not in self._elsewhere:
                    self._build_elsewhere(ONNX)
                step.status = "fail"
                step.reason = f"simplified model changes outputs ({verdict['reason']}); keeping the unsimplified model"
                with atomic_path(self._path(ONNX)) as tmp:
                    shutil.copyfile(self._built[ONNX_RAW].path, tmp)  # type: ignore[arg-type]
                artifact = self._file_artifact(ONNX, self._path(ONNX), step.details)
                self._built[ONNX] = artifact
                step.artifact = artifact.to_dict()
            elif verdict["status"] == "skipped":
                step.reason = f"simplified model not verified: {verdict['reason']}"
            if self.config.use_cache and (self._writable() or ONNX in self._elsewhere):
                try:
                    extra = cache_entry.read_sidecar(self._meta_path(ONNX))
                except cache_entry.Damaged:
                    extra = {}
                extra = {k: v for k, v in extra.items()
                         if k not in ("key", "kind", "sha256", "step", "details", "signature")}
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
        plan = made
        meta = self._cached(kind)
        if meta is not None and plan.fresh(meta):
            if plan.on_cache_hit is not None:
                plan.on_cache_hit(meta)
            return self._from_cache(kind, build.step, meta)
        if self.config.use_cache and not self._writable() and kind not in self._elsewhere:
            self._build_elsewhere(kind)
        path = self._path(kind)
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
        if kind not in FILE_NAMES or not self.config.use_cache or kind in self._elsewhere or not self._writable():
            yield  # nothing shared to write: a valid entry of a read-only cache is read without a lock
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        path = self._path(kind)
        try:
            handle = open(path.with_name(path.name + ".lock"), "a+b")  # noqa: SIM115 - closed below
        except OSError as exc:
            self._read_only = f"{path.name}.lock: {first_line(exc)}"
            yield
            return
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.progress.note(f"waiting for another deployval process to finish {FILE_NAMES[kind]}")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                self._remove_leftovers(path)
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _writable(self) -> bool:
        """Whether this store's cache entry can be written (checked once; a failure later says so too)."""
        if self._read_only is None and self.config.use_cache and not os.access(self.directory, os.W_OK | os.X_OK):
            self._read_only = f"'{self.directory}' is not writable"
        return self._read_only is None

    def _build_elsewhere(self, kind: str) -> None:
        """Build `kind` in a temporary directory: the cache entry cannot take it."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="deployval-")
        self._elsewhere.add(kind)
        self.progress.note(f"the artifact cache is read-only ({self._read_only}); building {FILE_NAMES[kind]} "
                           f"in a temporary directory, not cached")

    def _remove_leftovers(self, path: Path) -> None:
        """Remove what an interrupted build of `path` left (its lock is held: nobody else is writing it)."""
        removed = []
        for leftover in cache_entry.leftovers(path):
            try:
                leftover.unlink()
                removed.append(leftover.name)
            except OSError:
                continue
        if removed:
            self.progress.note(f"removed {len(removed)} temporary file(s) an interrupted build of {path.name} "
                               f"left: {', '.join(removed)}")

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
        if kind in self._elsewhere and self._scratch is not None:
            return Path(self._scratch.name) / name
        return self.directory / name

    def _meta_path(self, kind: str) -> Path:
        return self._path(kind).with_suffix(self._path(kind).suffix + ".json")

    def _expected(self, kind: str) -> cache_entry.Expected:
        """What a valid entry of `kind` holds: this key, and for an ONNX artifact the spec's inputs (int32
        where the int64 -> int32 pass made them so)."""
        inputs = None
        if kind in ONNX_KINDS:
            int32 = kind in INT32_SOURCES
            inputs = tuple((i.name, "int32" if int32 and i.dtype == "int64" else i.dtype, tuple(i.shape))
                           for i in self.spec.inputs)
        return cache_entry.Expected(self.key, kind, inputs)

    def _cached(self, kind: str) -> dict[str, Any] | None:
        """The sidecar of a valid cached artifact. A damaged entry is moved aside (or, in a read-only
        cache, left alone) with a note, and counts as absent: it is rebuilt."""
        if not self.config.use_cache or kind in self._elsewhere:
            return None
        path, meta_path = self._path(kind), self._meta_path(kind)
        try:
            return cache_entry.read(path, meta_path, self._expected(kind))
        except cache_entry.Damaged as damage:
            problem = str(damage)
        if not self._writable():
            self.progress.note(f"cache entry {path.name} {problem}; rebuilding it")
            return None
        try:
            moved = [cache_entry.move_aside(p) for p in (path, meta_path)]
        except OSError as exc:
            self.progress.note(f"cache entry {path.name} {problem}; it cannot be moved aside ({first_line(exc)})")
            self._read_only = self._read_only or f"{path.name}: {first_line(exc)}"
            return None
        aside = ", ".join(p.name for p in moved if p is not None)
        self.progress.note(f"cache entry {path.name} {problem}; moved aside ({aside}) and rebuilding it")
        return None

    def _save_meta(self, kind: str, artifact: Artifact, step: Step, extra: Mapping[str, Any] | None = None) -> None:
        if self.config.use_cache:
            signature = None
            if kind in ONNX_KINDS:
                try:
                    signature = cache_entry.onnx_signature(self._path(kind))
                except cache_entry.Damaged:  # then no later run trusts the entry
                    signature = None
            atomic_write_json(self._meta_path(kind), {
                "key": self.key, "kind": kind, "sha256": artifact.sha256, "step": step.to_dict(),
                "details": artifact.details, "signature": signature, **(extra or {}),
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


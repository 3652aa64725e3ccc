"""The backend interface and its registry.

A backend is a `Runner` subclass in one file: it declares which artifact it consumes for each
precision, the devices it runs on, and `available()`; instances follow a small template,
`activate()` -> `infer()`... -> `deactivate()`, around `*_impl` hooks. The timing harness (not the
backend) times `to_device` + `infer_impl` + `synchronize` + `to_host`, so every backend is
measured the same way. A backend's own settings are a frozen `Options` dataclass (backends/options.py).
Third-party backends register through the `deployval.backends` entry-point group.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import UsageError, first_line

# The artifact vocabulary lives in export/artifacts.py; backends and plugin authors may keep naming it
# from here (`from deployval.backends.base import ONNX, Artifact, Runner`).
from ..export.artifacts import (  # noqa: F401
    ARTIFACT_KINDS,
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
from .options import NoOptions, typed_options

if TYPE_CHECKING:
    import numpy as np

ENTRY_POINT_GROUP = "deployval.backends"


class Runner(ABC):
    """One backend, at one precision, on one device."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    artifacts: ClassVar[Mapping[str, str]] = {}  # precision -> artifact kind consumed
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    # Runtimes that build native engines run in their own process unless told otherwise, so that a
    # crash in them cannot take the other results down.
    isolate_by_default: ClassVar[bool] = False
    # Activation builds an engine whose kernels are chosen at build time (by timing), so two builds of
    # one model may compute differently: `--repeat` builds it once more without the engine cache.
    builds_engine: ClassVar[bool] = False
    # The backend's own settings: a frozen dataclass with typed, defaulted fields (help in
    # `field(metadata={"help": ...})`), filled from `--backend-option NAME.FIELD=VALUE`.
    Options: ClassVar[type] = NoOptions

    def __init__(self, artifact: Artifact, precision: str = "fp32", device: str = "cpu",
                 options: Mapping[str, Any] | None = None) -> None:
        self.artifact = artifact
        self.precision = precision
        self.device = device
        self.options: Mapping[str, Any] = options or {}  # run-level context (input_specs, engine_cache_dir...)
        self.backend_options: Any = self.typed_options(self.options)  # an instance of type(self).Options
        self.is_active = False
        self.input_names: tuple[str, ...] = artifact.input_names
        self.output_names: tuple[str, ...] = artifact.output_names
        # What the report should know about this run (provider used, engine route, cache hit...).
        self.details: dict[str, Any] = {}
        # What the row must say that its numbers do not (found at activation, e.g. a runtime's default
        # precision that differs from the row's): the row's warnings.
        self.warnings: list[str] = []

    # ------------------------------------------------------------------ class-level description
    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        """Whether this backend can run here, and why not. Must never raise."""
        return True, ""

    @classmethod
    def supports(cls, precision: str, device: str) -> tuple[bool, str]:
        """Whether the combination exists at all (a design limit, not a missing install)."""
        if device not in cls.devices:
            return False, f"{cls.name} does not run on {device}"
        if precision not in cls.artifacts:
            return False, f"{cls.name} has no {precision} mode (it offers {', '.join(cls.artifacts)})"
        return True, ""

    @classmethod
    def typed_options(cls, options: Mapping[str, Any]) -> Any:
        """`cls.Options` from a run's options mapping (dedicated flags' keys, then `options[cls.name]`)."""
        return typed_options(cls, options)

    @classmethod
    def artifact_for(cls, precision: str, options: Mapping[str, Any]) -> str:
        """The artifact kind to build for `precision` (options may choose another route)."""
        return cls.artifacts[precision]

    @classmethod
    def caveats(cls, precision: str, device: str) -> list[str]:
        """Warnings that belong in every report of this combination (e.g. unfaithful arithmetic)."""
        return []

    @classmethod
    def faithful(cls, precision: str, device: str) -> bool:
        """False when results do not reflect the precision's real arithmetic."""
        return True

    # ------------------------------------------------------------------ public template
    def activate(self) -> Runner:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self.deactivate_impl()
            finally:
                self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out; not timed (the harness times the hooks itself)."""
        if not self.is_active:
            raise RuntimeError(f"{self.name} runner used before activate()")
        outputs = self.infer_impl(self.to_device(feeds))
        self.synchronize()
        return self.to_host(outputs)

    # ------------------------------------------------------------------ hooks
    def activate_impl(self) -> None:
        """Load the artifact into the runtime (session, engine, module on device)."""

    def deactivate_impl(self) -> None:
        """Release what activate_impl acquired."""

    def input_dtypes(self) -> Mapping[str, str] | None:
        """dtype each input must have for this runtime (e.g. int32 after the int64 pass);
        None keeps the inputs as generated. The harness casts with a range check, untimed."""
        return None

    def to_device(self, feeds: Mapping[str, np.ndarray]) -> Any:
        return feeds

    @abstractmethod
    def infer_impl(self, feeds: Any) -> Any:
        """Run the model once on prepared feeds; may return device-resident outputs."""

    def synchronize(self) -> None:
        """Wait for the device to finish (asynchronous runtimes)."""

    def to_host(self, outputs: Any) -> dict[str, np.ndarray]:
        return outputs

    def device_time_ms(self) -> float | None:
        """Accelerator time of the last run (CUDA events) where the backend measures it."""
        return None


# ---------------------------------------------------------------------------- registry

BUILTIN_BACKENDS: dict[str, str] = {
    "torch": "deployval.backends.torch_eager:TorchEagerRunner",
    "torchscript": "deployval.backends.torchscript:TorchScriptRunner",
    "ort": "deployval.backends.onnxruntime:OnnxRuntimeRunner",
    "trt": "deployval.backends.tensorrt:TensorRTRunner",
    "ort-trt": "deployval.backends.onnxruntime_tensorrt:OnnxRuntimeTensorRTRunner",
    "openvino": "deployval.backends.openvino:OpenVinoRunner",
    "compile": "deployval.backends.torch_compile:TorchCompileRunner",
    "export": "deployval.backends.torch_export:TorchExportRunner",
    "triton": "deployval.backends.triton:TritonRunner",
}

_registered: dict[str, type[Runner]] = {}


def register_backend(cls: type[Runner]) -> type[Runner]:
    """Register a backend class under `cls.name` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Runner)):
        raise TypeError(f"{cls!r} is not a deployval Runner subclass")
    _registered[cls.name] = cls
    return cls


@dataclass(frozen=True)
class BackendEntry:
    """A known backend name and where it comes from; `load()` imports it."""

    name: str
    target: str | type[Runner]
    origin: str  # "built-in", "entry point <dist>", "registered"

    def load(self) -> type[Runner]:
        if isinstance(self.target, type):
            return self.target
        module_name, _, attr = self.target.partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(cls, type) and issubclass(cls, Runner)):
            raise TypeError(f"{self.target} is not a deployval Runner subclass")
        return cls


def backend_entries() -> dict[str, BackendEntry]:
    """Every backend name: built-ins, entry points, then ones registered in this process."""
    entries = {name: BackendEntry(name, target, "built-in") for name, target in BUILTIN_BACKENDS.items()}
    from importlib.metadata import entry_points

    try:
        points = entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken installed distribution must not break deployval
        points = ()
    for point in points:
        dist = getattr(getattr(point, "dist", None), "name", None) or "?"
        if point.name not in entries:
            entries[point.name] = BackendEntry(point.name, point.value, f"entry point ({dist})")
    for name, cls in _registered.items():
        entries[name] = BackendEntry(name, cls, "registered")
    return entries


def get_backend(name: str) -> type[Runner]:
    """The backend class for a name; unknown names are a usage error listing the known ones."""
    entries = backend_entries()
    if name not in entries:
        raise UsageError(f"unknown backend '{name}' (known: {', '.join(entries)}; see `deployval backends`)")
    try:
        return entries[name].load()
    except Exception as exc:
        raise UsageError(f"backend '{name}' ({entries[name].origin}) failed to load: {first_line(exc)}") from exc


def check_available(cls: type[Runner], device: str) -> tuple[bool, str]:
    """`cls.available(device)`, made safe against backends that break the never-raise rule."""
    try:
        ok, reason = cls.available(device)
        return bool(ok), str(reason or "")
    except Exception as exc:
        return False, f"availability check failed: {first_line(exc)}"

"""The release manifest: every model a release ships, with its checkpoint, inputs, backends,
precisions and tolerances, in one TOML file (`deployval.toml` by default).

    [defaults]                  # optional; any key of a [[model]] entry
    device = "cpu"

    [[model]]
    id = "organs-ct"            # optional, unique; default: the model
    model = "fine_organs"       # a registered name, pkg.module:factory, or a .onnx/.pt file
    checkpoint = "weights/model_final_checkpoint.model"
    inputs = "data/case_0001.npz"
    expected = "golden/organs-ct.npz"   # optional: golden outputs (compare --save-outputs) every row is judged against
    input_shapes = { input = [1, 1, 96, 160, 160] }
    gate = ["torchscript:fp32", "ort:fp32", "trt:fp16"]   # or backends = [...] with precisions = [...]
    [model.tolerances]
    "ort:fp16" = { rel_l2 = 0.02, argmax_agreement = 0.99 }

Paths are relative to the manifest. Without `gate` or `backends`, an entry runs its model's own gate.
The whole manifest is checked before anything runs, so a typo fails in a second, not after an hour.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import UsageError
from .spec import PRECISIONS, InputShapeArg, ModelSpec, Tolerance, ToleranceTable

ENTRY_KEYS = {"id", "model", "checkpoint", "inputs", "expected", "input_shapes", "input_ranges", "gate", "backends",
              "precisions", "device", "tolerances", "seed", "iterations", "time_budget"}
DEFAULT_MANIFEST = "deployval.toml"


@dataclass(frozen=True)
class ManifestEntry:
    id: str
    model: str
    checkpoint: str | None = None
    inputs: str | None = None
    expected: str | None = None  # golden outputs (.npz) every row is judged against
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    input_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    gate: tuple[str, ...] | None = None
    backends: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    device: str = "cpu"
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    seed: int = 0
    iterations: int | None = None
    time_budget: float | None = None

    def spec(self) -> ModelSpec:
        """The model spec with this entry's checkpoint, shapes, ranges and tolerances applied."""
        from .registry import resolve_model

        spec = resolve_model(
            self.model,
            input_shapes=[InputShapeArg(name, shape) for name, shape in self.input_shapes.items()],
            input_ranges=[(name, low, high) for name, (low, high) in self.input_ranges.items()],
            checkpoint=self.checkpoint,
        )
        if self.tolerances:
            spec = replace(spec, tolerances=ToleranceTable({**spec.tolerances.entries, **self.tolerances}))
        return spec

    def command_args(self) -> tuple[str, ...]:
        """The `deployval compare` options that reproduce this entry's model and inputs."""
        args: list[str] = []
        for name, shape in self.input_shapes.items():
            args += ["--input-shape", f"{name}={'x'.join(map(str, shape))}"]
        for name, (low, high) in self.input_ranges.items():
            args += ["--input-range", f"{name}={low:g},{high:g}"]
        if self.checkpoint:
            args += ["--checkpoint", self.checkpoint]
        if self.inputs:
            args += ["--inputs", self.inputs]
        elif self.seed:
            args += ["--seed", str(self.seed)]
        if self.expected:
            args += ["--expected", self.expected]
        return tuple(args)

    def checks(self, spec: ModelSpec) -> tuple[str, ...]:
        """backend:precision pairs this entry runs."""
        if self.gate is not None:
            return self.gate
        if self.backends is not None:
            return tuple(f"{b}:{p}" for b in self.backends for p in (self.precisions or ("fp32",)))
        gate = spec.gate_for(self.device)
        if not gate:
            raise UsageError(f"manifest entry '{self.id}': model '{self.model}' has no gate for {self.device}; "
                             "list gate = [...] or backends = [...]")
        return gate


@dataclass(frozen=True)
class Manifest:
    path: Path
    entries: tuple[ManifestEntry, ...]


def _toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"manifest '{path}' does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"manifest '{path}' is not valid TOML: {exc}") from None


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest; every problem is one UsageError naming the entry and the key."""
    path = Path(path)
    data = _toml(path)
    unknown_top = set(data) - {"defaults", "model"}
    if unknown_top:
        raise UsageError(f"manifest '{path}': unknown section(s) {', '.join(sorted(unknown_top))} "
                         "(expected [defaults] and [[model]])")
    defaults = data.get("defaults", {})
    models = data.get("model", [])
    if not isinstance(models, list) or not models:
        raise UsageError(f"manifest '{path}' lists no models (add [[model]] entries)")
    entries = [_entry(path, index, {**defaults, **raw}) for index, raw in enumerate(models, start=1)]
    ids = [e.id for e in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UsageError(f"manifest '{path}': entry id(s) {', '.join(duplicates)} appear twice; give each an id")
    return Manifest(path, tuple(entries))


def _entry(path: Path, index: int, raw: Mapping[str, Any]) -> ManifestEntry:
    where = f"manifest '{path}', model #{index}"
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        known = ", ".join(sorted(ENTRY_KEYS))
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {known})")
    if not isinstance(raw.get("model"), str) or not raw["model"]:
        raise UsageError(f"{where}: 'model' is missing (a registered name, pkg.module:factory or a file)")
    base = path.parent

    def local(value: Any, key: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise UsageError(f"{where}: '{key}' must be a path string")
        resolved = (base / value) if not Path(value).is_absolute() else Path(value)
        if not resolved.exists():
            raise UsageError(f"{where}: {key} '{value}' does not exist (paths are relative to the manifest)")
        return str(resolved)

    model = raw["model"]
    if model.endswith((".onnx", ".pt", ".pth", ".ts")) and not Path(model).is_absolute():
        model = local(model, "model") or model
    entry = ManifestEntry(
        id=str(raw.get("id") or raw["model"]),
        model=model,
        checkpoint=local(raw.get("checkpoint"), "checkpoint"),
        inputs=local(raw.get("inputs"), "inputs"),
        expected=local(raw.get("expected"), "expected"),
        input_shapes={k: _shape(where, k, v) for k, v in _table(where, raw, "input_shapes").items()},
        input_ranges={k: _range(where, k, v) for k, v in _table(where, raw, "input_ranges").items()},
        gate=_strings(where, raw, "gate"),
        backends=_strings(where, raw, "backends"),
        precisions=_strings(where, raw, "precisions"),
        device=str(raw.get("device", "cpu")),
        tolerances={k: _tolerance(where, k, v) for k, v in _table(where, raw, "tolerances").items()},
        seed=int(raw.get("seed", 0)),
        iterations=raw.get("iterations"),
        time_budget=raw.get("time_budget"),
    )
    for precision in entry.precisions or ():
        if precision not in PRECISIONS:
            raise UsageError(f"{where}: unknown precision '{precision}' ({', '.join(PRECISIONS)})")
    if entry.gate is not None and entry.backends is not None:
        raise UsageError(f"{where}: give either 'gate' or 'backends' (with 'precisions'), not both")
    return entry


def _table(where: str, raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise UsageError(f"{where}: '{key}' must be a table")
    return value


def _strings(where: str, raw: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        raise UsageError(f"{where}: '{key}' must be a non-empty list of strings")
    return tuple(value)


def _shape(where: str, name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(d, int) and d > 0 for d in value):
        raise UsageError(f"{where}: input_shapes.{name} must be a list of positive integers")
    return tuple(value)


def _range(where: str, name: str, value: Any) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2 and value[1] > value[0]):
        raise UsageError(f"{where}: input_ranges.{name} must be [low, high] with high > low")
    return float(value[0]), float(value[1])


def _tolerance(where: str, pattern: str, value: Any) -> Tolerance:
    known = {f.name for f in fields(Tolerance)}
    if not isinstance(value, Mapping) or set(value) - known:
        raise UsageError(f"{where}: tolerances.'{pattern}' must be a table of {', '.join(sorted(known))}")
    return Tolerance(**{k: float(v) for k, v in value.items()})


def parse_shard(text: str) -> tuple[int, int]:
    """'2/3' -> (2, 3): the second of three shards."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise UsageError(f"bad --shard '{text}': expected I/N, e.g. 1/4") from None
    if not 1 <= index <= count:
        raise UsageError(f"bad --shard '{text}': I must be between 1 and N")
    return index, count


def shard(entries: Sequence[ManifestEntry], index: int, count: int) -> list[ManifestEntry]:
    """Entries of shard `index` of `count`: round-robin in manifest order, so every shard is stable
    as long as the manifest is, and heavy entries listed together spread across shards."""
    return [entry for position, entry in enumerate(entries) if position % count == index - 1]

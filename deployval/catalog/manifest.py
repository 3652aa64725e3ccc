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

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..model.arguments import InputShapeArg
from ..model.spec import DEVICES, JUDGE_MODES, PRECISIONS, ModelSpec, Tolerance, ToleranceTable

ENTRY_KEYS = {"id", "model", "checkpoint", "inputs", "expected", "input_shapes", "input_ranges", "gate", "backends",
              "precisions", "device", "tolerances", "seed", "iterations", "time_budget", "task", "judge", "slices",
              "backend_options"}
DEFAULT_MANIFEST = "deployval.toml"
FRACTIONS = ("cosine", "argmax_agreement", "dice_drop", "topk_drop", "mismatch")  # bounds on shares, at most 1


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
    task: str | None = None  # a task check (task_checks.py): pkg.module:function or a built-in
    judge: str | None = None  # norms, task or both
    slices: tuple[str, ...] = ()  # outputs judged slice by slice (slices.py)
    # A backend's own settings, as --backend-option gives them: { triton = { url = "...", model = "..." } }
    backend_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def judging(self) -> dict[str, Any]:
        """The RunConfig settings of this entry's task check, judge and slices."""
        from ..judge.slices import SliceSpec
        from ..judge.task_checks import TaskCheck

        return {"task_check": TaskCheck(self.task) if self.task else None, "judge": self.judge,
                "slices": tuple(SliceSpec.parse(s) for s in self.slices)}

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
    if path.is_dir():
        raise UsageError(f"manifest '{path}' is a directory; give the .toml file")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"manifest '{path}' does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read manifest '{path}': {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"manifest '{path}' is not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"manifest '{path}' is not valid TOML: {exc}") from None
    except RecursionError:
        raise UsageError(f"manifest '{path}' is nested too deeply to read") from None


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest; every problem is one UsageError naming the entry, the key, what the
    key takes and the value it was given."""
    path = Path(path)
    data = _toml(path)
    unknown_top = set(data) - {"defaults", "model"}
    if unknown_top:
        raise UsageError(f"manifest '{path}': unknown section(s) {', '.join(sorted(unknown_top))} "
                         "(expected [defaults] and [[model]])")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise UsageError(f"manifest '{path}': 'defaults' must be a table ([defaults]), not {_shown(defaults)}")
    models = data.get("model", [])
    if not isinstance(models, list) or any(not isinstance(m, Mapping) for m in models):
        raise UsageError(f"manifest '{path}': models are [[model]] entries (an array of tables), not {_shown(models)}")
    if not models:
        raise UsageError(f"manifest '{path}' lists no models (add [[model]] entries)")
    entries = [_entry(path, index, defaults, raw) for index, raw in enumerate(models, start=1)]
    ids = [e.id for e in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UsageError(f"manifest '{path}': entry id(s) {', '.join(duplicates)} appear twice; give each an id")
    return Manifest(path, tuple(entries))


def _entry(path: Path, index: int, defaults: Mapping[str, Any], own: Mapping[str, Any]) -> ManifestEntry:
    raw = {**defaults, **own}
    name = next((raw[k] for k in ("id", "model") if isinstance(raw.get(k), str) and raw[k]), None)
    where = f"manifest '{path}', model #{index}" + (f" ({name})" if name else "")
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        known = ", ".join(sorted(ENTRY_KEYS))
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {known})")
    if not isinstance(raw.get("model"), str) or not raw["model"]:
        if "model" in raw:
            raise _wrong(where, "model", "a registered name, pkg.module:factory or a file", raw["model"])
        raise UsageError(f"{where}: 'model' is missing (a registered name, pkg.module:factory or a file)")
    check = _Checker(where, defaults, own)
    base = path.parent

    def local(key: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise check.wrong(key, "a path (a string)", value)
        resolved = (base / value) if not Path(value).is_absolute() else Path(value)
        if not resolved.exists():
            raise UsageError(f"{where}: {key} '{value}' does not exist (paths are relative to the manifest)")
        return str(resolved)

    model = raw["model"]
    if model.endswith((".onnx", ".pt", ".pth", ".ts")) and not Path(model).is_absolute():
        model = local("model") or model
    backends = check.backends()
    known = f"backends {', '.join(backends)}; precisions {', '.join(PRECISIONS)}"
    entry = ManifestEntry(
        id=check.string("id") or raw["model"],
        model=model,
        checkpoint=local("checkpoint"),
        inputs=local("inputs"),
        expected=local("expected"),
        input_shapes={k: check.shape(k, v) for k, v in check.table("input_shapes").items()},
        input_ranges={k: check.range(k, v) for k, v in check.table("input_ranges").items()},
        gate=check.strings("gate", "backend:precision", known, lambda v: _gate_item(v, backends)),
        backends=check.strings("backends", "backend", ", ".join(backends), lambda v: v in backends),
        precisions=check.strings("precisions", "precision", ", ".join(PRECISIONS), lambda v: v in PRECISIONS),
        device=check.choice("device", DEVICES) or "cpu",
        tolerances={k: check.tolerance(k, v, backends) for k, v in check.table("tolerances").items()},
        seed=check.integer("seed", "an integer >= 0 (the random inputs' seed)") or 0,
        iterations=check.integer("iterations", "an integer >= 0 (timed runs)"),
        time_budget=check.seconds("time_budget"),
        task=check.task("task"),
        judge=check.choice("judge", JUDGE_MODES),
        slices=check.strings("slices", "output slice", "NAME:AXIS or NAME:AXIS=GROUPS", _slice_item) or (),
        backend_options=check.backend_options("backend_options", backends),
    )
    if entry.gate is not None and entry.backends is not None:
        raise UsageError(f"{where}: give either 'gate' or 'backends' (with 'precisions'), not both")
    return entry


def _slice_item(text: str) -> bool:
    from ..judge.slices import SliceSpec

    try:
        SliceSpec.parse(text)
    except UsageError:
        return False
    return True


def _gate_item(text: str, backends: Sequence[str]) -> bool:
    backend, sep, precision = text.partition(":")
    return bool(sep) and backend in backends and precision in PRECISIONS


def _kind(value: Any) -> str:
    """What TOML type a value is, as its error line names it."""
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                       (list, "a list"), (Mapping, "a table")):
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"  # TOML dates and times


def _shown(value: Any) -> str:
    text = _toml_text(value)
    return f"{text[:80]}{'...' if len(text) > 80 else ''} ({_kind(value)})"


def _toml_text(value: Any) -> str:
    """A value as it would be written in TOML (true, not True; a table as { key = value })."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_text(v)}" for k, v in value.items()) + " }"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _wrong(where: str, key: str, expected: str, value: Any) -> UsageError:
    return UsageError(f"{where}: {key if '.' in key else repr(key)} must be {expected}, not {_shown(value)}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


@dataclass(frozen=True)
class _Checker:
    """Each key's type and range, checked for one entry; an error names the key (and [defaults] when the
    value came from there), what it takes and what it was given."""

    where: str
    defaults: Mapping[str, Any]
    own: Mapping[str, Any]

    def value(self, key: str) -> Any:
        return self.own.get(key, self.defaults.get(key))

    def wrong(self, key: str, expected: str, value: Any) -> UsageError:
        origin = ", from [defaults]" if key not in self.own and key in self.defaults else ""
        return _wrong(self.where + origin, key, expected, value)

    def string(self, key: str) -> str | None:
        value = self.value(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise self.wrong(key, "a non-empty string", value)
        return value

    def task(self, key: str) -> str | None:
        """A task check, resolved now (its module imported, a built-in's options checked)."""
        text = self.string(key)
        if text is not None:
            from ..judge.task_checks import TaskCheck

            try:
                TaskCheck.parse(text)
            except UsageError as exc:
                raise UsageError(f"{self.where}: {exc.one_line()}") from None
        return text

    def choice(self, key: str, choices: Sequence[str]) -> str | None:
        value = self.value(key)
        if value is not None and value not in choices:
            raise self.wrong(key, " or ".join(f"'{c}'" for c in choices), value)
        return value

    def integer(self, key: str, expected: str) -> int | None:
        value = self.value(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise self.wrong(key, expected, value)
        return value

    def seconds(self, key: str) -> float | None:
        value = self.value(key)
        if value is None:
            return None
        if not _number(value) or not 0 < value < math.inf:
            raise self.wrong(key, "a positive number of seconds", value)
        return float(value)

    def table(self, key: str) -> Mapping[str, Any]:
        value = self.value(key)
        if value is not None and not isinstance(value, Mapping):
            raise self.wrong(key, "a table", value)
        return value or {}

    def strings(self, key: str, item: str, choices: str, valid: Callable[[str], bool]) -> tuple[str, ...] | None:
        """A non-empty list of strings, each one `valid` (else named as an unknown `item`, with the `choices`)."""
        value = self.value(key)
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.wrong(key, "a non-empty list of strings", value)
        for text in value:
            if not valid(text):
                raise UsageError(f"{self.where}: unknown {item} '{text}' in '{key}' ({choices})")
        return tuple(value)

    def backends(self) -> tuple[str, ...]:
        from ..backends.base import backend_entries

        return tuple(backend_entries())

    def backend_options(self, key: str, backends: Sequence[str]) -> dict[str, dict[str, Any]]:
        """{backend: {field: value}}, each value read as `--backend-option backend.field=value` reads it."""
        from ..backends.base import get_backend
        from ..backends.options import parse_backend_options
        from ..model.spec import format_value

        given = []
        for backend, settings in self.table(key).items():
            if backend not in backends:
                raise UsageError(f"{self.where}: unknown backend '{backend}' in '{key}' ({', '.join(backends)})")
            if not isinstance(settings, Mapping) or not settings:
                raise self.wrong(f"{key}.{backend}", "a table of the backend's options", settings)
            given += [f"{backend}.{name}={format_value(value)}" for name, value in settings.items()]
        try:
            return parse_backend_options(given, get_backend)
        except UsageError as exc:
            raise UsageError(f"{self.where}: {key}: {exc}") from None

    def shape(self, name: str, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list) or not value or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value):
            raise self.wrong(f"input_shapes.{name}", "a list of positive integers", value)
        return tuple(value)

    def range(self, name: str, value: Any) -> tuple[float, float]:
        if not (isinstance(value, list) and len(value) == 2 and all(_number(v) and math.isfinite(v) for v in value)
                and value[1] > value[0]):
            raise self.wrong(f"input_ranges.{name}", "[low, high] (two finite numbers, high > low)", value)
        return float(value[0]), float(value[1])

    def tolerance(self, pattern: str, value: Any, backends: Sequence[str]) -> Tolerance:
        """A pattern `backend:precision:output` ('*' for any) and its bounds, each a number >= 0: a
        misspelt pattern would match no row, and its bound would silently not apply."""
        known = {f.name for f in fields(Tolerance)}
        parts = [*pattern.split(":"), "*"]
        if len(parts) > 4 or parts[0] not in (*backends, "*") or parts[1] not in (*PRECISIONS, "*"):
            raise UsageError(f'{self.where}: tolerances."{pattern}" is not a backend:precision[:output] pattern '
                             f"(backends {', '.join(backends)}; precisions {', '.join(PRECISIONS)}; '*' for any)")
        if not isinstance(value, Mapping):
            raise self.wrong(f'tolerances."{pattern}"', f"a table of bounds ({', '.join(sorted(known))})", value)
        unknown = sorted(set(value) - known)
        if unknown:
            raise UsageError(f'{self.where}: tolerances."{pattern}" has unknown bound(s) {", ".join(unknown)} '
                             f"(known: {', '.join(sorted(known))})")
        for bound, number in value.items():
            if not _number(number) or number < 0:
                raise self.wrong(f'tolerances."{pattern}".{bound}', "a number >= 0", number)
            if bound in FRACTIONS and number > 1:
                raise self.wrong(f'tolerances."{pattern}".{bound}', "a fraction between 0 and 1", number)
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

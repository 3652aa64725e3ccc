"""Typed backend options: each Runner declares a frozen `Options` dataclass, and a generic
`--backend-option NAME.FIELD=VALUE` reaches it, so a third-party backend can take options too.

Values live in `RunConfig.backend_options` under the backend's name (`{"trt": {"workspace_mb": 8192}}`),
and nowhere else. A field that a dedicated flag sets too names it in `metadata["flag"]`: the flag writes
that field of every backend that declares it (`--trt-workspace` sets trt's and ort-trt's workspace_mb).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class NoOptions:
    """The options of a backend that takes none."""


@dataclass(frozen=True)
class OptionInfo:
    """One typed option of a backend, for `deployval backends` and error messages."""

    name: str
    type: str
    default: Any
    help: str
    flag: str | None = None  # the dedicated flag that sets it too, if any


def _field_types(options_cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(options_cls)
    except Exception:  # an annotation that does not resolve: fall back to what the dataclass holds
        return {f.name: f.type for f in dataclasses.fields(options_cls)}


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type a value converts to, whether None is allowed) for `int`, `int | None`, `Optional[int]`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), True
    return annotation, False


def _type_name(annotation: Any) -> str:
    base, optional = _base_type(annotation)
    name = getattr(base, "__name__", str(base))
    return f"{name} | None" if optional else name


def option_infos(runner: type) -> list[OptionInfo]:
    """The typed options a backend declares (none for a backend without `Options`)."""
    options_cls = getattr(runner, "Options", NoOptions)
    if not dataclasses.is_dataclass(options_cls):
        return []
    hints = _field_types(options_cls)
    infos = []
    for item in dataclasses.fields(options_cls):
        default = item.default if item.default is not dataclasses.MISSING else None
        if item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        infos.append(OptionInfo(item.name, _type_name(hints.get(item.name, str)), default,
                                str(item.metadata.get("help", "")), item.metadata.get("flag")))
    return infos


def convert(backend: str, name: str, annotation: Any, text: str) -> Any:
    """A command-line string as the field's type (int, float, bool true/false, str); bad text is a usage error."""
    base, optional = _base_type(annotation)
    if optional and text.lower() == "none":
        return None
    what = f"--backend-option {backend}.{name}"
    if base is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise UsageError(f"{what} takes true or false, not '{text}'")
    if base in (int, float):
        try:
            return base(text)
        except ValueError:
            raise UsageError(f"{what} takes {'an integer' if base is int else 'a number'}, not '{text}'") from None
    if base is str:
        return text
    raise UsageError(f"{what}: the backend declares type {_type_name(annotation)}, which the command line "
                     "cannot give (int, float, bool or str)")


def typed_options(runner: type, options: Mapping[str, Any]) -> Any:
    """`runner.Options` filled from the values under the backend's name in a run's options. Invalid values
    are a usage error."""
    options_cls = getattr(runner, "Options", NoOptions)
    if not (isinstance(options_cls, type) and dataclasses.is_dataclass(options_cls)):
        raise UsageError(f"backend '{getattr(runner, 'name', runner)}' declares Options that is not a dataclass")
    values: dict[str, Any] = {}
    own = options.get(getattr(runner, "name", ""))
    if isinstance(own, Mapping):
        known = {f.name for f in dataclasses.fields(options_cls)}
        for name, value in own.items():
            if name not in known:
                raise UsageError(_unknown_field(runner, name))
            values[name] = value
    try:
        return options_cls(**values)
    except TypeError as exc:
        raise UsageError(f"bad options for backend '{runner.name}': {exc}") from exc


def _unknown_field(runner: type, name: str) -> str:
    known = ", ".join(info.name for info in option_infos(runner)) or "none"
    return f"backend '{runner.name}' has no option '{name}' (its options: {known})"


def parse_backend_options(values: list[str] | None,
                          get_backend: Callable[[str], type]) -> dict[str, dict[str, Any]]:
    """`--backend-option NAME.FIELD=VALUE` (repeatable) as `{backend: {field: value}}`, each value converted
    to its field's type and each backend's options checked by building them. `get_backend` is base's
    (passed in: base imports this module)."""
    parsed: dict[str, dict[str, Any]] = {}
    for text in values or []:
        target, sep, value = text.partition("=")
        backend, dot, name = target.strip().partition(".")
        if not sep or not dot or not backend or not name:
            raise UsageError(f"--backend-option takes NAME.FIELD=VALUE (e.g. trt.workspace_mb=4096), not '{text}'")
        runner = get_backend(backend)
        hints = _field_types(getattr(runner, "Options", NoOptions))
        if name not in {f.name for f in dataclasses.fields(getattr(runner, "Options", NoOptions))}:
            raise UsageError(_unknown_field(runner, name))
        parsed.setdefault(backend, {})[name] = convert(backend, name, hints.get(name, str), value.strip())
    for backend, settings in parsed.items():
        typed_options(get_backend(backend), {backend: settings})  # validation (__post_init__) fails here
    return parsed


def with_flags(flags: Mapping[str, Any], parsed: Mapping[str, Mapping[str, Any]],
               runners: Sequence[type]) -> dict[str, dict[str, Any]]:
    """`parsed` (`--backend-option`) with the dedicated flags that were given (`{"--trt-workspace": 512}`)
    written into every field that names the flag; a flag and `--backend-option` setting one field is a
    usage error, so neither silently wins."""
    merged = {backend: dict(settings) for backend, settings in parsed.items()}
    for runner in runners:
        for item in dataclasses.fields(getattr(runner, "Options", NoOptions)):
            flag = item.metadata.get("flag")
            if flag not in flags:
                continue
            own = merged.setdefault(runner.name, {})
            if item.name in own:
                raise UsageError(f"{flag} and --backend-option {runner.name}.{item.name} both set the same "
                                 "option; give one")
            own[item.name] = flags[flag]
    return merged

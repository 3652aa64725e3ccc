"""How a command takes option groups. `@grouped` reads the command's signature: a parameter annotated
with a `Group` subclass stands for the group's fields (each an ordinary typer parameter, in the
group's order, at that place), the others stay as they are. Typer sees the flattened signature
(`__signature__`); the body is called with one group object per group parameter.

    @grouped
    def compare_command(*, src: ModelInputs, backends: BackendsOpt = "...", tol: Tolerances) -> None:
        ... src.seed, tol.atol ...

The body's parameters are keyword-only (`*`): a group parameter has no default, wherever it stands.
`Annotated[ModelInputs, Omit("submodule")]`: the command does not offer that field; it keeps its
default and sets nothing (so the spec's run defaults stay where the command never set them).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, get_origin, get_type_hints

from typer.models import ParameterInfo


@dataclasses.dataclass(frozen=True)
class Group:
    """Options declared together (fields annotated with typer metadata) that know what they mean
    to the run: `settings()` are RunConfig keyword arguments."""

    omitted: frozenset[str] = dataclasses.field(default=frozenset(), kw_only=True, repr=False)
    panel: ClassVar[str] = ""  # the help section its options are listed under (helptext.py)

    def offers(self, name: str) -> bool:
        return name not in self.omitted

    def settings(self) -> dict[str, Any]:
        return {}

    @classmethod
    def parameters(cls) -> tuple[inspect.Parameter, ...]:
        """The group's command-line parameters, in declaration order."""
        return _parameters(cls)


@functools.cache
def _parameters(cls: type[Group]) -> tuple[inspect.Parameter, ...]:
    hints = get_type_hints(cls, include_extras=True)  # once per class: this is most of `deployval --help`'s cost
    params = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if get_origin(hint) is Annotated and any(isinstance(m, ParameterInfo) for m in hint.__metadata__):
            for info in hint.__metadata__:
                if isinstance(info, ParameterInfo) and cls.panel and not info.rich_help_panel:
                    info.rich_help_panel = cls.panel
            default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint))
    return tuple(params)


class Omit:
    """`Annotated[SomeGroup, Omit("field", ...)]`: the command takes the group without these fields."""

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)


def group_of(hint: Any) -> tuple[type[Group] | None, frozenset[str]]:
    """The group class a parameter's annotation names (and the fields it omits), or None."""
    base, omitted = hint, frozenset()
    if get_origin(hint) is Annotated:
        base = hint.__origin__
        omitted = frozenset().union(*(m.names for m in hint.__metadata__ if isinstance(m, Omit)))
    if isinstance(base, type) and issubclass(base, Group):
        return base, omitted
    return None, omitted


def run_settings(*groups: Group, **extra: Any) -> dict[str, Any]:
    """RunConfig keyword arguments from the groups (their backend options merged) and `extra`."""
    settings: dict[str, Any] = {}
    for group in groups:
        for key, value in group.settings().items():
            if key == "backend_options" and key in settings:
                value = {**settings[key], **value}
            settings[key] = value
    return {**settings, **extra}


def run_config(spec: Any, settings: dict[str, Any]) -> Any:
    """The spec's run defaults, overridden by every setting that is not None."""
    from ..model.spec import RunConfig

    return RunConfig(**{**spec.run_defaults, **{k: v for k, v in settings.items() if v is not None}})


def grouped(body: Callable[..., Any]) -> Callable[..., Any]:
    """The command typer registers: `body`'s signature with each group parameter replaced by the
    group's fields; calling it builds the groups and calls `body` (see the module docstring)."""
    hints = get_type_hints(body, include_extras=True)
    params: list[inspect.Parameter] = []
    plan: list[tuple[str, type[Group] | None, tuple[str, ...], frozenset[str]]] = []
    for name, param in inspect.signature(body).parameters.items():
        cls, omitted = group_of(hints[name])
        if cls is None:
            params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[name]))
            plan.append((name, None, (), frozenset()))
            continue
        offered = [p for p in cls.parameters() if p.name not in omitted]
        unknown = omitted - {p.name for p in cls.parameters()}
        if unknown:
            raise TypeError(f"{body.__name__}: {cls.__name__} has no option {', '.join(sorted(unknown))}")
        params += offered
        plan.append((name, cls, tuple(p.name for p in offered), omitted))
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise TypeError(f"{body.__name__}: two groups declare {sorted({n for n in names if names.count(n) > 1})}")

    def bind(values: dict[str, Any]) -> dict[str, Any]:
        """The body's arguments from the parsed command-line values: one object per group."""
        return {name: values[name] if cls is None else cls(**{f: values[f] for f in fields}, omitted=omitted)
                for name, cls, fields, omitted in plan}

    def command(**values: Any) -> Any:
        return body(**bind(values))

    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(command, attribute, getattr(body, attribute))
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.bind = bind  # type: ignore[attr-defined]
    return command

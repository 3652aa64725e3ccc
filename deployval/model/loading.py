"""Turning a ModelSpec into a live model: factories, checkpoints (weights only), TorchScript files.

Every way this can go wrong because of what the user gave us (a factory that raises or returns
something else, a checkpoint that needs arbitrary code or does not fit) becomes one UsageError
line; nothing here executes code from a checkpoint or a TorchScript file as Python.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import pickle
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .._util import sha256_file, timed_import
from ..errors import UsageError, first_line
from .spec import ModelSpec, SubmoduleFactory


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Python's, numpy's and torch's global RNGs seeded from `seed` inside, as they were outside."""
    import random

    import numpy as np

    torch = timed_import("torch")
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def resolve_callable(target: str | Callable[..., Any], what: str) -> Callable[..., Any]:
    """'pkg.module:function', 'path/to/file.py:function' (or a callable) -> the callable, with one-line
    errors. A module is looked for where Python looks, then in the working directory, as `python -m`
    would: the command-line entry point does not put it on the import path."""
    if callable(target):
        return target
    text = str(target)
    if FILE_TARGET.match(text):
        file_name, _, attr = text.rpartition(":")
        module = import_file(Path(file_name), f"{what} '{target}'")
        module_name = Path(file_name).name
    else:
        module_name, sep, attr = text.partition(":")
        if not sep or not module_name or not attr:
            raise UsageError(f"{what} '{target}' is not of the form pkg.module:function or path/to/file.py:function")
        module = _import_module(module_name, f"{what} '{target}'")
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{what} '{target}': '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{what} '{target}' is not callable")
    return obj


FILE_TARGET = re.compile(r"^(?P<file>.+\.py):(?P<attr>[A-Za-z_][\w.]*)$")


def _import_module(module_name: str, context: str) -> Any:
    try:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            cwd = os.getcwd()
            if not (module_name == missing or module_name.startswith(missing + ".")) or cwd in sys.path:
                raise  # a module the user's module imports, or nowhere else to look
            sys.path.insert(0, cwd)  # retry from the working directory
            importlib.invalidate_caches()
            return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(f"{context}: cannot import '{module_name}' ({first_line(exc)}; looked on the "
                         "import path and in the working directory)") from None
    except Exception as exc:
        raise UsageError(f"{context}: importing '{module_name}' raised {first_line(exc)}") from None


def import_file(path: Path, context: str) -> Any:
    """A Python file as a module named after it (Polygraphy's `--model-script file.py:func`), its folder
    on the import path so that it can import its neighbours and a child process can import it too."""
    path = path.expanduser()
    if not path.is_file():
        raise UsageError(f"{context}: file not found: '{path}'")
    path = path.resolve()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
        importlib.invalidate_caches()
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
        return loaded
    if loaded is not None:  # another module has the name: load this file under one of its own
        name = f"deployval_file_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{context}: cannot load '{path}' as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UsageError(f"{context}: running '{path}' raised {first_line(exc)}") from None
    return module


def load_exported_program(path: str) -> Any:
    """The module of a torch.export.save archive (`ExportedProgram.module()`), what its reference runs."""
    torch = timed_import("torch")
    from .exported import ExportedModule

    try:
        return ExportedModule(torch.export.load(path).module())
    except Exception as exc:
        raise UsageError(f"'{path}' does not load as an ExportedProgram: {first_line(exc)}") from None


def exported_program_inputs(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of each tensor input of a torch.export.save archive."""
    torch = timed_import("torch")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise UsageError(f"'{path}' does not load as an ExportedProgram: {first_line(exc)}") from None
    names = list(program.graph_signature.user_inputs)
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    found = []
    for name in names:
        value = placeholders[name].meta.get("val") if name in placeholders else None
        if value is None or not hasattr(value, "shape"):
            raise UsageError(f"'{path}': input '{name}' is not a tensor of known shape")
        shape = tuple(int(d) for d in value.shape)  # a symbolic (dynamic) size reads as its hint
        found.append((name, shape, str(value.dtype).replace("torch.", "")))
    return found


def build_module(spec: ModelSpec, trust_checkpoint: bool = False, seed: int = 0) -> Any:
    """The model as a torch module in eval mode, with the spec's checkpoint loaded. The factory runs with
    Python's, numpy's and torch's global RNGs seeded from `seed` (and restored afterwards): a factory
    that draws from them (random init, statistics filled with uniform_()) then builds the same module in
    the driver, an isolated child, a Ray actor and a reproduction line, so every row is judged against
    the module the reference ran."""
    torch = timed_import("torch")
    if spec.kind == "torchscript":
        return bind_arguments(load_torchscript(Path(spec.path or "")), spec.arguments)
    if spec.factory is None:
        raise UsageError(f"model '{spec.name}' has no factory")
    if isinstance(spec.factory, SubmoduleFactory):
        factory = functools.partial(build_submodule, spec.factory)
    else:
        factory = resolve_callable(spec.factory, "model factory")
    try:
        with seeded_rngs(seed):
            module = factory()
    except Exception as exc:
        raise UsageError(f"model factory '{_name(spec.factory)}' raised {first_line(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise UsageError(
            f"model factory '{_name(spec.factory)}' returned a {type(module).__name__}, not a torch.nn.Module"
        )
    if spec.checkpoint:
        checkpoint = load_checkpoint_file(Path(spec.checkpoint), trust=trust_checkpoint)
        if spec.checkpoint_loader is not None:
            loader = resolve_callable(spec.checkpoint_loader, "checkpoint loader")
            try:
                loader(module, checkpoint)
            except UsageError:
                raise
            except Exception as exc:
                raise UsageError(f"checkpoint '{spec.checkpoint}' does not load: {first_line(exc)}") from None
        else:
            load_state_dict(module, checkpoint, spec.checkpoint)
    return bind_arguments(module.eval(), spec.arguments)


def build_submodule(factory: SubmoduleFactory) -> Any:
    """The parent model, built with its checkpoint, then the sub-module at the factory's attribute path."""
    module = build_module(factory.parent, trust_checkpoint=factory.trust_checkpoint)
    for part in factory.path.split("."):
        if not hasattr(module, part):
            names = ", ".join(n for n, _ in module.named_children())
            raise UsageError(f"'{factory.parent.name}' has no sub-module '{factory.path}' (its children: {names})")
        module = getattr(module, part)
    return module


def bind_arguments(module: Any, arguments: Mapping[str, Any]) -> Any:
    """The module with its non-tensor forward() arguments bound: every backend, tracer and exporter then
    sees a model of tensors only, and the values are fixed in the artifacts as the user's build would."""
    if not arguments:
        return module
    torch = timed_import("torch")
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):  # TorchScript methods carry a schema instead
        signature = None
    if signature is not None and not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        unknown = [n for n in arguments if n not in signature.parameters]
        if unknown:
            raise UsageError(f"--arg {unknown[0]}: forward() has no such argument "
                             f"(it takes {', '.join(signature.parameters) or 'nothing'})")
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:
        known = [a.name for a in schema.arguments]
        unknown = [n for n in arguments if n not in known]
        if unknown:
            raise UsageError(f"--arg {unknown[0]}: forward() has no such argument (it takes {', '.join(known[1:])})")
    return BoundArguments.make(torch, module, dict(arguments))


def bound_model(module: Any) -> Any | None:
    """The model behind `bind_arguments`, or None for any other module."""
    cls = BoundArguments._class
    return module.bound_model() if cls is not None and isinstance(module, cls) else None


class BoundArguments:
    """Factory of the binding module (defined on first use so that this module imports without torch)."""

    _class: Any = None

    @classmethod
    def make(cls, torch: Any, module: Any, arguments: dict[str, Any]) -> Any:
        if cls._class is None:
            class Bound(torch.nn.Module):
                """forward(*tensors) = model(*tensors, **arguments). A Python module shares the model's
                children, parameters and buffers, so module names (debug, --keep-fp32) stay the model's
                own; a TorchScript module is a child ('model'), which tracing requires."""

                def __init__(self, model: Any, arguments: dict[str, Any]) -> None:
                    super().__init__()
                    if isinstance(model, torch.jit.ScriptModule):
                        self.model = model
                    else:
                        object.__setattr__(self, "model", model)
                        self._modules = model._modules
                        self._parameters = model._parameters
                        self._buffers = model._buffers
                    self.arguments = arguments

                def forward(self, *tensors: Any) -> Any:
                    return self.model(*tensors, **self.arguments)

                def bound_model(self) -> Any:
                    return self.model

            cls._class = Bound
        return cls._class(module, arguments).eval()


def _name(target: Any) -> str:
    if isinstance(target, str):
        return target
    return getattr(target, "label", None) or getattr(target, "__qualname__", repr(target))


def load_checkpoint_file(path: Path, trust: bool = False) -> Any:
    """torch.load with weights_only=True; a pickle that needs code is refused unless trusted."""
    torch = timed_import("torch")
    if not path.exists():
        raise UsageError(f"checkpoint '{path}' does not exist")
    if path.is_dir():
        raise UsageError(f"checkpoint '{path}' is a directory")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        raise UsageError(
            f"checkpoint '{path}' needs arbitrary code to unpickle, which deployval refuses by default "
            f"({first_line(exc).split('.')[0]}); if you trust its origin, pass --trust-checkpoint"
        ) from None
    except Exception as exc:
        raise UsageError(f"cannot read checkpoint '{path}': {first_line(exc)}") from None


def load_state_dict(module: Any, checkpoint: Any, origin: str) -> None:
    """Load a state_dict, or a dict holding one under 'state_dict'/'model'; strict, one-line errors."""
    state = checkpoint
    if isinstance(state, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise UsageError(f"checkpoint '{origin}' holds a {type(state).__name__}, not a state_dict")
    if state and all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module."):]: v for k, v in state.items()}
    describe_state_dict_mismatch(module, state, origin)
    module.load_state_dict(state, strict=True)


def describe_state_dict_mismatch(module: Any, state: Mapping[str, Any], origin: str) -> None:
    """Raise one UsageError line naming missing, unexpected and misshapen keys, if any."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [
        f"{k} {tuple(getattr(state[k], 'shape', ()))} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or misshapen):
        return
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", misshapen)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            parts.append(f"{len(keys)} {label} ({shown})")
    raise UsageError(f"checkpoint '{origin}' does not fit the model: {'; '.join(parts)}")


def load_torchscript(path: Path) -> Any:
    torch = timed_import("torch")
    if not path.exists():
        raise UsageError(f"TorchScript file '{path}' does not exist")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise UsageError(f"'{path}' is not a loadable TorchScript file: {first_line(exc)}") from None


def parameter_count(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def module_digest(spec: ModelSpec, module: Any) -> str:
    """Identity of a model for the artifact cache: for a TorchScript file its bytes; otherwise everything
    that decides what the module computes (its structure, hyperparameters, parameters and all buffers,
    the source of its non-torch code, see deployval/model/digest.py) and the factory's own source file."""
    if spec.kind == "torchscript" and spec.path:
        h = hashlib.sha256()
        h.update(sha256_file(Path(spec.path)).encode())
        h.update(repr(sorted(spec.arguments.items())).encode())
        return h.hexdigest()
    from .digest import module_digest as digest

    header = [repr(spec.factory if isinstance(spec.factory, str) else _name(spec.factory)),
              repr(sorted(spec.arguments.items()))]
    return digest(module, header=header, callables=factory_callables(spec))


def factory_callables(spec: ModelSpec) -> list[Callable[..., Any]]:
    """The callables that build the spec's module (a sub-module's parent's factory included): their
    source files belong to the model's identity (a factory may pick layers or hyperparameters)."""
    factory = spec.factory
    if isinstance(factory, SubmoduleFactory):
        return factory_callables(factory.parent)
    if factory is None:
        return []
    return [resolve_callable(factory, "model factory")]

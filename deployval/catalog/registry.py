"""MODEL argument -> ModelSpec: a zoo name, a `deployval.models` entry point, `pkg.module:factory`,
`path/to/file.py:factory`, a TorchScript file or an ONNX file."""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import UsageError, first_line
from ..model.arguments import InputShapeArg
from ..model.loading import FILE_TARGET
from ..model.spec import InputSpec, ModelSpec, format_shape
from .zoo import ZOO

MODEL_ENTRY_POINT_GROUP = "deployval.models"
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

# Value range for inputs of user models when none is given (--input-range overrides).
DEFAULT_FLOAT_RANGE = (0.0, 1.0)
DEFAULT_INT_RANGE = (0.0, 100.0)


def model_entries() -> dict[str, ModelSpec | str]:
    """Registered model names: the zoo, then models from installed `deployval.models` entry points
    (loaded when used)."""
    entries: dict[str, ModelSpec | str] = dict(ZOO)
    from importlib.metadata import entry_points

    try:
        for point in entry_points(group=MODEL_ENTRY_POINT_GROUP):
            entries.setdefault(point.name, point.value)
    except Exception:
        pass
    return entries


def resolve_model(
    model: str,
    *,
    input_shapes: Sequence[InputShapeArg] = (),
    input_ranges: Sequence[tuple[str, float, float]] = (),
    checkpoint: str | None = None,
    inputs_file: str | Path | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """Find the model and apply command-line input shapes, ranges, checkpoint and forward arguments.

    With `inputs_file`, the file defines the run: its arrays' shapes (and, for models that declare no
    inputs, their names and dtypes) make the input specs; an `--input-shape` that says otherwise is an
    error rather than silently one or the other."""
    entries = model_entries()
    from_file = False
    if inputs_file is not None:
        input_shapes = _shapes_from_file(Path(inputs_file), input_shapes)
        from_file = True
    if model in entries:
        spec = _load_entry(model, entries[model])
        if not from_file:
            # A registered spec declares its inputs: the file's arrays are checked against them (names,
            # rank, dtype, shapes the network takes) when they are loaded, and then define the run.
            spec = apply_shapes(spec, input_shapes)
    elif FILE_TARGET.match(model):
        file_name, _, function = model.rpartition(":")
        script = Path(file_name).expanduser()
        if not script.is_file():
            raise UsageError(f"model '{model}': file not found: '{file_name}'")
        # Absolute, so that an isolated row or a Ray worker started elsewhere finds the same file.
        spec = ModelSpec(name=f"{script.stem}:{function}", kind="module", factory=f"{script.resolve()}:{function}",
                         inputs=inputs_from_args(model, input_shapes))
    elif _FACTORY_RE.match(model) and not Path(model).exists():
        spec = ModelSpec(name=model, kind="module", factory=model, inputs=inputs_from_args(model, input_shapes))
    else:
        path = Path(model)
        if not path.exists():
            raise UsageError(_not_found(model, entries))
        if path.is_dir():
            raise UsageError(f"model '{model}' is a directory; give a .onnx or TorchScript file")
        kind = sniff_model_file(path)
        if kind == "onnx":
            spec = _onnx_spec(path, input_shapes)
        elif kind == "exported":
            spec = _exported_spec(path, input_shapes)
        else:
            spec = ModelSpec(name=path.stem, kind="torchscript", path=str(path),
                             inputs=inputs_from_args(model, input_shapes))
    if input_ranges:
        spec = apply_ranges(spec, input_ranges)
    if checkpoint:
        if spec.kind != "module":
            raise UsageError(f"--checkpoint applies to PyTorch modules, not to a {spec.kind} file")
        spec = replace(spec, checkpoint=checkpoint)
    if arguments:
        if spec.kind == "onnx":
            raise UsageError("--arg passes non-tensor arguments to a PyTorch forward(); an ONNX model takes "
                             "tensors only (give them with --inputs)")
        spec = replace(spec, arguments={**spec.arguments, **arguments})
    return spec


def _not_found(model: str, entries: Mapping[str, Any]) -> str:
    """A path that is not there says so; a name that is not registered says what is, and the closest."""
    if model.lower().endswith((".onnx", ".pt2", *TORCHSCRIPT_SUFFIXES)) or os.sep in model or model.startswith("."):
        return f"file not found: '{model}'"
    import difflib

    close = difflib.get_close_matches(model, list(entries), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return (f"unknown model '{model}': {hint}give a registered name (see `deployval models`), pkg.module:factory, "
            "path/to/file.py:factory, or an existing .onnx or TorchScript file")


def resolve_submodules(parent: ModelSpec, names: Sequence[str], input_shapes: Sequence[InputShapeArg] = (),
                       input_ranges: Sequence[tuple[str, float, float]] = (), *, trust_checkpoint: bool = False,
                       model_arg: str | None = None) -> list[ModelSpec]:
    """The specs of `parent`'s sub-modules named (["all"]: every declared one): a declared sub-module keeps
    its input specs unless `input_shapes` change them; any other attribute path takes them from
    `input_shapes`."""
    wanted = [s.name for s in parent.submodules] if list(names) == ["all"] else list(dict.fromkeys(names))
    if not wanted:
        raise UsageError(f"'{parent.name}' declares no sub-modules; name one with --submodule PATH --input-shape ...")
    specs = []
    for name in wanted:
        declared = any(s.name == name for s in parent.submodules)
        inputs = () if declared or not input_shapes else inputs_from_args(
            f"{model_arg or parent.name} --submodule {name}", input_shapes)
        spec = parent.submodule(name, inputs, trust_checkpoint=trust_checkpoint)
        if declared and input_shapes:
            spec = apply_shapes(spec, input_shapes)
        specs.append(apply_ranges(spec, input_ranges) if input_ranges else spec)
    return specs


def _shapes_from_file(path: Path, given: Sequence[InputShapeArg]) -> list[InputShapeArg]:
    """The inputs file's shapes, checked against any --input-shape given as well."""
    from ..model.inputs import file_input_shapes

    from_file = file_input_shapes(path)
    if len(from_file) == 1 and not from_file[0].name and len(given) == 1 and given[0].name:
        from_file = [replace(from_file[0], name=given[0].name)]  # a .npy named by --input-shape
    by_name = {a.name: a for a in from_file}
    for arg in given:
        found = by_name.get(arg.name) if arg.name else (from_file[0] if len(from_file) == 1 else None)
        if found is None:
            names = ", ".join(a.name or "(unnamed)" for a in from_file)
            raise UsageError(f"--input-shape {arg.name or format_shape(arg.shape)}: '{path}' has no such input "
                             f"({names}); the inputs file defines the run, drop --input-shape")
        if found.shape != arg.shape or (arg.dtype and arg.dtype != found.dtype):
            said = format_shape(arg.shape) + (f":{arg.dtype}" if arg.dtype else "")
            raise UsageError(f"--input-shape {arg.name or found.name}={said} differs from '{path}', whose "
                             f"'{found.name or 'array'}' is {format_shape(found.shape)}:{found.dtype}; the "
                             "inputs file defines the run, drop --input-shape")
    return from_file


def _load_entry(name: str, entry: ModelSpec | str) -> ModelSpec:
    if isinstance(entry, ModelSpec):
        return entry
    from ..model.loading import resolve_callable

    target = resolve_callable(entry, f"model entry point '{name}'")
    spec = target() if not isinstance(target, ModelSpec) else target
    if not isinstance(spec, ModelSpec):
        raise UsageError(f"model entry point '{name}' ({entry}) did not give a deployval ModelSpec")
    return spec


def apply_shapes(spec: ModelSpec, args: Sequence[InputShapeArg]) -> ModelSpec:
    if not args:
        return spec
    shapes = {}
    for arg in args:
        name = _input_name(spec, arg)
        if arg.dtype and arg.dtype != spec.input(name).dtype:
            raise UsageError(f"input '{name}' of '{spec.name}' is {spec.input(name).dtype}, not {arg.dtype}")
        declared = spec.input(name).shape
        if len(arg.shape) != len(declared):  # said now, not by the reference run's RuntimeError
            raise UsageError(f"--input-shape {name}={format_shape(arg.shape)}: '{spec.name}' takes a rank-"
                             f"{len(declared)} input ({format_shape(declared)}), not rank {len(arg.shape)}")
        shapes[name] = arg.shape
    return spec.with_input_shapes(shapes)


def _input_name(spec: ModelSpec, arg: InputShapeArg) -> str:
    if arg.name:
        spec.input(arg.name)
        return arg.name
    if len(spec.inputs) != 1:
        raise UsageError(
            f"model '{spec.name}' has {len(spec.inputs)} inputs; name them: --input-shape NAME=SHAPE "
            f"({', '.join(spec.input_names)})"
        )
    return spec.inputs[0].name


def inputs_from_args(model: str, args: Sequence[InputShapeArg]) -> tuple[InputSpec, ...]:
    if not args:
        raise UsageError(f"model '{model}' needs its input shapes: --input-shape NAME=1x3x224x224 (once per input)")
    specs = []
    for index, arg in enumerate(args):
        name = arg.name or (f"input_{index}" if len(args) > 1 else "input")
        dtype = arg.dtype or "float32"
        low, high = DEFAULT_FLOAT_RANGE if dtype.startswith(("float", "bfloat")) else DEFAULT_INT_RANGE
        specs.append(InputSpec(name, arg.shape, dtype, low, high))
    if len({s.name for s in specs}) != len(specs):
        raise UsageError(f"model '{model}': the same input is named twice in --input-shape")
    return tuple(specs)


def _exported_spec(path: Path, args: Sequence[InputShapeArg]) -> ModelSpec:
    """A torch.export.save archive as a module (its ExportedProgram's `module()`, loading.py), its inputs
    read from the program: names from its signature, shapes and dtypes from its example inputs (or the
    graph's placeholders); --input-shape may give other shapes of the same rank."""
    from ..model.loading import exported_program_inputs

    declared = exported_program_inputs(path)
    given = {(arg.name or (declared[0][0] if len(declared) == 1 else "")): arg for arg in args}
    unknown = sorted(set(given) - {name for name, _, _ in declared})
    if unknown:
        raise UsageError(f"--input-shape names {', '.join(map(repr, unknown))}: the program's inputs are "
                         f"{', '.join(name for name, _, _ in declared)}")
    specs = []
    for name, shape, dtype in declared:
        arg = given.get(name)
        if arg is not None and len(arg.shape) != len(shape):
            raise UsageError(f"--input-shape {name}={format_shape(arg.shape)}: the program takes a rank-{len(shape)} "
                             f"input ({format_shape(shape)})")
        low, high = DEFAULT_FLOAT_RANGE if dtype.startswith(("float", "bfloat")) else DEFAULT_INT_RANGE
        specs.append(InputSpec(name, arg.shape if arg is not None else shape, dtype, low, high))
    return ModelSpec(name=path.stem, kind="module", factory=exported_factory(path), inputs=tuple(specs))


def exported_factory(path: Path) -> Any:
    import functools

    from ..model.loading import load_exported_program

    return functools.partial(load_exported_program, str(path.resolve()))


def apply_ranges(spec: ModelSpec, ranges: Sequence[tuple[str, float, float]]) -> ModelSpec:
    updated = {i.name: i for i in spec.inputs}
    for name, low, high in ranges:
        updated[name] = replace(spec.input(name), low=low, high=high)
    return replace(spec, inputs=tuple(updated[i.name] for i in spec.inputs))


def sniff_model_file(path: Path) -> str:
    """'onnx', 'torchscript' or 'exported' (a torch.export.save archive); refuses plain torch.save
    checkpoints, AOTInductor packages and unknown files."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise UsageError(f"model file '{path}' is unreadable: {first_line(exc)}") from None
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any("/aotinductor/" in n for n in names):
            raise UsageError(f"'{path}' is an AOTInductor package (compiled code, no program to take the reference "
                             "from): give the ExportedProgram it was compiled from (torch.export.save), or the "
                             "module, and judge the package with --backends export")
        if any(n.endswith("/models/model.json") for n in names):
            return "exported"
        raise UsageError(
            f"'{path}' is a torch.save checkpoint, not a TorchScript file: give the model as "
            f"pkg.module:factory with --checkpoint {path}"
        )
    if suffix in TORCHSCRIPT_SUFFIXES:
        raise UsageError(f"'{path}' is not a TorchScript file (not a TorchScript zip archive)")
    # Unknown suffix: ONNX files are protobuf, let the ONNX loader decide with its own message.
    return "onnx"


def _onnx_spec(path: Path, args: Sequence[InputShapeArg]) -> ModelSpec:
    from ..export.onnx_io import ONNX_DTYPES, load_onnx

    model = load_onnx(path)
    initializers = {init.name for init in model.graph.initializer}
    given = {a.name: a for a in args if a.name}
    unnamed = [a for a in args if not a.name]
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if unnamed and len(graph_inputs) != 1:
        raise UsageError(f"'{path}' has {len(graph_inputs)} inputs; name them: --input-shape NAME=SHAPE")
    unknown = [n for n in given if n not in {i.name for i in graph_inputs}]
    if unknown:
        raise UsageError(f"'{path}' has no input '{unknown[0]}' (inputs: {', '.join(i.name for i in graph_inputs)})")
    specs = []
    for value in graph_inputs:
        tensor = value.type.tensor_type
        dtype = ONNX_DTYPES.get(tensor.elem_type)
        if dtype is None:
            raise UsageError(f"'{path}': input '{value.name}' has an unsupported element type {tensor.elem_type}")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        arg = given.get(value.name) or (unnamed[0] if unnamed else None)
        if arg is not None:
            declared_rank = tensor.HasField("shape")
            if declared_rank and (len(arg.shape) != len(dims)
                                  or any(d is not None and d != s for d, s in zip(dims, arg.shape))):
                declared = "x".join("?" if d is None else str(d) for d in dims)
                raise UsageError(
                    f"--input-shape {value.name}={format_shape(arg.shape)} does not fit the ONNX input "
                    f"({declared})"
                )
            shape = arg.shape
        elif any(d is None or d <= 0 for d in dims):
            declared = "x".join("?" if d is None or d <= 0 else str(d) for d in dims)
            raise UsageError(
                f"'{path}': input '{value.name}' has dynamic dimensions ({declared}); give them with "
                f"--input-shape {value.name}=SHAPE"
            )
        else:
            shape = tuple(dims)
        low, high = DEFAULT_FLOAT_RANGE if dtype.startswith(("float", "bfloat")) else DEFAULT_INT_RANGE
        specs.append(InputSpec(value.name, tuple(shape), dtype, low, high))
    return ModelSpec(
        name=path.stem,
        kind="onnx",
        path=str(path),
        inputs=tuple(specs),
        output_names=tuple(o.name for o in model.graph.output),
        gate={"cpu": ("ort:fp32",), "cuda": ("ort:fp32", "trt:fp32")},
    )

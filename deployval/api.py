"""The Python API: the same pipeline as the command line, returning result objects."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .judge.results import Report
from .model.arguments import InputShapeArg
from .model.spec import ModelSpec, RunConfig


def _spec(model: str | Path | ModelSpec, input_shapes: Mapping[str, Sequence[int]] | None,
          checkpoint: str | Path | None) -> ModelSpec:
    from .catalog.registry import resolve_model

    if isinstance(model, ModelSpec):
        spec = model.with_input_shapes({k: tuple(v) for k, v in (input_shapes or {}).items()})
        return spec if checkpoint is None else ModelSpec(**{**spec.__dict__, "checkpoint": str(checkpoint)})
    shapes = [InputShapeArg(name, tuple(shape)) for name, shape in (input_shapes or {}).items()]
    return resolve_model(str(model), input_shapes=shapes, checkpoint=str(checkpoint) if checkpoint else None)


def compare(
    model: str | Path | ModelSpec,
    backends: Sequence[str] | None = None,
    precisions: Sequence[str] = ("fp32",),
    *,
    inputs: Mapping[str, Any] | str | Path | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    checkpoint: str | Path | None = None,
    expected: str | Path | None = None,
    save_outputs: str | Path | None = None,
    allow_nonfinite: bool = False,
    task: str | Callable[..., Any] | None = None,
    slices: Sequence[str] = (),
    **config: Any,
) -> Report:
    """Compare `model` (a zoo name, "pkg.module:factory", a file, or a ModelSpec) across backends.

    `config` takes RunConfig fields (device, seed, atol, rtol, iterations, time_budget_s, ...). The
    report is true when every check passed. `backends` defaults to torch, torchscript and ort (ort for an
    ONNX file). `expected`: golden outputs (.npz) to judge every row
    against; `save_outputs`: where to write the reference's (as `compare --expected/--save-outputs`).
    `allow_nonfinite`: NaN/Inf in the reference (or `expected`) are expected rather than refused: masked
    out of the metrics, and every row must have them at the same positions (as `--allow-nonfinite`).
    `task`: a task check (as `--task`: a built-in's text, 'pkg.module:function', or the function itself, which
    must then be importable by that name); `judge="task"|"norms"|"both"` says what gates (as `--judge`).
    `slices`: outputs judged slice by slice (as `--slices`).
    """
    from .judge.slices import SliceSpec
    from .judge.task_checks import TaskCheck
    from .run.pipeline import compare as run

    spec = _spec(model, input_shapes, checkpoint)
    settings = {**spec.run_defaults, **config, **({"allow_nonfinite": True} if allow_nonfinite else {})}
    if task is not None:
        text = task if isinstance(task, str) else f"{task.__module__}:{task.__qualname__}"
        settings["task_check"] = TaskCheck.parse(text)
    if slices:
        settings["slices"] = tuple(SliceSpec.parse(s) for s in slices)
    return run(spec, None if backends is None else tuple(backends), tuple(precisions), RunConfig(**settings),
               inputs=inputs, expected=Path(expected) if expected is not None else None,
               save_outputs=Path(save_outputs) if save_outputs is not None else None)


def validate(model: str | Path | ModelSpec, *, device: str = "cpu", checkpoint: str | Path | None = None,
             input_shapes: Mapping[str, Sequence[int]] | None = None, **config: Any) -> Report:
    """Run the model's registered release gate on `device`."""
    from .errors import UsageError
    from .run.pipeline import compare as run

    spec = _spec(model, input_shapes, checkpoint)
    gate = spec.gate_for(device)
    if not gate:
        raise UsageError(f"model '{spec.name}' declares no release gate for {device}")
    settings = {**spec.run_defaults, **config, "device": device}
    return run(spec, tuple(dict.fromkeys(g.partition(":")[0] for g in gate)), (), RunConfig(**settings), gate=gate)


def export_artifacts(model: str | Path | ModelSpec, out_dir: str | Path, *, kinds: Sequence[str] | None = None,
           checkpoint: str | Path | None = None, input_shapes: Mapping[str, Sequence[int]] | None = None,
           **config: Any) -> dict[str, Path]:
    """Write the model's deployable artifacts to `out_dir`; raises the first error if one failed."""
    from .run.pipeline import export as run

    spec = _spec(model, input_shapes, checkpoint)
    written, errors, _ = run(spec, Path(out_dir), RunConfig(**{**spec.run_defaults, **config}), kinds=kinds)
    if errors:
        raise next(iter(errors.values()))
    return written

"""`deployval export`: write every deployable artifact to a directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ExitCode, UsageError
from .grouping import Omit, grouped, run_config, run_settings
from .groups import Cache, Display, Export, ModelInputs, Quantization


@grouped
def export_command(
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the artifacts to.")],
    kinds: Annotated[str | None, typer.Option(
        "--kinds", help="Artifacts to write (default: torchscript, onnx-raw, onnx, onnx-int32, onnx-fp16, "
                        "onnx-int8; on request also onnx-fp16-int32, onnx-int8-int32, onnx-int8-nncf, pt2, pt2-fp16, "
                        "pt2-bf16).")] = None,
    src: Annotated[ModelInputs, Omit("allow_nonfinite_inputs", "submodule")],
    export: Export,
    quant: Quantization,
    cache: Cache,
    display: Annotated[Display, Omit("verbose")],  # -v speaks for Ray, which this command does not start
) -> None:
    """Write every deployable artifact (TorchScript, ONNX raw/simplified/int32/fp16/int8) to a directory."""
    from ..export.artifacts import ARTIFACT_KINDS, NO_FILE_KINDS
    from ..model.arguments import parse_list
    from ..report.console import make_console
    from ..run.pipeline import export as run_export

    exportable = tuple(k for k in ARTIFACT_KINDS if k not in NO_FILE_KINDS)
    kind_list = parse_list(kinds, "artifact kind", exportable) if kinds else None
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' exists and is not a directory")
    spec = src.spec()
    config = run_config(spec, run_settings(src, export, quant, cache))
    written, errors, steps = run_export(spec, out, config, kinds=kind_list, progress=display.progress(),
                                        trust_checkpoint=src.trust_checkpoint, inputs=src.inputs)
    console = make_console()
    for step in steps:
        style = {"ok": "green", "fail": "red", "skipped": "dim"}.get(step.status, "")
        cached = " (cached)" if step.cached else ""
        console.print(f"[{style}]{step.status:>7}[/] {step.name}{cached}" + (f": {step.reason}" if step.reason else ""))
    for kind, path in written.items():
        console.print(f"  {kind:<12} {path}")
    if errors:
        from ..errors import print_error

        by_message: dict[str, list[str]] = {}
        for kind, error in errors.items():  # one failed export fails everything built on it
            by_message.setdefault(error.one_line(), []).append(kind)
        for message, kinds_failed in by_message.items():
            print_error(f"{', '.join(kinds_failed)}: {message}")
        usage = any(isinstance(e, UsageError) for e in errors.values())
        raise typer.Exit(int(ExitCode.USAGE if usage else ExitCode.BACKEND))

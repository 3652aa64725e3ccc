"""`deployval validate`: a model's release gate, or with --all every model of the manifest; and the
suite reports (several models or sub-modules in one file) that `report merge` writes too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from ..options import DeviceOpt
from . import common
from .common import ReportWriteError
from .grouping import Omit, grouped, run_config, run_settings
from .groups import (
    BackendSettings,
    Cache,
    DataSet,
    Display,
    Isolation,
    ModelInputs,
    Quantization,
    ReportFiles,
    Timing,
)


@dataclass(frozen=True)
class ValidateInputs(ModelInputs):
    """With --all the manifest names the models: MODEL may be left out."""

    model: Annotated[str | None, typer.Argument(  # type: ignore[assignment]
        help="A registered model, pkg.module:factory or file; leave out with --all.", show_default=False,
        metavar="MODEL")] = None


@grouped
def validate_command(
    *,
    all_models: Annotated[bool, typer.Option("--all", help="Validate every model of the manifest.")] = False,
    manifest: Annotated[Path, typer.Option("--manifest", help="The release manifest (TOML).")] = Path("deployval.toml"),
    shard: Annotated[str | None, typer.Option(
        "--shard", help="With --all: run only shard I of N (e.g. 2/4), for parallel CI jobs.")] = None,
    device: DeviceOpt = "cpu",
    src: Annotated[ValidateInputs, Omit("allow_nonfinite_inputs")],
    timing: Annotated[Timing, Omit("warmup")],
    quant: Quantization,
    backend: BackendSettings,
    isolation: Isolation,
    data: DataSet,
    files: ReportFiles,
    cache: Cache,
    display: Display,
) -> None:
    """Run the model's release gate (the backends, precisions and tolerances its spec requires), or with
    --all every model of the release manifest."""

    files.check()
    dataset = data.options()
    settings = run_settings(src, timing, quant, backend, isolation, cache, device=device)
    if all_models or shard:
        if dataset is not None:
            raise UsageError("--dataset applies to one model; the manifest names each model's inputs")
        if not all_models:
            raise UsageError("--shard works with --all")
        if files.html:
            raise UsageError("--html writes one model's report; use --markdown for a manifest run")
        if src.model is not None or any((src.inputs, src.input_shape, src.input_range, src.checkpoint, src.submodule,
                                         src.arg)):
            raise UsageError("--all takes the models, inputs and checkpoints from the manifest; drop MODEL and "
                             "the per-model options")
        # Only what was given overrides the manifest's entries.
        overrides = {k: v for k, v in {
            "iterations": timing.iterations, "time_budget_s": timing.time_budget, "cache_dir": cache.cache_dir,
            "use_cache": False if cache.no_cache else None, "calibration": quant.calibration,
            "calibration_preprocess": quant.calibration_preprocess, "isolate": isolation.isolate,
            "timeout_s": isolation.timeout, "backend_options": settings["backend_options"],
            "device": device if device != "cpu" else None}.items() if v is not None}
        raise typer.Exit(validate_all(manifest, shard, overrides, src.trust_checkpoint, display, files))
    if src.model is None:
        raise UsageError("name a MODEL to validate, or pass --all to validate the manifest")
    specs = data.shapes_from(src).specs()
    for spec in specs:
        if not spec.gate_for(device):
            raise UsageError(f"model '{spec.name}' declares no release gate for {device}")

    def run_one(spec: Any, files: ReportFiles) -> int:
        spec, options = data.for_spec(spec, dataset, src)
        gate = spec.gate_for(device)
        config = run_config(spec, settings)
        return common.run_and_report(
            spec, src, config, backends=tuple(dict.fromkeys(item.partition(":")[0] for item in gate)), precisions=(),
            gate=gate, save_inputs=None, display=display, invocation=src.invocation(spec, config, *data.args()),
            files=files, dataset=options)

    raise typer.Exit(run_each(specs, run_one, files))


def run_each(specs: list[Any], run_one: Any, files: ReportFiles) -> int:
    """One spec: its own reports. Several (sub-modules): each is run and shown, and the files are
    one combined suite report, as for a manifest."""
    if len(specs) == 1:
        return int(run_one(specs[0], files))
    if files.html:
        raise UsageError("--html writes one model's report; with several sub-modules use --markdown or --json")
    import json
    import tempfile

    from ..report.console import render_suite
    from ..suite import suite_dict

    reports = []
    with tempfile.TemporaryDirectory(prefix="deployval-suite-") as tmp:
        for index, spec in enumerate(specs):
            path = Path(tmp) / f"{index}.json"
            run_one(spec, files.json_only(path))
            data = json.loads(path.read_text())
            data["entry"] = spec.name
            reports.append(data)
    suite = suite_dict(reports, [], manifest=None, shard=None)
    render_suite(suite)
    write_suite(suite, reports, files)
    return int(suite["summary"]["exit_code"])


def validate_all(manifest_path: Path, shard_text: str | None, overrides: dict[str, Any], trust: bool,
                 display: Display, files: ReportFiles) -> int:
    from ..manifest import load_manifest, parse_shard, shard
    from ..pipeline import Invocation
    from ..pipeline import compare as run_compare
    from ..report.console import render, render_suite
    from ..suite import run_manifest, suite_dict

    manifest = load_manifest(manifest_path)
    entries = list(manifest.entries)
    if shard_text:
        entries = shard(entries, *parse_shard(shard_text))
    progress = display.progress()

    def run(spec: Any, checks: tuple[str, ...], config: Any, entry: Any) -> Any:
        report = run_compare(
            spec, tuple(dict.fromkeys(c.partition(":")[0] for c in checks)), (), config, inputs=entry.inputs,
            expected=Path(entry.expected) if entry.expected else None, trust_checkpoint=trust, progress=progress,
            invocation=Invocation(entry.model, entry.command_args()),
            command=common.command_line(), gate=checks,
        )
        render(report)
        return report

    reports, errors = run_manifest(manifest, entries, run=run, overrides=overrides)
    suite = suite_dict(reports, errors, manifest=str(manifest_path), shard=shard_text)
    render_suite(suite)
    write_suite(suite, reports, files)
    return int(suite["summary"]["exit_code"])


def write_suite(suite: dict[str, Any], reports: list[dict[str, Any]], files: ReportFiles) -> None:
    from .._util import atomic_write_json

    failures = []
    for what, path, write in (
        ("JSON", files.json_path, lambda p: atomic_write_json(p, suite)),
        ("JUnit", files.junit, lambda p: junit_suite(reports, p)),
        ("Markdown", files.markdown, lambda p: markdown_suite(suite, reports, p)),
    ):
        if path is not None:
            try:
                write(path)
            except OSError as exc:
                failures.append(f"cannot write the {what} report '{path}': {exc.strerror or exc}")
    if failures:
        raise ReportWriteError("; ".join(failures))


def junit_suite(reports: list[dict[str, Any]], path: Path) -> None:
    from ..report.junit import write_junit

    write_junit(reports, path)


def markdown_suite(suite: dict[str, Any], reports: list[dict[str, Any]], path: Path) -> None:
    from .._util import atomic_write_text
    from ..report.markdown import suite_markdown

    atomic_write_text(path, suite_markdown(suite, reports))

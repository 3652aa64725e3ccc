"""`deployval validate`: a model's release gate, or with --all every model of the manifest; and the
suite reports (several models or sub-modules in one file) that `report merge` writes too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import DeployvalError, UsageError
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
    Tolerances,
)
from .interrupt import run_guarded
from .options import DeviceOpt
from .partial import RunReports


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
    judging: Annotated[Tolerances, Omit("atol", "rtol", "tolerance")],  # the gate's tolerances are the spec's
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

    common.check_paths([*files.named(), ("--save-failing", data.save_failing)],
                       [*common.input_paths(src, data, quant), ("the manifest", manifest if all_models else None)])
    files.check()
    dataset = data.options()
    settings = run_settings(src, timing, judging, quant, backend, isolation, cache, device=device)
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
            "device": device if device != "cpu" else None,
            "allow_nonfinite": settings["allow_nonfinite"], "slices": settings["slices"],
            "task_check": settings["task_check"], "judge": settings["judge"]}.items() if v is not None}
        raise typer.Exit(validate_all(manifest, shard, overrides, src.trust_checkpoint, display, files))
    if src.model is None:
        raise UsageError("name a MODEL to validate, or pass --all to validate the manifest")
    specs = data.shapes_from(src).specs()
    for spec in specs:
        if not spec.gate_for(device):
            raise UsageError(f"model '{spec.name}' declares no release gate for {device}")

    def run_one(spec: Any, files: ReportFiles, reports: RunReports) -> int:
        spec, options = data.for_spec(spec, dataset, src)
        gate = spec.gate_for(device)
        config = run_config(spec, settings)
        return common.run_and_report(
            spec, src, config, backends=tuple(dict.fromkeys(item.partition(":")[0] for item in gate)), precisions=(),
            gate=gate, save_inputs=None, display=display, invocation=src.invocation(spec, config, *data.args()),
            files=files, reports=reports, dataset=options)

    reports = RunReports(files, f"validate {src.model}", suite=len(specs) > 1)
    raise typer.Exit(run_guarded(reports, lambda: run_each(specs, run_one, files, reports)))


def run_each(specs: list[Any], run_one: Any, files: ReportFiles, reports: RunReports) -> int:
    """One spec: its own reports. Several (sub-modules): each is run and shown, and the files are
    one combined suite report, as for a manifest (rewritten after each, kept when the run is cut short)."""
    if len(specs) == 1:
        return int(run_one(specs[0], files, reports))
    if files.html:
        raise UsageError("--html writes one model's report; with several sub-modules use --markdown or --json")
    import json
    import tempfile

    from ..report.console import render_suite
    from ..run.suite import suite_dict

    with tempfile.TemporaryDirectory(prefix="deployval-suite-") as tmp:
        for index, spec in enumerate(specs):
            path = Path(tmp) / f"{index}.json"
            reports.begin(spec.name)
            run_one(spec, files.json_only(path), reports)
            data = json.loads(path.read_text())
            data["entry"] = spec.name
            reports.finish(data)
    reports.mark_final()
    suite = suite_dict(reports.finished, [], manifest=None, shard=None)
    render_suite(suite)
    write_suite(suite, reports.finished, files)
    return int(suite["summary"]["exit_code"])


def validate_all(manifest_path: Path, shard_text: str | None, overrides: dict[str, Any], trust: bool,
                 display: Display, files: ReportFiles) -> int:
    from ..catalog.manifest import load_manifest, parse_shard, shard
    from ..report.console import render, render_suite
    from ..run.pipeline import Invocation
    from ..run.pipeline import compare as run_compare
    from ..run.suite import run_manifest, suite_dict

    manifest = load_manifest(manifest_path)
    entries = list(manifest.entries)
    if shard_text:
        entries = shard(entries, *parse_shard(shard_text))
    for entry in entries:  # no report may overwrite what an entry reads
        common.check_paths(files.named(), [(f"the {key} of entry '{entry.id}'", Path(value)) for key, value in (
            ("inputs", entry.inputs), ("expected outputs", entry.expected), ("checkpoint", entry.checkpoint))
            if value])
    reports = RunReports(files, f"validate --all {manifest_path}", suite=True, manifest=str(manifest_path),
                         shard=shard_text, total=len(entries))
    progress = reports.track(display.progress())

    def run(spec: Any, checks: tuple[str, ...], config: Any, entry: Any) -> Any:
        reports.begin(entry.id)
        try:
            report = run_compare(
                spec, tuple(dict.fromkeys(c.partition(":")[0] for c in checks)), (), config, inputs=entry.inputs,
                expected=Path(entry.expected) if entry.expected else None, trust_checkpoint=trust, progress=progress,
                invocation=Invocation(entry.model, entry.command_args()),
                command=common.command_line(), gate=checks, on_progress=reports.update,
            )
        except DeployvalError as exc:  # an error entry of the suite (run_manifest records it the same way)
            reports.failed({"entry": entry.id, "reason": exc.one_line(), "exit_code": int(exc.exit_code)})
            raise
        render(report)
        return report

    def work() -> int:
        finished, errors = run_manifest(manifest, entries, run=run, overrides=overrides, on_report=reports.finish)
        reports.mark_final()
        suite = suite_dict(finished, errors, manifest=str(manifest_path), shard=shard_text)
        render_suite(suite)
        write_suite(suite, finished, files)
        return int(suite["summary"]["exit_code"])

    return run_guarded(reports, work)


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

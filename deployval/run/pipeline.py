"""Orchestration: inputs -> reference -> artifacts -> each backend x precision -> compare -> report.

A backend that cannot run, or crashes, becomes an error row with its reason; the other rows are
still run and reported. Only problems with the user's input stop the run early (exit code 2).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._util import IMPORT_SECONDS, timed_import
from ..backends.base import Runner, check_available, get_backend
from ..errors import DeployvalError, UsageError, first_line
from ..export.artifacts import MODULE, ONNX, ONNX_FP16, ONNX_RAW, TORCHSCRIPT
from ..export.int8 import NothingToQuantize
from ..export.store import ArtifactStore
from ..judge.judging import check_task, judge_outputs, row_tolerance, settle_verdict
from ..judge.nonfinite import check_reference, reference_source, state_policy
from ..model import inputs as inputs_mod
from ..progress import Progress, Step
from . import fp16_findings
from .execution import execute, time_runner
from .golden import golden_outputs, judge_against_expected
from .golden import save_outputs as write_outputs
from .isolation import ReferenceCrashed
from .reference import reference_runner

if TYPE_CHECKING:
    from .dataset_run import DatasetOptions
from ..judge.results import ERROR, FAIL, PASS, REFERENCE, SKIPPED, BackendResult, Report
from ..judge.slices import check_outputs as check_slices
from ..model.spec import PRECISIONS, ModelSpec, RunConfig
from .session import Session, backend_options
from .session import device_info as device_info  # re-exported: debug and precision import it from here
from .session import load_calibration as load_calibration  # re-exported likewise


@dataclass
class Job:
    backend: str
    precision: str
    runner: type[Runner] | None
    result: BackendResult | None = None  # set when decided before running (skipped, unavailable)


@dataclass
class Invocation:
    """How the run was asked for, to print a reproduction command for every result."""

    model: str
    args: tuple[str, ...] = ()  # what defines the model and its inputs (shared with `deployval export`)
    run_args: tuple[str, ...] = ()  # the run's settings (RunConfig.to_args())

    def command(self, backend: str, precision: str, device: str) -> str:
        parts = ["deployval", "compare", self.model, "--backends", backend, "--precisions", precision]
        if device != "cpu":
            parts += ["--device", device]
        return shlex.join([*parts, *self.args, *self.run_args])


def compare(
    spec: ModelSpec,
    backends: Sequence[str] | None = None,
    precisions: Sequence[str] = ("fp32",),
    config: RunConfig | None = None,
    *,
    inputs: Mapping[str, np.ndarray] | Path | str | None = None,
    save_inputs: Path | None = None,
    allow_nonfinite_inputs: bool = False,
    trust_checkpoint: bool = False,
    progress: Progress | None = None,
    invocation: Invocation | None = None,
    command: str | None = None,
    gate: Sequence[str] | None = None,
    on_progress: Callable[[Report], None] | None = None,
    dataset: DatasetOptions | None = None,
    save_outputs: Path | None = None,
    expected: Path | None = None,
) -> Report:
    """Run `spec` through every backend x precision on the same inputs and judge each result; with
    `dataset`, on its first usable sample, then every row again over the other samples. `expected`:
    golden outputs (.npz) every row is judged against, in place of the reference run for a file;
    `save_outputs` writes the reference's (golden.py)."""
    started = time.perf_counter()
    config = config or RunConfig()
    progress = progress or Progress()
    invocation = invocation or Invocation(spec.name)
    for precision in precisions:
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    backends = default_backends(spec) if backends is None else backends
    jobs = _plan(spec, backends, precisions, config.device, gate)
    _check_before_work(spec, jobs, config, gate, expected, save_outputs)

    faults: list[Any] = []
    first_sample: Path | None = None
    if dataset is not None and dataset.dataset is not None:
        if inputs is not None:
            raise UsageError("--dataset and --inputs both define the inputs: give one of them")
        first_sample, faults, inputs = dataset.dataset.first(spec)
    # Inputs: made or loaded once; the spec follows the shapes of loaded inputs.
    session = Session(spec, config, inputs, allow_nonfinite=allow_nonfinite_inputs,
                      trust_checkpoint=trust_checkpoint, progress=progress)
    spec, feeds, timings = session.spec, session.feeds, session.timings
    golden = golden_outputs(session, expected, save_outputs, dataset is not None)  # refused before anything is written
    if save_inputs is not None:
        inputs_mod.save_inputs(Path(save_inputs), feeds)

    report = _report_header(session, config, command or invocation.command(
        ",".join(backends), ",".join(precisions), config.device), gate, save_inputs)
    if on_progress is not None:
        on_progress(report)  # the header: what a run stopped before its first row can still report

    # The reference run. Activation ranges against fp16's limits are recorded in the same pass when an
    # fp16 row will be judged: module outputs (torch models), and every tensor of the fp32 ONNX graph
    # when an fp16 row runs an ONNX artifact (that check judges then; the module outputs stay the
    # fallback). When a TorchScript row will run a trace, the pass is that trace.
    ranges: list[Any] | None = None
    if spec.kind == "module" and any(j.precision == "fp16" and j.result is None for j in jobs):
        ranges = []
    fp16_onnx = fp16_findings.fp16_onnx_kind(jobs, config)
    reference_rows: list[BackendResult] = []

    def time_reference(runner: Runner, prepared: Mapping[str, np.ndarray], first_run: float) -> None:
        """The reference is a row too when asked for: timed while its runner is active."""
        if any(j.result is None and j.precision == "fp32" and j.backend == runner.name for j in jobs):
            reference_rows.append(_time_reference(runner, prepared, first_run, config, progress, invocation))

    try:
        reference = session.reference(ranges=ranges, trace=_needs_trace(spec, jobs, config), then=time_reference)
    except ReferenceCrashed as exc:  # isolated, it crashed or hung: nothing can be judged, and the report says so
        return _without_reference(report, spec, jobs, exc.one_line(), config, invocation, timings, started)
    reference_result = reference_rows[0] if reference_rows else None
    reference_outputs = _settle_reference(report, session, reference, reference_result, golden, config,
                                          save_outputs, expected)
    range_findings = fp16_findings.range_findings(ranges, config, report, progress, quiet=fp16_onnx is not None,
                                                  seconds=reference.ranges_seconds)
    output_names = tuple(reference_outputs)
    check_slices(config.slices, reference_outputs)
    report.model["output_names"] = list(output_names)
    report.model["sha256"] = session.model_digest

    store = session.store(output_names, reproduce=f"deployval export {shlex.quote(invocation.model)} --out DIR"
                          + ("" if not invocation.args else " " + shlex.join(invocation.args)))
    store.traced_module = reference.traced
    rows = _Rows(report, jobs, session, store, spec, feeds, reference_outputs, config, progress, invocation,
                 trust_checkpoint, on_progress)
    try:
        rows.run_all(reference_result, fp16_onnx, range_findings, ranges)
        if dataset is not None:
            _judge_dataset(report, jobs, session, store, dataset, first_sample, faults, progress, on_progress)
    finally:
        report.steps = list(store.steps)
        store.close()
    return _finish(report, timings, started)


def _check_before_work(spec: ModelSpec, jobs: list[Job], config: RunConfig, gate: Sequence[str] | None,
                       expected: Path | None, save_outputs: Path | None) -> None:
    """What can be refused before any work (exit 2): backend settings, a gate or a run that judges nothing;
    and the ONNX libraries imported up front when a row or the model needs them."""
    for runner in dict.fromkeys(j.runner for j in jobs if j.result is None and j.runner is not None):
        runner.typed_options(dict(config.backend_options))  # missing or bad settings: exit 2 before any work
    if gate is not None and expected is None:
        _check_gate_judges(spec, jobs, gate, config.device)
    if expected is None and save_outputs is None:
        _check_something_judged(spec, jobs)
    if any(j.result is None and j.backend == "ort" for j in jobs) or spec.kind == "onnx":
        timed_import("onnx")
        timed_import("onnxruntime")


def _report_header(session: Session, config: RunConfig, command: str, gate: Sequence[str] | None,
                   save_inputs: Path | None) -> Report:
    """The report before its first row: the run record, the gate, the saved inputs and how rows are judged."""
    report = Report.from_record(session.run_record(command), gate=list(gate) if gate is not None else None)
    if save_inputs is not None:
        report.analysis["saved_inputs"] = str(save_inputs)
    report.analysis["judge"] = {"mode": config.judging,
                                "task": config.task_check.text if config.task_check is not None else None}
    return report


def _settle_reference(report: Report, session: Session, reference: Any, reference_result: BackendResult | None,
                      golden: Any, config: RunConfig, save_outputs: Path | None,
                      expected: Path | None) -> dict[str, np.ndarray]:
    """The reference's outputs as rows are judged against them: checked for NaN/Inf, saved, judged against
    golden outputs (whose outputs then stand in), and their repeat runs compared; said in the report."""
    spec, feeds = session.spec, session.feeds
    if session.parameters is not None:
        report.model["parameters"] = session.parameters
    reference_outputs = reference.outputs
    if golden is None:  # golden outputs were checked when read; NaN/Inf here are refused without the option
        check_reference(reference_outputs, reference_source(spec.kind), config.allow_nonfinite)
    if reference_result is not None:
        reference_result.details["memory"] = dict(reference.memory)
    if save_outputs is not None:
        write_outputs(Path(save_outputs), reference_outputs, session.inputs_digest)
        report.analysis["saved_outputs"] = str(save_outputs)  # the run's product: judging nothing is then no gap
    if golden is not None and expected is not None:
        reference_outputs = judge_against_expected(report, golden, reference_outputs, reference_result, spec, config,
                                                   Path(expected), inputs=feeds)
    report.analysis["nonfinite"], policy = state_policy(reference_outputs, config.allow_nonfinite)
    if policy is not None:
        report.warnings.append(policy)
    if config.repeat > 1:
        report.analysis["reference_repeat"] = {"runs": config.repeat, "identical": not reference.repeat_differences,
                                               "max_abs_difference": reference.repeat_differences}
        if reference.repeat_differences:
            name, diff = max(reference.repeat_differences.items(), key=lambda item: item[1])
            report.warnings.append(f"the reference is not deterministic: {config.repeat} runs of the same inputs "
                                   f"differ (output '{name}' by max |diff| {diff:.3g}); rows are judged against "
                                   "the first")
    return reference_outputs


@dataclass
class _Rows:
    """Every row of the plan run and judged in order against the reference's outputs, the report
    rewritten after each (finished rows survive a later crash)."""

    report: Report
    jobs: list[Job]
    session: Session
    store: ArtifactStore
    spec: ModelSpec
    feeds: Mapping[str, np.ndarray]
    reference_outputs: Mapping[str, np.ndarray]
    config: RunConfig
    progress: Progress
    invocation: Invocation
    trust_checkpoint: bool
    on_progress: Callable[[Report], None] | None

    def run_all(self, reference_result: BackendResult | None, fp16_onnx: Any, range_findings: Any,
                ranges: list[Any] | None) -> None:
        jobs, store, progress, report = self.jobs, self.store, self.progress, self.report
        judge = _simplification_judge(jobs, self.config, fp16_onnx)
        store.simplify_verified_by_row = judge is not None
        to_run = [job for job in jobs if job.result is None and (reference_result is None or (
            job.backend, job.precision) != (reference_result.backend, reference_result.precision))]
        for job in jobs:
            if job.result is None and job not in to_run:  # the reference's own row
                job.result = reference_result
            elif job.result is None:
                with progress.part(to_run.index(job) + 1, len(to_run)):
                    if job.precision == "fp16" and fp16_onnx is not None:  # before the first fp16 row
                        range_findings = fp16_findings.tensor_range_findings(
                            self.spec, store, self.feeds, self.config, report, progress, self.session.module,
                            fp16_onnx, range_findings, module_ranges=ranges or ())
                        fp16_onnx = None
                    job.result = self.run(job)
                    if job is judge and store.simplification_pending:
                        job.result = _settle_simplification(job, store, job.result, lambda job=job: self.run(job))
                    if job.precision == "fp16":
                        fp16_findings.judge_ranges(job.result, range_findings)
                        fp16_findings.fp16_onnx_weights(job.result, store)
            report.results.append(job.result)
            report.steps = list(store.steps)
            if self.on_progress is not None:
                self.on_progress(report)  # e.g. rewrite the JSON report: finished rows survive a later crash

    def run(self, job: Job) -> BackendResult:
        return _run_job(job, self.spec, self.store, self.feeds, self.reference_outputs, self.config, self.progress,
                        self.invocation, self.trust_checkpoint, self.session.replica)


def _finish(report: Report, timings: dict[str, Any], started: float) -> Report:
    """The run's timings, and the report marked complete; a warning when a row is not faithful."""
    timings["imports_s"] = dict(IMPORT_SECONDS)
    timings["total_s"] = time.perf_counter() - started
    timings["steps_s"] = sum(s.seconds for s in report.steps)
    report.timings = timings
    report.complete = True
    if any(not r.faithful for r in report.results if r.status in (PASS, FAIL)):
        report.warnings.append("some results are not faithful to their precision's arithmetic (see each row)")
    return report


def _without_reference(report: Report, spec: ModelSpec, jobs: list[Job], reason: str, config: RunConfig,
                       invocation: Invocation, timings: dict[str, Any], started: float) -> Report:
    """The report of a run whose reference crashed or hung in its own process: the reference's row is
    the error, every row still to run is an error for want of it (exit code 3)."""
    name = "ort" if spec.kind == "onnx" else "torch"
    reference = BackendResult(name, "fp32", config.device, ERROR, reason,
                              reproduce=invocation.command(name, "fp32", config.device))
    rows = [reference] if not any((j.backend, j.precision) == (name, "fp32") for j in jobs) else []
    for job in jobs:
        if (job.backend, job.precision) == (name, "fp32"):
            rows.append(reference)
        elif job.result is not None:
            rows.append(job.result)
        else:
            rows.append(BackendResult(job.backend, job.precision, config.device, ERROR, "not run: the reference run "
                                      "did not finish", reproduce=invocation.command(job.backend, job.precision,
                                                                                      config.device)))
    report.results = rows
    report.analysis["reference_failed"] = reason
    timings["total_s"] = time.perf_counter() - started
    report.timings = timings
    report.complete = True
    return report


def default_backends(spec: ModelSpec) -> tuple[str, ...]:
    """What runs when no backends are named: every CPU runtime the model can take (torch cannot run an
    ONNX file)."""
    return ("ort",) if spec.kind == "onnx" else ("torch", "torchscript", "ort")


def _plan(spec: ModelSpec, backends: Sequence[str], precisions: Sequence[str], device: str,
          gate: Sequence[str] | None) -> list[Job]:
    """Which backend x precision to run: unknown backends are usage errors; combinations that do
    not exist are 'skipped' rows; unavailable backends are error rows (exit code 3)."""
    if not backends:
        raise UsageError("no backends given")
    pairs: list[tuple[str, str]]
    if gate is not None:
        pairs = []
        for item in gate:
            backend, _, precision = item.partition(":")
            pairs.append((backend, precision or "fp32"))
    else:
        pairs = [(b, p) for b in backends for p in precisions]
    classes = {b: get_backend(b) for b in dict.fromkeys(b for b, _ in pairs)}
    jobs: list[Job] = []
    for backend, precision in pairs:
        cls = classes[backend]
        if spec.kind == "onnx" and any(kind in (MODULE, "torchscript") for kind in cls.artifacts.values()):
            raise UsageError(f"'{spec.name}' is an ONNX model: the {backend} backend needs a PyTorch model")
        if device not in cls.devices:
            # Asked for by name, it cannot run here: an error (exit 3) that names every missing piece.
            where = " or ".join(cls.devices)
            ok, reason = check_available(cls, cls.devices[0])
            missing = f"{backend} runs on {where} only (--device {cls.devices[0]})" + ("" if ok else f"; {reason}")
            jobs.append(Job(backend, precision, cls, BackendResult(backend, precision, device, ERROR,
                                                                   f"unavailable: {missing}")))
            continue
        supported, why = cls.supports(precision, device)
        if not supported:
            jobs.append(Job(backend, precision, cls, BackendResult(backend, precision, device, SKIPPED, why)))
            continue
        ok, reason = check_available(cls, device)
        if not ok:
            jobs.append(Job(backend, precision, cls, BackendResult(backend, precision, device, ERROR,
                                                                   f"unavailable: {reason}")))
            continue
        jobs.append(Job(backend, precision, cls))
    if all(j.result is not None and j.result.status == SKIPPED for j in jobs):
        raise UsageError("nothing to run: " + "; ".join(j.result.reason for j in jobs if j.result))
    return jobs


def _check_something_judged(spec: ModelSpec, jobs: list[Job]) -> None:
    """Refuse, before any work, a run whose only row is the reference itself (compare FILE.onnx alone:
    ONNX Runtime fp32 is a file's reference): it could judge nothing, and a run that judges nothing is
    never a pass. Rows that turn out skipped later make the run INCOMPLETE instead (results.judge)."""
    reference = "ort" if spec.kind == "onnx" else "torch"
    if any(j.result is not None and j.result.status != SKIPPED for j in jobs):
        return  # a row that cannot run is reported as such
    if all(j.result is not None or (j.backend, j.precision) == (reference, "fp32") for j in jobs):
        other = "--precisions fp32,fp16 or --backends ort" if spec.kind != "onnx" else "--precisions fp32,fp16"
        raise UsageError(f"nothing to judge: {reference} fp32 is the reference itself; compare it with another "
                         f"backend or precision ({other}), or judge against golden outputs (--expected)")


def _check_gate_judges(spec: ModelSpec, jobs: list[Job], gate: Sequence[str], device: str) -> None:
    """A release gate whose only row is the reference itself judges nothing: refused, not a green PASS."""
    reference = "ort" if spec.kind == "onnx" else "torch"
    if all((j.backend, j.precision) == (reference, "fp32") or (j.result is not None and j.result.status == SKIPPED)
           for j in jobs):
        raise UsageError(f"the release gate of '{spec.name}' ({', '.join(gate)}) judges nothing on {device}: "
                         f"{reference} fp32 is the reference itself; gate other rows (e.g. trt on --device cuda), or "
                         "judge against golden outputs (a manifest entry's `expected`)")


def _judge_dataset(report: Report, jobs: list[Job], session: Session, store: ArtifactStore, dataset: DatasetOptions,
                   first_sample: Path | None, faults: list[Any], progress: Progress,
                   on_progress: Callable[[Report], None] | None) -> None:
    """Every row judged on the first input, again over the data set's other samples or the grid's other
    shapes, and on a batch of copies (dataset_run.py)."""
    from ..model.dataset import Sample
    from .dataset_run import dataset_rows, judge_dataset

    spec, config = session.spec, session.config
    options = backend_options(spec, config, store)
    names = tuple(session.reference().outputs)

    def make_runner(job: Job) -> Runner | None:
        cls = job.runner
        assert cls is not None and job.result is not None
        if config.isolates(cls.isolate_by_default):
            job.result.warnings.append("judged on the first sample only: the data set runs in this process, "
                                       "and this row runs isolated")
            return None
        return cls(store.get(cls.artifact_for(job.precision, options)), job.precision, config.device, options)

    rows = dataset_rows(jobs, make_runner, lambda job: {
        name: row_tolerance(spec, job.backend, job.precision, name, config) for name in names})
    reference = reference_runner(spec, session.module, config)
    if dataset.dataset is not None and first_sample is not None:
        first = Sample(first_sample.name, first_sample, session.feeds)
        samples: Any = dataset.dataset.samples(spec, after=first.path)
    else:
        label = dataset.grid.label(0) if dataset.grid is not None else session.inputs_source
        first = Sample(label, Path(label), session.feeds)
        samples = dataset.grid.samples(spec, config.seed) if dataset.grid is not None else ()
    remote = None
    if dataset.ray:
        from .distributed import judge_remotely

        remote = judge_remotely(session, dataset, first, rows, progress)
    dataset = replace(dataset, allow_nonfinite=config.allow_nonfinite)  # each sample's reference, as the first's
    judge_dataset(report, rows, reference, spec, first, dataset, samples, progress, faults, on_progress, remote,
                  slices=session.config.slices, check=session.config.task_check, judge=session.config.judging)
    for result in report.results:
        if result.status == REFERENCE:
            result.samples = report.samples


def _needs_trace(spec: ModelSpec, jobs: list[Job], config: RunConfig) -> bool:
    """Whether a row will run a traced TorchScript of this model (then the reference run traces it)."""
    if spec.kind != "module" or spec.export.torchscript != "trace":
        return False
    for job in jobs:
        if job.result is None and job.runner is not None:
            try:
                if job.runner.artifact_for(job.precision, dict(config.backend_options)) == TORCHSCRIPT:
                    return True
            except DeployvalError:
                continue
    return False


def _time_reference(runner: Runner, prepared: Mapping[str, np.ndarray], first_run: float, config: RunConfig,
                    progress: Progress, invocation: Invocation) -> BackendResult:
    result = BackendResult(runner.name, "fp32", config.device, REFERENCE,
                           reason="the reference every other result is compared against",
                           reproduce=invocation.command(runner.name, "fp32", config.device))
    result.artifact = runner.artifact.to_dict() if runner.artifact.path else {"kind": runner.artifact.kind}
    with progress.step(f"timing {runner.name} fp32"):
        result.latency, seconds = time_runner(runner, prepared, config, first_run)
    result.seconds = {"prepare": 0.0, "correctness": first_run, **seconds}
    return result


def _run_job(
    job: Job, spec: ModelSpec, store: ArtifactStore, feeds: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray], config: RunConfig, progress: Progress, invocation: Invocation,
    trust_checkpoint: bool = False, replica: Callable[[], Any] | None = None,
) -> BackendResult:
    """One row: its artifact, its run (isolated when asked: the child rebuilds the driver's module from
    `replica`), its judgment."""
    assert job.runner is not None
    cls = job.runner
    result = BackendResult(job.backend, job.precision, config.device, ERROR,
                           reproduce=invocation.command(job.backend, job.precision, config.device))
    result.faithful = cls.faithful(job.precision, config.device)
    result.warnings.extend(cls.caveats(job.precision, config.device))
    options = backend_options(spec, config, store)
    kind = "?"
    try:
        kind = cls.artifact_for(job.precision, options)
        artifact = store.get(kind)
    except NothingToQuantize as exc:  # a float-only graph has no int8 to validate
        result.status, result.reason = SKIPPED, exc.one_line()
        return result
    except DeployvalError as exc:
        result.reason = f"artifact '{kind}' could not be made: {exc.one_line()}"
        result.usage_error = isinstance(exc, UsageError)
        return result
    except Exception as exc:  # a bug in a pass must not cost the other rows
        result.reason = f"artifact '{kind}' could not be made: {first_line(exc)}"
        return result
    result.artifact = artifact.to_dict() if artifact.path else {"kind": artifact.kind}
    label = f"{job.backend} {job.precision}"
    if config.isolates(cls.isolate_by_default):
        from .isolation import execute_isolated

        execution = execute_isolated(cls, artifact, job.precision, config.device, options, feeds, config, spec,
                                     timeout_s=config.timeout_s, progress=progress, label=label,
                                     trust_checkpoint=trust_checkpoint,
                                     replica=replica() if replica is not None and artifact.kind == MODULE else None)
    else:
        execution = execute(cls, artifact, job.precision, config.device, options, feeds, config, progress, label)
    result.details.update(execution.details)
    result.seconds.update(execution.seconds)
    result.warnings.extend(execution.warnings)
    result.latency = execution.latency
    if execution.outputs is not None:
        judge_outputs(result, reference, execution.outputs,
                      lambda name: row_tolerance(spec, job.backend, job.precision, name, config), spec.task,
                      allow_nonfinite=config.allow_nonfinite, slices=config.slices)
    if execution.error is not None:  # the outputs it produced before failing are still reported
        result.reason, result.usage_error = execution.error, execution.usage_error
        return result
    if execution.outputs is not None:
        check_task(result, config, reference, execution.outputs, feeds)
    return settle_verdict(result, config.judging)


def _simplification_judge(jobs: list[Job], config: RunConfig, fp16_onnx: str | None) -> Job | None:
    """The row that verifies onnx-simplifier's output against the reference, in place of two more ONNX
    Runtime runs at build time: an fp32 row on the simplified ONNX that runs before anything else is
    made from it (other ONNX artifacts, the fp16 range check). None: the build verifies it itself."""
    for job in jobs:
        if job.result is not None or job.runner is None:
            continue
        if job.precision == "fp16" and fp16_onnx is not None:
            return None  # the range check before the first fp16 row reads the ONNX
        try:
            kind = job.runner.artifact_for(job.precision, dict(config.backend_options))
        except DeployvalError:
            return None
        if kind in (MODULE, TORCHSCRIPT):
            continue
        return job if kind == ONNX and job.precision == "fp32" else None
    return None


def _settle_simplification(job: Job, store: ArtifactStore, result: BackendResult,
                           rerun: Callable[[], BackendResult]) -> BackendResult:
    """The judge row has run: it verifies the simplification, or, failing, the blame is split against
    the unsimplified model; where onnx-simplifier changed the outputs the row runs again without it."""
    verdict = store.settle_simplification(result.status == PASS, f"{job.backend} {job.precision}")
    if verdict["status"] != "fail":
        if result.status != PASS and verdict["status"] == "ok":
            result.warnings.append("the unsimplified ONNX gives the same outputs: onnx-simplifier is not the cause")
        return result
    again = rerun()
    again.warnings.insert(0, f"onnx-simplifier changed the outputs ({verdict['reason']}): this row ran the "
                             "unsimplified model")
    return again


def export(spec: ModelSpec, out_dir: Path, config: RunConfig | None = None, *,
           kinds: Sequence[str] | None = None, progress: Progress | None = None,
           trust_checkpoint: bool = False, inputs: Path | str | None = None,
           ) -> tuple[dict[str, Path], dict[str, DeployvalError], list[Step]]:
    """Build every artifact (or `kinds`) for `spec` and write them to `out_dir`; returns the files
    written, the reason for each artifact that could not be made, and the steps. `inputs` (a file) are
    the example inputs the exporters trace with and int8 calibrates on when no --calibration is given."""
    from ..export.artifacts import ONNX, ONNX_INT8, ONNX_INT32, TORCHSCRIPT

    session = Session(spec, config, inputs, trust_checkpoint=trust_checkpoint, progress=progress)
    spec, config = session.spec, session.config
    output_names = tuple(spec.output_names or ())
    if spec.kind != "onnx":
        session.module()
        if not output_names:  # one forward pass to learn the output structure
            with session.progress.step("reference run (to name the outputs)"), \
                    reference_runner(spec, session.module, config) as runner:
                output_names = tuple(runner.infer(session.feeds))
    store = session.store(output_names)
    default = (ONNX, ONNX_INT32, ONNX_FP16, ONNX_INT8) if spec.kind == "onnx" else (
        TORCHSCRIPT, ONNX_RAW, ONNX, ONNX_INT32, ONNX_FP16, ONNX_INT8)
    try:
        written, errors = store.export_all(Path(out_dir), tuple(kinds or default))
    finally:
        store.close()
    return written, errors, store.steps

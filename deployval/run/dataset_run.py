"""Judging every row over a data set: the rows of a compare run (made on the first sample) are run
again on every other sample, one sample at a time.

Sample-major: the reference and every row's runner stay loaded, each sample's outputs are compared
and dropped before the next is read, so memory holds one sample's outputs however large the set. Per
row and output the report keeps each metric's worst, mean, p50 and p99 over the samples, the worst
samples by name and how many failed; the row's verdict is over every sample (or the share of them
`--pass-fraction` declares). Latency and the fp16 range check stay those of the first sample.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Runner
from ..errors import DeployvalError, first_line
from ..judge.metrics import OutputComparison, compare_output, failure_lines, label_metrics
from ..judge.results import FAIL, PASS, BackendResult, Report
from ..judge.task_checks import TaskCheck, combine, run_check
from ..metric_table import ELEMENTS, REL_L2, lower_is_worse
from ..model import inputs as inputs_mod
from ..model.dataset import Dataset, Sample
from ..model.labels import Labels
from ..model.shape_grid import ShapeGrid
from ..model.spec import ModelSpec, TaskSpec, Tolerance
from ..progress import Progress
from .execution import host_outputs


@dataclass(kw_only=True)
class DatasetOptions:
    """What to judge beyond the run's one input: a directory of samples, a grid of shapes, batch
    invariance (a batch of `batch` copies of the first input must give the same row `batch` times)."""

    dataset: Dataset | None = None
    grid: ShapeGrid | None = None
    batch: int = 0
    save_failing: Path | None = None  # failing samples are written here as .npz, for replay with --inputs
    worst: int = 5  # the worst samples named per row
    pass_fraction: float = 1.0  # share of samples that must pass for the row to pass
    labels: Labels | None = None  # ground truth: the task metric of the reference and every row
    max_drop: dict[str, float] = field(default_factory=dict)  # e.g. {"top1": 0.005}: a row may lose this much
    ray: bool = False  # judge the samples on Ray (distributed.py)
    ray_address: str | None = None  # join this cluster; None: start a local one
    workers: int = 2  # actors in the pool (one per GPU on CUDA)
    ray_logs: bool = False  # -v: Ray's own INFO lines, progress logs and C++ warnings on stderr
    allow_nonfinite: bool = False  # --allow-nonfinite: a sample's NaN/Inf reference is masked, not a failure


class LabelTally:
    """A task metric against the ground truth, one value per labelled sample (the mean is the score)."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add(self, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.values.setdefault(name, []).append(value)

    def means(self) -> dict[str, float]:
        return {name: float(np.mean(values)) for name, values in self.values.items()}


@dataclass
class RowSamples:
    """One row's judgement over the samples: per output and metric one value per sample (scalars only)."""

    result: BackendResult
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    first_status: str = ""
    labels: LabelTally = field(default_factory=LabelTally)
    batch_failure: str = ""  # copies of one input in a batch gave other outputs beyond the tolerance
    task_values: dict[str, list[float]] = field(default_factory=dict)  # --task: its metrics, one per sample
    task_failed: int = 0  # samples the task check failed (whether or not it gates)

    def add(self, sample: str, comparisons: Sequence[OutputComparison], error: str = "",
            task: Mapping[str, Any] | None = None, judge: str = "norms") -> bool:
        """Record one sample; whether it passed under `judge` (its norms, its task check, or both)."""
        norms = failure_lines(comparisons)
        gating, task_error = combine(norms, task, judge)
        error = error or task_error
        passed = not error and not gating
        if task is not None:
            self.task_failed += not task.get("passed")
            for metric, value in (task.get("metrics") or {}).items():
                self.task_values.setdefault(metric, []).append(float(value))
        worst_rel = 0.0
        for c in comparisons:
            per_metric = self.values.setdefault(c.name, {})
            numbers = {**c.metrics, **{k: v for k, v in c.task.items() if isinstance(v, float)}}
            for metric, value in numbers.items():
                if metric != ELEMENTS:
                    per_metric.setdefault(metric, []).append(float(value))
            worst_rel = max(worst_rel, float(c.metrics.get(REL_L2, math.inf if not c.metrics else 0.0)))
        failures = [error] if error else gating
        self.records.append({"sample": sample, "passed": passed, REL_L2: worst_rel, "failures": failures[:2]})
        return passed

    def summary(self, worst: int) -> dict[str, Any]:
        failed = [r for r in self.records if not r["passed"]]
        ranked = sorted(self.records, key=lambda r: (r["passed"], -_finite(r[REL_L2]), r["sample"]))
        outputs = {}
        for name, metrics in self.values.items():
            outputs[name] = {metric: _aggregate(metric, values) for metric, values in metrics.items()}
        summary = {"samples": len(self.records), "failed": len(failed), "worst": ranked[:worst], "outputs": outputs}
        if self.task_values:
            summary["task"] = {"failed": self.task_failed,
                               "metrics": {m: _aggregate(m, v) for m, v in self.task_values.items()}}
        return summary


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 1e300


def _aggregate(metric: str, values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    worst = array.min() if lower_is_worse(metric) else array.max()
    with np.errstate(invalid="ignore"):
        mean = float(array.mean())
    return {"worst": float(worst), "mean": mean, "p50": float(np.percentile(array, 50, method="nearest")),
            "p99": float(np.percentile(array, 99, method="nearest"))}


@dataclass
class RowRunner:
    """A judged row, loaded for the data set."""

    samples: RowSamples
    runner: Runner | None
    tolerances: dict[str, Tolerance]
    task: Any
    slices: tuple[Any, ...] = ()  # --slices: outputs judged slice by slice too
    check: TaskCheck | None = None  # --task: each sample's outputs checked by what the model is for
    judge: str = "norms"  # what gates a sample: norms, task or both


def judge_dataset(
    report: Report, rows: Sequence[tuple[BackendResult, Runner | None, dict[str, Tolerance]]], reference: Runner,
    spec: ModelSpec, first: Sample, options: DatasetOptions, samples: Iterable[Sample], progress: Progress,
    faults: list[Sample], on_progress: Callable[[Report], None] | None = None,
    remote: Iterable[Any] | None = None, slices: Sequence[Any] = (), check: TaskCheck | None = None,
    judge: str = "norms",
) -> None:
    """Run every judged row (its runner, not yet activated; None: not run again, with the reason in the
    row) and the reference over `samples` (those after `first`, whose comparisons the rows already
    hold), then the batch-invariance check."""
    table = [RowRunner(RowSamples(result, first_status=result.status), runner, tolerances, spec.task, tuple(slices),
                       check, judge) for result, runner, tolerances in rows]
    for row in table:
        result = row.samples.result
        # A row the first sample failed on more than its outputs (fp16 ranges beyond the limit) keeps that.
        task_failed = result.task_check is not None and not result.task_check.get("passed")
        beyond = result.reason if result.status == FAIL and all(c.passed for c in result.outputs) and not task_failed \
            else ""
        _save_failing(options, first, row.samples.add(first.name, result.outputs, beyond, result.task_check,
                                                      row.judge))
    dataset_info: dict[str, Any] = {"first": first.name, "pass_fraction": options.pass_fraction,
                                    "unusable": [{"sample": s.name, "reason": s.fault} for s in faults]}
    if options.dataset is not None:
        dataset_info["directory"] = str(options.dataset.directory)
    if options.grid is not None:
        dataset_info["shape_grid"] = [options.grid.label(i) for i in range(len(options.grid))]
    report.analysis["dataset"] = dataset_info
    scorer = Scorer.of(options.labels, spec) if options.labels is not None else None
    reference_scores = LabelTally()
    if scorer is not None:
        dataset_info["labels"] = {"file": str(scorer.labels.path), "labelled": 0, "unlabelled": []}
        if options.dataset is not None:
            unmatched = scorer.labels.unmatched(p.name for p in Path(options.dataset.directory).iterdir())
            if unmatched:
                dataset_info["labels"]["not_in_dataset"] = unmatched
                shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
                progress.note(f"--labels: {len(unmatched)} id(s) name no sample of the data set: {shown}")
    judged = 1
    total = len(options.dataset.files()) if options.dataset is not None else len(options.grid or ())
    of = f" of {total}" if total else ""
    started = time.perf_counter()
    partial = _PartialReport(lambda count: _finish(report, table, options, count, complete=False,
                                                   scores=reference_scores if scorer else None), report, on_progress)
    active: list[Runner] = []
    finished = False  # the loop ran to its end: what an interruption leaves is not complete
    try:
        with progress.step("loading the rows for the data set"):
            for runner in [reference, *(row.runner for row in table if row.runner is not None)]:
                runner.activate()
                active.append(runner)
        if scorer is not None:  # the first sample's rows were compared already; its labels are scored here
            _judge_sample(first, reference, table, options, dataset_info, reference_scores, scorer, compare=False)
        for verdict in remote or ():  # computed by workers (distributed.py): applied here, as they arrive
            if isinstance(verdict, tuple) or verdict.fault:
                name, fault = verdict if isinstance(verdict, tuple) else (verdict.sample, verdict.fault)
                faults.append(Sample(name, Path(name), fault=fault))
                dataset_info["unusable"].append({"sample": name, "reason": fault})
                continue
            directory = options.dataset.directory if options.dataset is not None else Path()
            apply_verdict(verdict, table, options, dataset_info, reference_scores,
                          Sample(verdict.sample, Path(directory) / verdict.sample))
            judged += 1
            if judged % 50 == 0:
                progress.note(f"{judged} samples judged")
            partial.write(judged)
        for sample in samples if remote is None else ():
            if sample.fault:
                faults.append(sample)
                dataset_info["unusable"].append({"sample": sample.name, "reason": sample.fault})
                progress.note(f"sample {sample.name} left out: {sample.fault}")
                continue
            with progress.step(f"sample {judged + 1}{of}: {sample.name}"):
                fault = _judge_sample(sample, reference, table, options, dataset_info, reference_scores, scorer)
            if fault:
                faults.append(replace(sample, feeds=None, fault=fault))
                dataset_info["unusable"].append({"sample": sample.name, "reason": fault})
                progress.note(f"sample {sample.name} left out: {fault}")
                continue
            judged += 1
            partial.write(judged)  # a crash or Ctrl-C later leaves the samples judged so far
        if options.batch:
            with progress.step(f"batch invariance ({options.batch} copies of {first.name})"):
                _batch_invariance(report, first, reference, table, options.batch)
        finished = True
    finally:
        for runner in active:
            with contextlib.suppress(Exception):  # the judged samples matter more than a failed unload
                runner.deactivate()
        dataset_info["seconds"] = round(time.perf_counter() - started, 3)
        _finish(report, table, options, judged, complete=finished, scores=reference_scores if scorer else None)


@dataclass
class Scorer:
    """Scores outputs against the labels: which output, with what task (declared, or read from the
    labels: class indices mean classification over the last axis, masks segmentation over axis 1).
    Picklable: the workers of a distributed run score with it too."""

    labels: Labels
    task: TaskSpec
    output: str | None

    @classmethod
    def of(cls, labels: Labels, spec: ModelSpec) -> Scorer:
        task = spec.task
        if task is None:
            first = next(iter(labels.entries.values()))
            kind = "classification" if isinstance(first, int) or str(first).strip().lstrip("-").isdigit() \
                else "segmentation"
            task = TaskSpec(kind, axis=-1 if kind == "classification" else 1)
        return cls(labels, task, task.outputs[0] if task.outputs else None)

    def score(self, outputs: Mapping[str, np.ndarray], label: Any) -> dict[str, float]:
        name = self.output or next(iter(outputs))
        output = np.asarray(outputs[name])
        if self.task.kind == "classification" and output.ndim:
            self.labels.check_classes(int(output.shape[self.task.axis]), name)  # every id, before any counts
        return label_metrics(output, label, self.task)


@dataclass
class SampleVerdict:
    """What one sample showed: per row its comparisons (or the error), and the task scores against the
    label. Computed where the runtimes are (this process, or a worker), applied by the driver."""

    sample: str
    rows: dict[str, tuple[list[OutputComparison], str]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # per row: its task check's outcome
    labelled: bool | None = None  # None: no labels in play
    fault: str = ""  # the reference could not run it: the sample is left out, named
    reference_scores: dict[str, float] = field(default_factory=dict)
    row_scores: dict[str, dict[str, float]] = field(default_factory=dict)


def verdict_of(sample: Sample, reference: Runner, rows: Sequence[tuple[str, Runner, Mapping[str, Tolerance]]],
               task: TaskSpec | None, scorer: Scorer | None = None, compare: bool = True,
               allow_nonfinite: bool = False, slices: Sequence[Any] = (), check: TaskCheck | None = None
               ) -> SampleVerdict:
    """Run the reference and every row on one sample and compare (and score against its label)."""
    assert sample.feeds is not None
    verdict = SampleVerdict(sample.name)
    try:
        ref = host_outputs(reference, sample.feeds)
    except DeployvalError as exc:  # nothing to judge the rows against: a fault of this sample
        verdict.fault = f"the reference failed on it: {exc.one_line()}"
        return verdict
    except Exception as exc:
        verdict.fault = f"the reference failed on it: {first_line(exc)}"
        return verdict
    label = scorer.labels.for_sample(sample.name) if scorer is not None else None
    if scorer is not None:
        verdict.labelled = label is not None
        if label is not None:
            verdict.reference_scores = scorer.score(ref, label)
    for name, runner, tolerances in rows:
        error, comparisons = "", []
        try:
            outputs = host_outputs(runner, sample.feeds)
            if scorer is not None and label is not None:
                verdict.row_scores[name] = scorer.score(outputs, label)
            if compare:
                comparisons = [compare_output(output, value, outputs.get(output), tolerances[output], task,
                                              allow_nonfinite=allow_nonfinite, slices=slices)
                               for output, value in ref.items()]
                if check is not None:
                    verdict.tasks[name] = run_check(check, check.resolve(), ref, outputs, sample.feeds).to_dict()
        except DeployvalError as exc:
            error = exc.one_line()
        except Exception as exc:  # one sample crashing a runtime is that sample's failure
            error = f"{runner.name} failed: {first_line(exc)}"
        verdict.rows[name] = (comparisons, error)
    return verdict


def apply_verdict(verdict: SampleVerdict, table: list[RowRunner], options: DatasetOptions, info: dict[str, Any],
                  reference_scores: LabelTally, sample: Sample | None = None, compare: bool = True) -> None:
    """Add one sample's verdict to each row's tally (the driver's side of a distributed run too)."""
    if verdict.labelled is not None:
        labels = info.setdefault("labels", {"labelled": 0, "unlabelled": []})
        if verdict.labelled:
            labels["labelled"] += 1
            reference_scores.add(verdict.reference_scores)
        else:
            labels["unlabelled"].append(verdict.sample)
    for row in table:
        label = row.samples.result.label
        if label not in verdict.rows:
            continue
        comparisons, error = verdict.rows[label]
        if label in verdict.row_scores:
            row.samples.labels.add(verdict.row_scores[label])
        if compare or error:
            passed = row.samples.add(verdict.sample, comparisons, error, verdict.tasks.get(label), row.judge)
            if sample is not None:
                _save_failing(options, sample, passed)


class _PartialReport:
    """The report rewritten as samples are judged, so that a crash or Ctrl-C keeps them. The verdicts over
    the samples so far cost a pass over every sample's values: after each of the first samples, then at
    most once a second (rewriting after each of 50,000 samples would be quadratic). Nothing without
    a report to write."""

    EVERY_SAMPLE = 100  # samples after each of which the report is rewritten
    INTERVAL_S = 1.0

    def __init__(self, finish: Callable[[int], None], report: Report,
                 on_progress: Callable[[Report], None] | None) -> None:
        self.finish, self.report, self.on_progress = finish, report, on_progress
        self.last = 0.0

    def write(self, judged: int) -> None:
        if self.on_progress is None:
            return
        now = time.perf_counter()
        if judged > self.EVERY_SAMPLE and now - self.last < self.INTERVAL_S:
            return
        self.finish(judged)
        self.on_progress(self.report)
        self.last = now


def _judge_sample(sample: Sample, reference: Runner, table: list[RowRunner], options: DatasetOptions,
                  info: dict[str, Any], reference_scores: LabelTally, scorer: Scorer | None = None,
                  compare: bool = True) -> str:
    """Judge one sample here; returns its fault ('' when it was judged)."""
    rows = [(row.samples.result.label, row.runner, row.tolerances) for row in table if row.runner is not None]
    verdict = verdict_of(sample, reference, rows, table[0].task if table else None, scorer, compare,
                         options.allow_nonfinite, table[0].slices if table else (), table[0].check if table else None)
    if not verdict.fault:
        apply_verdict(verdict, table, options, info, reference_scores, sample, compare)
    return verdict.fault


def _batch_invariance(report: Report, first: Sample, reference: Runner, table: list[RowRunner], copies: int) -> None:
    from .batch_invariance import check_runner

    assert first.feeds is not None
    checks = {"reference": _checked(lambda: check_runner(reference, first.feeds or {}, copies))}
    for row in table:
        if row.runner is None:
            continue
        runner, result = row.runner, row.samples.result
        check = _checked(lambda runner=runner, row=row: check_runner(runner, first.feeds or {}, copies,  # type: ignore
                                                                      row.tolerances))
        checks[result.label] = check
        result.details["batch_invariance"] = check
        if check.get("failures"):
            row.samples.batch_failure = f"batch invariance: {check['failures'][0]}"
        elif not check.get("identical", True):
            name, diff = max(check["max_abs_difference"].items(), key=lambda item: item[1])
            result.warnings.append(f"copies of one input in a batch of {copies} differ (output '{name}' by max "
                                   f"|diff| {diff:.3g}), within the tolerance")
    report.analysis["dataset"]["batch_invariance"] = checks


def _checked(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A runtime that cannot take the larger batch is a finding of its own, not the end of the run."""
    try:
        return check()
    except DeployvalError as exc:
        return {"error": exc.one_line(), "failures": [f"the batch could not run: {exc.one_line()}"]}
    except Exception as exc:
        return {"error": first_line(exc), "failures": [f"the batch could not run: {first_line(exc)}"]}


def _save_failing(options: DatasetOptions, sample: Sample, passed: bool) -> None:
    if passed or options.save_failing is None:
        return
    target = Path(options.save_failing) / (Path(sample.name).stem + ".npz")
    if target.exists():
        return
    if sample.feeds is not None:
        inputs_mod.save_inputs(target, sample.feeds)
    elif sample.path.is_file():  # judged elsewhere (a worker): the file itself replays
        shutil.copyfile(sample.path, Path(options.save_failing) / sample.path.name)


def _finish(report: Report, table: list[RowRunner], options: DatasetOptions, judged: int, complete: bool,
            scores: LabelTally | None = None) -> None:
    """Each row's verdict over the samples judged so far, and the run's sample count."""
    report.samples = judged
    report.analysis["dataset"]["samples"] = judged
    report.analysis["dataset"]["complete"] = complete
    reference_scores = scores.means() if scores is not None else {}
    if scores is not None:
        report.analysis["dataset"]["labels"]["reference"] = reference_scores
    for row in table:
        result, summary = row.samples.result, row.samples.summary(options.worst)
        result.samples = summary["samples"]
        result.details["dataset"] = summary
        if row.runner is None:
            continue
        failed, total = summary["failed"], summary["samples"]
        passing = (total - failed) / total if total else 0.0
        if row.samples.first_status in (PASS, FAIL):
            result.status = PASS if passing >= options.pass_fraction else FAIL
            if failed:
                worst = summary["worst"][0]
                allowed = "" if options.pass_fraction >= 1.0 else f" (allowed: {1 - options.pass_fraction:.1%})"
                where = "; ".join(worst["failures"]) or "see the row"
                result.reason = f"{failed} of {total} samples fail{allowed}; worst {worst['sample']}: {where}"
            elif result.status == PASS:
                result.reason = ""
        if row.samples.batch_failure:
            result.status = FAIL
            result.reason = f"{result.reason}; {row.samples.batch_failure}" if result.reason else \
                row.samples.batch_failure
        if scores is not None:
            _judge_labels(result, row.samples.labels.means(), reference_scores, options.max_drop)


def _judge_labels(result: BackendResult, scores: dict[str, float], reference: dict[str, float],
                  max_drop: Mapping[str, float]) -> None:
    """The row's task metric against the ground truth, its drop from the reference's, and the gates."""
    drops = {name: reference[name] - value for name, value in scores.items() if name in reference}
    result.details["dataset"]["labels"] = {"scores": scores, "reference": reference, "drop": drops}
    for name, bound in max_drop.items():
        if name in drops and drops[name] > bound:
            result.status = FAIL
            why = f"{name} drop {drops[name]:.2%} exceeds {bound:.2%} ({reference[name]:.2%} -> {scores[name]:.2%})"
            result.reason = f"{result.reason}; {why}" if result.reason else why


def dataset_rows(jobs: Sequence[Any], make_runner: Callable[[Any], Runner | None],
                 tolerances_for: Callable[[Any], Mapping[str, Tolerance]]) -> list[
                     tuple[BackendResult, Runner | None, dict[str, Tolerance]]]:
    """The rows a data set judges: those judged on the first sample (pass or fail, with outputs)."""
    rows = []
    for job in jobs:
        result = job.result
        if result is None or result.status not in (PASS, FAIL) or not result.outputs:
            continue
        rows.append((result, make_runner(job), dict(tolerances_for(job))))
    return rows

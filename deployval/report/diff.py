"""`deployval report diff`: what got worse between two releases' JSON reports (a regression gate).

A row is one model (its manifest entry id, or its name), backend, precision and device; its outputs
are matched by name. Flagged as regressions: an error metric that grew by more than `error_growth`
times *and* is above a floor set by the row's own tolerance (so 1e-9 -> 3e-9 is noise, not a
regression), a median latency more than `latency_tolerance` slower (only between reports from the
same kind of machine: device, GPU, CPU model and count), a verdict that flipped from pass to fail or
error, a row or a model that vanished, and a candidate whose work is incomplete (its run did not finish,
a row its gate requires is missing, or shards are missing): what was not checked cannot be called no
regression. An incomplete baseline is a note. Library versions and model or input digests that changed
are listed for information. Pure: it reads two loaded report dicts and returns a `ReportDiff`; rendering is below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..judge.record import FORMAT_VERSION, read_report
from ..judge.results import judge_dict
from ..metric_table import SLICE_JUDGED
from .formatting import fmt, fmt_ms, number

REGRESSION, IMPROVEMENT, INFO = "regression", "improvement", "info"
GOOD, BAD = ("pass", "reference"), ("fail", "error")
# Where a report was made, as far as timing depends on it (device kind, GPU, CPU model and count, architecture).
DEVICE_FIELDS = ("device", "gpu", "cpu", "cpu_count", "machine")
SUITE_ERROR = "__suite_error__"
SUITE = "(suite)"  # the model of a finding about a whole suite report


@dataclass(frozen=True)
class DiffOptions:
    error_growth: float = 2.0  # an error metric must grow by more than this factor ...
    error_floor: float = 0.1  # ... and end above this fraction of the bound the row's tolerance sets on it
    latency_tolerance: float = 0.10  # a median more than 10% slower is a regression

    def __post_init__(self) -> None:
        if not self.error_growth > 1.0 or math.isinf(self.error_growth):
            raise UsageError(f"--error-growth must be a factor above 1 (got {self.error_growth:g})")
        if not 0.0 <= self.error_floor < math.inf:
            raise UsageError(f"--error-floor must be a fraction of the tolerance >= 0 (got {self.error_floor:g})")
        if not 0.0 <= self.latency_tolerance < math.inf:
            raise UsageError(f"--latency-tolerance must be >= 0 (got {self.latency_tolerance:g})")


@dataclass
class Change:
    """One finding: `kind` is regression, improvement or info; `what` the aspect (error, latency,
    verdict, row, model, input, incomplete)."""

    kind: str
    what: str
    model: str
    row: str = ""  # backend:precision@device, empty for a whole model
    output: str = ""
    metric: str = ""
    baseline: Any = None
    candidate: Any = None
    note: str = ""


@dataclass
class VersionChange:
    package: str
    baseline: str | None
    candidate: str | None


@dataclass
class LatencyCheck:
    """Whether one model's latencies were compared, and if not why."""

    model: str
    compared: bool
    reason: str = ""


@dataclass
class ReportDiff:
    baseline: str
    candidate: str
    options: DiffOptions
    changes: list[Change] = field(default_factory=list)
    versions: list[VersionChange] = field(default_factory=list)
    latency: list[LatencyCheck] = field(default_factory=list)
    models: int = 0  # models compared
    rows: int = 0  # rows present in both reports
    notes: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # why the candidate's work is incomplete (regressions)

    def of_kind(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    def compared(self) -> str:
        return (f"{self.rows} row{'s' * (self.rows != 1)} of {self.models} model{'s' * (self.models != 1)} "
                "compared")

    @property
    def regressions(self) -> list[Change]:
        return self.of_kind(REGRESSION)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    @property
    def verdict(self) -> str:
        return "REGRESSION" if self.regressions else "NO REGRESSION"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "diff",
            "format_version": FORMAT_VERSION,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "options": asdict(self.options),
            "compared": {"models": self.models, "rows": self.rows},
            "changes": [asdict(c) for c in self.changes],
            "versions": [asdict(v) for v in self.versions],
            "latency": [asdict(c) for c in self.latency],
            "notes": self.notes,
            "summary": {"verdict": self.verdict, "exit_code": self.exit_code,
                        "counts": {k: len(self.of_kind(k)) for k in (REGRESSION, IMPROVEMENT, INFO)},
                        **({"incomplete": "; ".join(self.incomplete)} if self.incomplete else {})},
        }


def load_report(path: Path) -> dict[str, Any]:
    """A compare/validate or suite JSON report, or a UsageError that says why it cannot be diffed."""
    data = read_report(path)
    kind = data.get("kind")
    if kind not in (None, "suite"):
        raise UsageError(f"report '{path}' is a {kind} report; diff compares compare, validate and suite reports")
    key = "reports" if kind == "suite" else "results"
    if not isinstance(data.get(key), list):
        raise UsageError(f"report '{path}' is not a deployval JSON report (no '{key}' list)")
    for report in data["reports"] if kind == "suite" else [data]:
        problem = _malformed(report)
        if problem:
            raise UsageError(f"report '{path}' is not a well-formed deployval report: {problem}")
    return data


ROW_KEYS = ("backend", "precision", "status")


def _malformed(report: Any) -> str:
    """What in one model's report the diff could not read, or ''."""
    if not isinstance(report, dict) or not isinstance(report.get("results", []), list):
        return "a model report is not an object with a 'results' list"
    for field_name, kind in (("model", dict), ("device", dict), ("versions", dict), ("inputs", list)):
        if field_name in report and not isinstance(report[field_name], kind):
            return f"'{field_name}' is not a{'n' if kind is dict else ''} {'object' if kind is dict else 'list'}"
    if any(not isinstance(item, dict) for item in report.get("inputs", [])):
        return "an entry of 'inputs' is not an object"
    for row in report.get("results", []):
        if not isinstance(row, dict) or any(not isinstance(row.get(k), str) for k in ROW_KEYS):
            return "a row of 'results' lacks its backend, precision or status"
        outputs = row.get("outputs", [])
        if not isinstance(outputs, list) or any(not isinstance(o, dict) or "name" not in o for o in outputs):
            return f"row {row['backend']}:{row['precision']} has outputs without names"
        if not isinstance(row.get("latency") or {}, dict):
            return f"row {row['backend']}:{row['precision']} has a latency that is not an object"
    return ""


def model_id(report: Mapping[str, Any]) -> str:
    """A model report's identity: its manifest entry id, else its model's name."""
    return str(report.get("entry") or (report.get("model") or {}).get("name") or "?")


def models_of(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Model id -> model report; a suite's entries that could not run map to a stub holding the reason."""
    if data.get("kind") != "suite":
        return {model_id(data): dict(data)}
    models = {model_id(r): dict(r) for r in data["reports"]}
    for error in data.get("errors", []):
        models[str(error["entry"])] = {SUITE_ERROR: error.get("reason", ""), "results": []}
    return models


def diff_reports(baseline: Mapping[str, Any], candidate: Mapping[str, Any], options: DiffOptions | None = None, *,
                 names: tuple[str, str] = ("baseline", "candidate")) -> ReportDiff:
    """Compare two loaded reports (each a single model's report or a suite). Raises UsageError when
    they cannot be compared: different format versions, or no model in common."""
    options = options or DiffOptions()
    if str(baseline["format_version"]).split(".")[0] != str(candidate["format_version"]).split(".")[0]:
        raise UsageError(f"cannot compare reports of format {baseline['format_version']} ({names[0]}) and "
                         f"{candidate['format_version']} ({names[1]})")
    base, cand = models_of(baseline), models_of(candidate)
    diff = ReportDiff(baseline=names[0], candidate=names[1], options=options)
    suites = baseline.get("kind") == "suite", candidate.get("kind") == "suite"
    common = [m for m in base if m in cand]
    if not common and suites[0] != suites[1]:  # a compare report's id is its model's name, a suite's its entry
        base, cand = _by_model_name(base, cand) if suites[0] else _by_model_name(cand, base)[::-1]
        common = [m for m in base if m in cand]
    if not common:
        raise UsageError(f"the reports are of different models ({names[0]}: {', '.join(base)}; "
                         f"{names[1]}: {', '.join(cand)})")
    if all(suites):
        for model in base:
            if model not in cand:
                diff.changes.append(Change(REGRESSION, "model", model, note="model vanished from the candidate"))
        for model in cand:
            if model not in base:
                diff.changes.append(Change(INFO, "model", model, note="new model (not in the baseline)"))
    elif any(suites):
        diff.notes.append(f"one report is a suite: only {', '.join(common)} compared")
    _suite_completeness(diff, baseline, candidate)
    for model in common:
        _diff_model(diff, model, base[model], cand[model])
    diff.versions = _version_changes([base[m] for m in common], [cand[m] for m in common])
    return diff


def _by_model_name(suite: dict[str, dict[str, Any]], single: dict[str, dict[str, Any]],
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The suite's one entry whose model has the single report's model name, under the single report's id."""
    (name, report), = single.items()
    model = (report.get("model") or {}).get("name")
    matches = [m for m, r in suite.items() if (r.get("model") or {}).get("name") == model]
    return ({name: suite[matches[0]]}, single) if len(matches) == 1 else (suite, single)


def _diff_model(diff: ReportDiff, model: str, base: dict[str, Any], cand: dict[str, Any]) -> None:
    if SUITE_ERROR in base or SUITE_ERROR in cand:
        if SUITE_ERROR not in base:
            diff.changes.append(Change(REGRESSION, "model", model, baseline="ran", candidate="could not run",
                                       note=cand[SUITE_ERROR]))
        elif SUITE_ERROR not in cand:
            diff.changes.append(Change(IMPROVEMENT, "model", model, baseline="could not run", candidate="ran",
                                       note=base[SUITE_ERROR]))
        return
    diff.models += 1
    _digest_changes(diff, model, base, cand)
    _model_completeness(diff, model, base, cand)
    same_device, why = same_machine(base.get("device") or {}, cand.get("device") or {})
    diff.latency.append(LatencyCheck(model, same_device, why))
    base_rows, cand_rows = _rows(base), _rows(cand)
    for key, row in base_rows.items():
        if key not in cand_rows:
            diff.changes.append(Change(REGRESSION, "row", model, key, baseline=row["status"], candidate="missing",
                                       note="row vanished from the candidate"))
    for key, row in cand_rows.items():
        if key not in base_rows:
            diff.changes.append(Change(INFO, "row", model, key, baseline="missing", candidate=row["status"],
                                       note="new row"))
    for key, b in base_rows.items():
        c = cand_rows.get(key)
        if c is None:
            continue
        diff.rows += 1
        _verdict_change(diff, model, key, b, c)
        _task_change(diff, model, key, b, c)
        _error_changes(diff, model, key, b, c)
        if same_device:
            _latency_change(diff, model, key, b, c)


def _model_completeness(diff: ReportDiff, model: str, base: Mapping[str, Any], cand: Mapping[str, Any]) -> None:
    """An unfinished candidate, or one without a row its gate requires, is a regression; a baseline so, a note."""
    before, after = judge_dict(base), judge_dict(cand)
    if after.unfinished:
        diff.incomplete.append(f"{model}: its run did not finish")
        diff.changes.append(Change(REGRESSION, "incomplete", model, baseline="partial" if before.unfinished else
                                   "complete", candidate="partial", note="the candidate report is partial (its run "
                                   "did not finish): rows it lacks were not checked"))
    for label in after.missing:
        diff.incomplete.append(f"{model}: {label} did not run")
        diff.changes.append(Change(REGRESSION, "incomplete", model, label, candidate="missing",
                                   note=f"the candidate's gate requires {label}; it did not run"))
    if before.unfinished:
        diff.notes.append(f"{model}: the baseline report is partial (its run did not finish)")
    if before.missing:
        diff.notes.append(f"{model}: the baseline lacks rows its gate requires ({', '.join(before.missing)})")


def _suite_completeness(diff: ReportDiff, baseline: Mapping[str, Any], candidate: Mapping[str, Any]) -> None:
    """A candidate suite that did not finish, or that lacks shards the baseline has, is a regression."""
    from ..run.suite import coverage

    if candidate.get("kind") == "suite" and candidate.get("complete") is False:
        diff.incomplete.append("its run did not finish")
        diff.changes.append(Change(REGRESSION, "incomplete", SUITE, candidate="partial",
                                   note="the candidate run did not finish: models it lacks were not checked"))
    if baseline.get("kind") == "suite" and baseline.get("complete") is False:
        diff.notes.append("the baseline run did not finish")
    held = {side: coverage(data, f"the {side} report")
            for side, data in (("baseline", baseline), ("candidate", candidate))}
    cand = held["candidate"]
    if cand is not None:
        count, shards = cand
        base = held["baseline"]
        expected = base[1] if base is not None and base[0] == count else range(1, count + 1)
        lacking = [f"{i}/{count}" for i in expected if i not in shards]
        if lacking:
            diff.incomplete.append(f"shard{'s' * (len(lacking) > 1)} {', '.join(lacking)} missing")
            diff.changes.append(Change(REGRESSION, "incomplete", SUITE, baseline="present", candidate="missing",
                                       note=f"shard{'s' * (len(lacking) > 1)} {', '.join(lacking)} missing from "
                                            "the candidate: their models were not checked"))
    base = held["baseline"]
    if base is not None and (cand is None or cand[0] != base[0]) and len(base[1]) < base[0]:
        diff.notes.append(f"the baseline holds shards {', '.join(f'{i}/{base[0]}' for i in base[1])} only")


def _rows(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for r in report.get("results", []):
        key = f"{r['backend']}:{r['precision']}@{r.get('device', '?')}"
        rows.setdefault(key, r)
    return rows


def same_machine(base: Mapping[str, Any], cand: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether latencies of the two reports can be compared, and if not which field differs."""
    for name in DEVICE_FIELDS:
        if base.get(name) != cand.get(name):
            return False, f"{name} differs ({base.get(name)} vs {cand.get(name)}): latency not compared"
    return True, ""


def _verdict_change(diff: ReportDiff, model: str, key: str, b: Mapping[str, Any], c: Mapping[str, Any]) -> None:
    before, after = b["status"], c["status"]
    if before == after:
        return
    if before in GOOD and after not in GOOD:
        kind, note = REGRESSION, c.get("reason") or ("no longer checked" if after == "skipped" else "")
    elif after in GOOD and before not in GOOD:
        kind, note = IMPROVEMENT, ""
    else:
        kind, note = INFO, c.get("reason", "")
    diff.changes.append(Change(kind, "verdict", model, key, baseline=before, candidate=after, note=note))


def _task_change(diff: ReportDiff, model: str, key: str, b: Mapping[str, Any], c: Mapping[str, Any]) -> None:
    """A task check (--task) that passed and now fails, or now fails on more samples of a data set, is a
    regression whether or not it gates the row (the verdict change says that); the reverse, an improvement."""
    before, after = b.get("task_check"), c.get("task_check")
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return
    def failing(row: Mapping[str, Any], task: Mapping[str, Any]) -> float:
        over = ((row.get("details") or {}).get("dataset") or {}).get("task") or {}
        return float(over.get("failed", 0 if task.get("passed") and not task.get("error") else 1))

    old, new = failing(b, before), failing(c, after)
    if new > old:
        diff.changes.append(Change(REGRESSION, "task", model, key, metric=str(after.get("check")), baseline=old,
                                   candidate=new, note=str(after.get("error") or after.get("reason") or "")))
    elif new < old:
        diff.changes.append(Change(IMPROVEMENT, "task", model, key, metric=str(after.get("check")), baseline=old,
                                   candidate=new))


def _output_metrics(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Output name -> (metrics, tolerance); for a data set run each metric is its worst sample's, as
    the console shows it."""
    over_samples = (result.get("details") or {}).get("dataset", {}).get("outputs", {})
    outputs = {}
    for o in result.get("outputs", []):
        metrics = dict(o.get("metrics") or {})
        for name, values in over_samples.get(o["name"], {}).items():
            if isinstance(values, Mapping) and "worst" in values:
                metrics[name] = values["worst"]
        outputs[o["name"]] = {"metrics": metrics, "tolerance": o.get("tolerance") or {}}
    return outputs


def _bound(tolerance: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Callable[[], float | None]]:
    """Per compared metric, the bound the row's tolerance sets on it (directly, or implied at the
    reference's scale: max_abs <= atol + rtol * max|ref|, rel_l2 ~ rtol + atol / max|ref|, and under a
    rel_l2 bound max_abs ~ rel_l2 * max|ref|); None where the tolerance says nothing about it."""
    tol = {k: number(v) for k, v in tolerance.items()}
    scale = number(metrics.get("ref_abs_max"))
    elementwise = tol.get("atol") is not None or tol.get("rtol") is not None
    atol, rtol = tol.get("atol") or 0.0, tol.get("rtol") or 0.0

    def max_abs() -> float | None:
        if elementwise:
            return atol + rtol * (scale or 0.0)
        return tol["rel_l2"] * scale if tol.get("rel_l2") is not None and scale else None

    def rel_l2() -> float | None:
        if tol.get("rel_l2") is not None:
            return tol["rel_l2"]
        return rtol + atol / scale if elementwise and scale else None

    def cosine() -> float | None:
        return 1.0 - tol["cosine"] if tol.get("cosine") is not None else None

    whole = {"max_abs": max_abs, "rel_l2": rel_l2, "mean_abs": lambda: tol.get("mean_abs"),
             "p99_abs": lambda: tol.get("p99_abs"), "mismatch": lambda: tol.get("mismatch"), "1-cosine": cosine}
    # --slices: the worst slice's statistics, under the bounds the slices are judged by
    sliced = {f"worst_slice_{name}": whole[name]
              for name in (("1-" if m.lower_is_worse else "") + m.name for m in SLICE_JUDGED)}
    return {**whole, **sliced}


def _metric(metrics: Mapping[str, Any], name: str) -> float | None:
    if name.endswith("1-cosine"):
        value = number(metrics.get(name.replace("1-cosine", "cosine")))
        return None if value is None else 1.0 - value
    return number(metrics.get(name))


def _error_changes(diff: ReportDiff, model: str, key: str, b: Mapping[str, Any], c: Mapping[str, Any]) -> None:
    """max_abs and rel_l2 of every output, and each other metric its tolerance bounds (mean_abs, p99_abs,
    mismatch, 1 - cosine), compared where the tolerance gives the metric a bound (the floor's unit)."""
    base_out, cand_out = _output_metrics(b), _output_metrics(c)
    if base_out and cand_out:
        for name in base_out:
            if name not in cand_out:
                diff.changes.append(Change(REGRESSION, "row", model, key, name, baseline="present",
                                           candidate="missing", note="output vanished from the candidate"))
        for name in cand_out:
            if name not in base_out:
                diff.changes.append(Change(INFO, "row", model, key, name, baseline="missing", candidate="present",
                                           note="new output"))
    growth, floor_share = diff.options.error_growth, diff.options.error_floor
    for name, bo in base_out.items():
        co = cand_out.get(name)
        if co is None:
            continue
        bounds = _bound(co["tolerance"], bo["metrics"])
        for metric, bound_of in bounds.items():
            before, after = _metric(bo["metrics"], metric), _metric(co["metrics"], metric)
            bound = bound_of()
            if before is None or after is None or bound is None:
                continue
            floor = floor_share * bound
            bad_before, bad_after = not math.isfinite(before), not math.isfinite(after)
            note = f"floor {fmt(floor)} ({floor_share:g} x bound {fmt(bound)})"
            if bad_after and not bad_before:
                kind, note = REGRESSION, "became non-finite"
            elif bad_before and not bad_after:
                kind, note = IMPROVEMENT, "no longer non-finite"
            elif bad_before or bad_after:
                continue
            elif after > growth * before and after > floor:
                kind = REGRESSION
                note = f"x{after / before:.3g}, {note}" if before > 0 else f"from 0, {note}"
            elif before > growth * after and before > floor:
                kind = IMPROVEMENT
                note = f"x{after / before:.3g}"
            else:
                continue
            diff.changes.append(Change(kind, "error", model, key, name, metric, before, after, note))


def _latency_change(diff: ReportDiff, model: str, key: str, b: Mapping[str, Any], c: Mapping[str, Any]) -> None:
    before = number((b.get("latency") or {}).get("median_ms"))
    after = number((c.get("latency") or {}).get("median_ms"))
    if before is None or after is None or before <= 0:
        return
    change = after / before - 1.0
    tolerance = diff.options.latency_tolerance
    if change > tolerance:
        kind = REGRESSION
    elif change < -tolerance:
        kind = IMPROVEMENT
    else:
        return
    diff.changes.append(Change(kind, "latency", model, key, metric="median_ms", baseline=before, candidate=after,
                               note=f"{change:+.1%} (tolerance {tolerance:.0%})"))


def _digest_changes(diff: ReportDiff, model: str, base: Mapping[str, Any], cand: Mapping[str, Any]) -> None:
    """A changed checkpoint or changed inputs explain a changed error; say so next to it."""
    before, after = (base.get("model") or {}).get("sha256"), (cand.get("model") or {}).get("sha256")
    if before and after and before != after:
        diff.changes.append(Change(INFO, "model", model, metric="sha256", baseline=before[:12], candidate=after[:12],
                                   note="the model's weights changed"))
    b_inputs = [(i.get("name"), i.get("sha256")) for i in base.get("inputs") or []]
    c_inputs = [(i.get("name"), i.get("sha256")) for i in cand.get("inputs") or []]
    if b_inputs != c_inputs:
        diff.changes.append(Change(INFO, "input", model, note="the inputs differ (errors are over other inputs)"))


def _version_changes(base: list[Mapping[str, Any]], cand: list[Mapping[str, Any]]) -> list[VersionChange]:
    def versions(reports: list[Mapping[str, Any]]) -> dict[str, str | None]:
        seen: dict[str, list[str]] = {}
        for report in reports:
            for package, version in (report.get("versions") or {}).items():
                values = seen.setdefault(package, [])
                if version is not None and str(version) not in values:
                    values.append(str(version))
        return {p: ", ".join(v) or None for p, v in seen.items()}

    before, after = versions(base), versions(cand)
    return [VersionChange(p, before.get(p), after.get(p)) for p in [*before, *(p for p in after if p not in before)]
            if before.get(p) != after.get(p)]


# ---- rendering ------------------------------------------------------------------------------------------------


def _value(change: Change, value: Any) -> str:
    if change.what == "latency":
        return f"{fmt_ms(value)} ms"
    return fmt(value) if isinstance(value, float) else ("-" if value is None else str(value))


def _where(change: Change) -> str:
    return " ".join(p for p in (change.row, change.output, change.metric) if p) or "-"


def _ordered(diff: ReportDiff) -> list[Change]:
    order = {REGRESSION: 0, IMPROVEMENT: 1, INFO: 2}
    return sorted(diff.changes, key=lambda c: order[c.kind])


def render_diff(diff: ReportDiff, console: Any | None = None) -> None:
    """The findings as a table (regressions first), what was not compared, the versions, the verdict."""
    from rich.markup import escape
    from rich.table import Table

    from .console import make_console

    console = console or make_console()
    styles = {REGRESSION: "bold red", IMPROVEMENT: "green", INFO: "dim"}
    if diff.changes:
        table = Table(title=f"{diff.baseline} -> {diff.candidate}", title_justify="left")
        for column in ("", "model", "what", "row / output / metric", "baseline", "candidate", "note"):
            table.add_column(column, no_wrap=column not in ("note",))
        for c in _ordered(diff):
            table.add_row(f"[{styles[c.kind]}]{c.kind}[/]", escape(c.model), c.what, escape(_where(c)),
                          escape(_value(c, c.baseline)), escape(_value(c, c.candidate)), escape(c.note))
        console.print(table)
    for check in diff.latency:
        if not check.compared:
            console.print(f"[yellow]{escape(check.model)}:[/] {escape(check.reason)}")
    for note in diff.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    if diff.versions:
        console.print("versions changed: " + escape(", ".join(
            f"{v.package} {v.baseline or '-'} -> {v.candidate or '-'}" for v in diff.versions)))
    style = "red" if diff.exit_code else "green"
    found = {kind: len(diff.of_kind(kind)) for kind in (REGRESSION, IMPROVEMENT)}
    counts = ", ".join(f"{n} {kind}{'s' * (n != 1)}" for kind, n in found.items())
    why = f"; the candidate is incomplete: {'; '.join(diff.incomplete)}" if diff.incomplete else ""
    console.print(f"[{style}]{diff.verdict}[/] ({diff.compared()}; {counts}{escape(why)}) exit code {diff.exit_code}",
                  soft_wrap=True)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def diff_markdown(diff: ReportDiff) -> str:
    """A merge-request comment: the verdict, the regressions, then improvements and the rest folded away."""
    o = diff.options
    lines = [
        f"## deployval report diff — {diff.verdict} (exit {diff.exit_code})",
        "",
        f"`{_cell(diff.baseline)}` → `{_cell(diff.candidate)}`: {diff.compared()} "
        f"(error growth > {o.error_growth:g}x above {o.error_floor:g} of the tolerance, latency > "
        f"{o.latency_tolerance:.0%} on medians).",
        *(["", f"**The candidate is incomplete:** {_cell('; '.join(diff.incomplete))}."] if diff.incomplete else []),
    ]
    header = ["| model | what | row / output / metric | baseline | candidate | note |",
              "| --- | --- | --- | --- | --- | --- |"]

    def table(changes: list[Change]) -> list[str]:
        return header + [f"| {_cell(c.model)} | {c.what} | {_cell(_where(c))} | {_cell(_value(c, c.baseline))} | "
                         f"{_cell(_value(c, c.candidate))} | {_cell(c.note)} |" for c in changes]

    regressions = diff.regressions
    lines += ["", f"### Regressions ({len(regressions)})", ""]
    lines += table(regressions) if regressions else ["None."]
    for kind, title in ((IMPROVEMENT, "Improvements"), (INFO, "Other changes")):
        changes = diff.of_kind(kind)
        if changes:
            lines += ["", f"<details><summary>{title} ({len(changes)})</summary>", "", *table(changes), "",
                      "</details>"]
    skipped = [c for c in diff.latency if not c.compared]
    if skipped:
        lines += ["", *[f"- **{_cell(c.model)}**: {_cell(c.reason)}" for c in skipped]]
    if diff.notes:
        lines += ["", *[f"- {_cell(n)}" for n in diff.notes]]
    if diff.versions:
        lines += ["", "Versions changed:", "", "| package | baseline | candidate |", "| --- | --- | --- |",
                  *[f"| {v.package} | {v.baseline or '-'} | {v.candidate or '-'} |" for v in diff.versions]]
    return "\n".join(lines) + "\n"

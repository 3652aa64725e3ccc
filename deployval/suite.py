"""Many models at once: a manifest run (`deployval validate --all`), optionally one shard of it, and
the merge of shard reports into one verdict (`deployval report merge`).

A suite report is JSON too: the per-model reports exactly as `compare --json` writes them, entries
that could not run, and a summary recomputed from those, so merging shards gives the same verdicts
and counts as one unsharded run.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import DeployvalError, ExitCode, UsageError
from .manifest import Manifest, ManifestEntry
from .record import read_report
from .results import FORMAT_VERSION

# Worst first: an accuracy failure is the strongest finding, then bad input, then "could not run".
SEVERITY = (ExitCode.ACCURACY, ExitCode.USAGE, ExitCode.BACKEND)
VERDICTS = {0: "PASS", 1: "FAIL", 2: "ERROR", 3: "INCOMPLETE"}


def combined_exit_code(codes: Sequence[int]) -> int:
    for code in SEVERITY:
        if int(code) in codes:
            return int(code)
    return 0


def summarize(reports: Sequence[Mapping[str, Any]], errors: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for report in reports:
        for result in report["results"]:
            counts[result["status"]] = counts.get(result["status"], 0) + 1
    code = combined_exit_code([int(r["summary"]["exit_code"]) for r in reports] + [int(e["exit_code"]) for e in errors])
    return {"verdict": VERDICTS[code], "exit_code": code, "models": len(reports) + len(errors), "counts": counts}


def suite_dict(reports: Sequence[Mapping[str, Any]], errors: Sequence[Mapping[str, Any]], *,
               manifest: str | None, shard: str | None) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "kind": "suite",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "manifest": manifest,
        "shard": shard,
        "entries": [r.get("entry") for r in reports] + [e["entry"] for e in errors],
        "reports": list(reports),
        "errors": list(errors),
        "summary": summarize(reports, errors),
    }


def run_manifest(
    manifest: Manifest, entries: Sequence[ManifestEntry], *, run: Callable[..., Any],
    on_report: Callable[[dict[str, Any]], None] | None = None, overrides: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Validate `entries`: every spec is resolved first (a bad entry fails before anything runs),
    then each model runs in turn; a model that cannot run is an error entry, not the end."""
    from .spec import RunConfig

    plans = []
    for entry in entries:
        spec = entry.spec()
        checks = entry.checks(spec)
        plans.append((entry, spec, checks))
    reports, errors = [], []
    for entry, spec, checks in plans:
        settings = {**spec.run_defaults, "device": entry.device, "seed": entry.seed}
        if entry.iterations is not None:
            settings["iterations"] = entry.iterations
        if entry.time_budget is not None:
            settings["time_budget_s"] = entry.time_budget
        settings.update(overrides or {})
        try:
            config = RunConfig(**settings)
            report = run(spec, checks, config, entry)
        except DeployvalError as exc:
            errors.append({"entry": entry.id, "reason": exc.one_line(), "exit_code": int(exc.exit_code)})
            continue
        data = report.to_dict()
        data["entry"] = entry.id
        reports.append(data)
        if on_report is not None:
            on_report(data)
    return reports, errors


def load_reports(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Reports and error entries from JSON files written by `compare`, `validate` or `validate --all`."""
    reports: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for path in paths:
        data = read_report(path)
        items = data["reports"] if data.get("kind") == "suite" else [data]
        for item in items:
            entry = item.get("entry") or item["model"]["name"]
            if entry in seen:
                raise UsageError(f"entry '{entry}' is in both '{seen[entry]}' and '{path}'")
            seen[entry] = Path(path)
            reports.append(item)
        for error in data.get("errors", []) if data.get("kind") == "suite" else []:
            if error["entry"] in seen:
                raise UsageError(f"entry '{error['entry']}' is in both '{seen[error['entry']]}' and '{path}'")
            seen[error["entry"]] = Path(path)
            errors.append(error)
    return reports, errors

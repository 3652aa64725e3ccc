"""Many models at once: a manifest run (`deployval validate --all`), optionally one shard of it, and
the merge of shard reports into one verdict (`deployval report merge`).

A suite report is JSON too: the per-model reports exactly as `compare --json` writes them, entries
that could not run, and a summary recomputed from those, so merging shards gives the same verdicts
and counts as one unsharded run.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog.manifest import Manifest, ManifestEntry, parse_shard
from ..errors import DeployvalError, ExitCode, UsageError
from ..judge.record import read_report
from ..judge.results import FORMAT_VERSION, UNFINISHED, judge_dict

# Worst first: an accuracy failure is the strongest finding, then bad input, then "could not run".
SEVERITY = (ExitCode.ACCURACY, ExitCode.USAGE, ExitCode.BACKEND)
VERDICTS = {0: "PASS", 1: "FAIL", 2: "ERROR", 3: "INCOMPLETE"}


def combined_exit_code(codes: Sequence[int]) -> int:
    for code in SEVERITY:
        if int(code) in codes:
            return int(code)
    return 0


def entry_id(report: Mapping[str, Any]) -> str:
    """A model report's name in a suite: its manifest entry id, else its model's name."""
    return str(report.get("entry") or (report.get("model") or {}).get("name") or "?")


def _error_code(error: Mapping[str, Any]) -> int:
    """An entry that could not run is never a pass: a code it does not state (or states as 0) is 3."""
    try:
        code = int(error.get("exit_code", 3))
    except (TypeError, ValueError):
        return int(ExitCode.BACKEND)
    return code if code in (1, 2, 3) else int(ExitCode.BACKEND)


def summarize(reports: Sequence[Mapping[str, Any]], errors: Sequence[Mapping[str, Any]],
              gaps: Sequence[str] = ()) -> dict[str, Any]:
    """The suite's verdict, recomputed from each model's report (its `complete`, rows and gate; never its
    own summary), its entries that could not run and `gaps`: what the suite as a whole lacks (a run that
    did not finish, missing shards). Any gap makes an otherwise passing suite INCOMPLETE."""
    counts: dict[str, int] = {}
    codes, incomplete, reasons = [], [], list(gaps)
    for report in reports:
        for result in report.get("results") or []:
            counts[result["status"]] = counts.get(result["status"], 0) + 1
        verdict = judge_dict(report)
        codes.append(int(verdict.exit_code))
        if verdict.unfinished or verdict.missing:
            incomplete.append(entry_id(report))
            reasons.append(f"{entry_id(report)}: {verdict.incomplete}")
    codes += [_error_code(e) for e in errors]
    if gaps:
        codes.append(int(ExitCode.BACKEND))
    code = combined_exit_code(codes)
    summary: dict[str, Any] = {"verdict": VERDICTS[code], "exit_code": code, "models": len(reports) + len(errors),
                               "counts": counts}
    if reasons:
        summary["incomplete"] = "; ".join(reasons)
    if incomplete:
        summary["incomplete_models"] = incomplete
    return summary


def manifest_digest(manifest: str | None) -> str | None:
    """The sha256 of the manifest file, so a merge can tell shards of different manifests apart even
    where CI jobs name the same file by different paths."""
    if manifest is None:
        return None
    try:
        return hashlib.sha256(Path(manifest).read_bytes()).hexdigest()
    except OSError:
        return None


def suite_dict(reports: Sequence[Mapping[str, Any]], errors: Sequence[Mapping[str, Any]], *,
               manifest: str | None, shard: str | None, complete: bool = True,
               gaps: Sequence[str] = ()) -> dict[str, Any]:
    """A suite report. `complete=False` for a run still going or cut short (its summary then cannot read
    PASS); `gaps` says what the suite lacks (when not given, an incomplete suite's gap is that its run did
    not finish)."""
    gaps = list(gaps) or ([UNFINISHED] if not complete else [])
    return {
        "format_version": FORMAT_VERSION,
        "kind": "suite",
        "complete": complete,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "manifest": manifest,
        "manifest_sha256": manifest_digest(manifest),
        "shard": shard,
        "entries": [r.get("entry") for r in reports] + [e["entry"] for e in errors],
        "reports": list(reports),
        "errors": list(errors),
        "summary": summarize(reports, errors, gaps),
    }


def run_manifest(
    manifest: Manifest, entries: Sequence[ManifestEntry], *, run: Callable[..., Any],
    on_report: Callable[[dict[str, Any]], None] | None = None, overrides: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Validate `entries`: every spec is resolved first (a bad entry fails before anything runs),
    then each model runs in turn; a model that cannot run is an error entry, not the end."""
    from ..model.spec import RunConfig

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
        settings.update({k: v for k, v in entry.judging().items() if v})
        settings.update(overrides or {})
        if entry.backend_options:  # the command line's --backend-option wins field by field
            given = dict((overrides or {}).get("backend_options") or {})
            settings["backend_options"] = {**given, **{b: {**own, **given.get(b, {})}
                                                       for b, own in entry.backend_options.items()}}
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


@dataclass
class Part:
    """One report file given to a merge: its models, and which shards of which manifest it holds."""

    path: Path
    data: dict[str, Any]
    count: int | None = None  # N of its shards I/N; None for a whole run or a single model's report
    shards: list[int] = field(default_factory=list)

    @property
    def suite(self) -> bool:
        return self.data.get("kind") == "suite"

    def same_manifest(self, other: Part) -> bool:
        """By content where both recorded it (CI jobs may name one file by different paths), else by path."""
        mine, theirs = self.data.get("manifest_sha256"), other.data.get("manifest_sha256")
        if mine and theirs:
            return bool(mine == theirs)
        return bool(self.data.get("manifest") == other.data.get("manifest"))


def coverage(data: Mapping[str, Any], name: str = "the report") -> tuple[int, list[int]] | None:
    """Which shards of how many a suite report holds, (N, [I, ...]): one for `validate --all --shard`,
    those merged for a merge of shards; None for a whole run or a single model's report."""
    if data.get("kind") != "suite":
        return None
    texts = data.get("shards") or ([data["shard"]] if data.get("shard") else [])
    if not isinstance(texts, list) or not texts:
        return None
    try:
        parsed = [parse_shard(str(text)) for text in texts]
    except UsageError:
        raise UsageError(f"{name} records shards {', '.join(map(str, texts))}; expected I/N") from None
    counts = sorted({count for _, count in parsed})
    if len(counts) != 1:
        raise UsageError(f"{name} records shards of different counts ({', '.join(map(str, texts))})")
    return counts[0], sorted(index for index, _ in parsed)


def shard_texts(indices: Sequence[int], count: int) -> list[str]:
    return [f"{index}/{count}" for index in indices]


def read_parts(paths: Sequence[Path]) -> list[Part]:
    parts = []
    for path in paths:
        data = read_report(Path(path))
        held = coverage(data, f"report '{path}'")
        parts.append(Part(Path(path), data, *(held or (None, []))))
    return parts


def _check_shards(parts: Sequence[Part]) -> tuple[int, dict[int, Path]] | None:
    """N and which file holds each shard; refuses shards of different manifests, of different N, and a
    shard given twice. None when no part is a shard."""
    sharded = [p for p in parts if p.count is not None]
    if not sharded:
        return None
    first = sharded[0]
    held: dict[int, Path] = {}
    for part in sharded:
        if part.count != first.count:
            raise UsageError(f"'{first.path}' is a shard of {first.count} and '{part.path}' a shard of {part.count}: "
                             "merge shards of one run")
        if not part.same_manifest(first):
            raise UsageError(f"'{first.path}' and '{part.path}' are shards of different manifests "
                             f"({first.data.get('manifest')}, {part.data.get('manifest')})")
        for index in part.shards:
            if index in held:
                raise UsageError(f"shard {index}/{part.count} is in both '{held[index]}' and '{part.path}'")
            held[index] = part.path
    assert first.count is not None
    return first.count, held


def _collect(parts: Sequence[Part]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every part's model reports and error entries; an entry in two parts is refused."""
    reports: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}

    def claim(entry: str, path: Path) -> None:
        if entry in seen:
            raise UsageError(f"entry '{entry}' is in both '{seen[entry]}' and '{path}'")
        seen[entry] = path

    for part in parts:
        items = part.data.get("reports") if part.suite else [part.data]
        if not isinstance(items, list) or any(not isinstance(i, dict) or not isinstance(i.get("results"), list)
                                              for i in items):
            raise UsageError(f"report '{part.path}' is not a well-formed deployval report (a model report without "
                             "a 'results' list)")
        for item in items:
            claim(entry_id(item), part.path)
            reports.append(item)
        for error in part.data.get("errors") or [] if part.suite else []:
            if not isinstance(error, dict) or "entry" not in error:
                raise UsageError(f"report '{part.path}' has an error entry without its 'entry'")
            claim(str(error["entry"]), part.path)
            errors.append(error)
    return reports, errors


def load_reports(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Reports and error entries from JSON files written by `compare`, `validate` or `validate --all`."""
    return _collect(read_parts(paths))


def merge(paths: Sequence[Path], *, allow_missing_shards: bool = False) -> dict[str, Any]:
    """One suite report from reports of `compare`, `validate` and `validate --all` (shards or not).
    Nothing is taken from a file's own summary: each model's verdict is recomputed. A part that did not
    finish, or a model report that did not, makes the merge INCOMPLETE; so do missing shards, unless
    `allow_missing_shards` (then the summary records which were missing)."""
    parts = read_parts(paths)
    shards = _check_shards(parts)
    reports, errors = _collect(parts)
    unfinished = [p for p in parts if p.suite and p.data.get("complete") is False]
    gaps = [f"'{p.path}': {UNFINISHED}" for p in unfinished]
    missing: list[str] = []
    if shards is not None:
        count, held = shards
        missing = shard_texts([i for i in range(1, count + 1) if i not in held], count)
        if missing and not allow_missing_shards:
            gaps.append(f"shard{'s' * (len(missing) > 1)} {', '.join(missing)} missing (give every shard, or "
                        "--allow-missing-shards)")
    sharded = [p for p in parts if p.count is not None]
    manifest = sharded[0].data.get("manifest") if sharded else None
    suite = suite_dict(reports, errors, manifest=manifest, shard=None, complete=not unfinished, gaps=gaps)
    suite["manifest_sha256"] = sharded[0].data.get("manifest_sha256") if sharded else None
    suite["merged_from"] = [str(p.path) for p in parts]
    if shards is not None:
        suite["shards"] = shard_texts(sorted(shards[1]), shards[0])
        suite["missing_shards"] = missing
        if missing:
            suite["summary"]["missing_shards"] = missing
            suite["summary"]["missing_shards_allowed"] = allow_missing_shards
    return suite

"""The run record: the header every report starts with (what was run, on which model and inputs, where,
with which libraries, when, and whether the report is complete).

`compare`/`validate` reports and `debug` reports used to declare, fill and serialize these fields each
on their own. Both now inherit `RunRecord`, `Session.run_record` fills it, and `record_dict` writes
it, so the JSON headers `report merge` and the renderers read cannot drift apart. Light on purpose
(no numpy, no torch): the debug package imports it at start-up.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

FORMAT_VERSION = "1.0"

R = TypeVar("R", bound="RunRecord")


def read_report(path: Path) -> dict[str, Any]:
    """A compare, validate or suite JSON report this deployval can read, or a UsageError saying why not:
    `report merge` and `report diff` take files from other machines and other releases, so the file's
    format version and the parts every reader indexes are checked here, once."""
    from ..errors import UsageError

    path = Path(path)
    if path.is_char_device() or path.is_block_device():  # /dev/zero would be read forever
        raise UsageError(f"report '{path}' is a device, not a JSON file")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"report '{path}' does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"report '{path}' is a directory, not a JSON file") from None
    except OSError as exc:
        raise UsageError(f"cannot read report '{path}': {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"report '{path}' is not UTF-8 text (byte {exc.start}); JSON reports are UTF-8") from None
    except RecursionError:
        raise UsageError(f"report '{path}' is not a deployval JSON report: it is nested too deeply to read") from None
    except ValueError as exc:
        raise UsageError(f"report '{path}' is not a deployval JSON report: {exc}") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise UsageError(f"report '{path}' is not a deployval JSON report (no format_version)")
    version = _version(data["format_version"])
    ours = _version(FORMAT_VERSION)
    if version is None or version[0] != ours[0]:  # type: ignore[index]
        raise UsageError(f"report '{path}' has format {data['format_version']}; this deployval reads {FORMAT_VERSION}")
    if version > ours:  # type: ignore[operator]
        raise UsageError(f"report '{path}' has format {data['format_version']}, newer than the {FORMAT_VERSION} this "
                         "deployval reads; read it with the deployval that wrote it, or a newer one")
    problem = report_problem(data)
    if problem:
        raise UsageError(f"report '{path}' is not a well-formed deployval report: {problem}")
    return data


ROW_KEYS = ("backend", "precision", "status")


def _version(value: Any) -> tuple[int, int] | None:
    """'1.0' -> (1, 0); None for anything that is not MAJOR.MINOR."""
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def report_problem(data: dict[str, Any]) -> str:
    """What in a report (or suite) the readers of reports would trip over, or '': the kind, every model
    report's name, rows and summary, and each error entry of a suite."""
    kind = data.get("kind")
    if kind not in (None, "suite"):
        return (f"it is a {kind} report; report merge and report diff read compare, validate and suite reports"
                if isinstance(kind, str) else f"'kind' is {kind!r}")
    if kind == "suite":
        reports, errors = data.get("reports"), data.get("errors", [])
        if not isinstance(reports, list) or not isinstance(errors, list):
            return "a suite report needs a 'reports' list and an 'errors' list"
        for error in errors:
            if not (isinstance(error, dict) and isinstance(error.get("entry"), str)
                    and isinstance(error.get("reason", ""), str) and _is_exit_code(error.get("exit_code"))):
                return "an entry of 'errors' lacks its entry, reason or exit code"
    else:
        reports = [data]
    for report in reports:
        problem = _model_report_problem(report)
        if problem:
            return problem
    return ""


def _model_report_problem(report: Any) -> str:
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        return "a model report is not an object with a 'results' list"
    model = report.get("model")
    named = isinstance(model, dict) and isinstance(model.get("name"), str)
    if not isinstance(report.get("entry"), str) and not named:
        return "a model report names no model (no 'entry' and no model.name)"
    for row in report["results"]:
        if not isinstance(row, dict) or any(not isinstance(row.get(k), str) for k in ROW_KEYS):
            return "a row of 'results' lacks its backend, precision or status"
    summary = report.get("summary")
    if not (isinstance(summary, dict) and isinstance(summary.get("verdict"), str)
            and _is_exit_code(summary.get("exit_code"))):
        return "a model report has no summary with its verdict and exit code"
    return ""


def _is_exit_code(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3


def utc_now() -> str:
    """When a record was made, as its JSON writes it (UTC, to the second)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(kw_only=True)
class RunRecord:
    """The header of one run; reports inherit it and add their findings."""

    command: str
    model: dict[str, Any]
    inputs: list[dict[str, Any]]  # each input's spec with its sha256
    seed: int | None
    inputs_source: str
    device: dict[str, Any]
    versions: dict[str, Any]
    complete: bool = False  # False while the run is still adding to its report (partial reports)
    created: str = field(default_factory=utc_now)

    @classmethod
    def from_record(cls: type[R], record: RunRecord, **findings: Any) -> R:
        """A report of this class that starts with `record`'s header (its dicts shared, not copied)."""
        return cls(**record.header_fields(), **findings)

    def header_fields(self) -> dict[str, Any]:
        """The header's fields only, whatever report holds them."""
        return {f.name: getattr(self, f.name) for f in fields(RunRecord)}

    def record_dict(self, kind: str | None = None) -> dict[str, Any]:
        """The header as every report's JSON starts; `kind` marks reports other than compare's."""
        head: dict[str, Any] = {"format_version": FORMAT_VERSION}
        if kind is not None:
            head["kind"] = kind
        return {
            **head,
            "complete": self.complete,
            "created": self.created,
            "command": self.command,
            "versions": self.versions,
            "device": self.device,
            "model": self.model,
            "inputs": self.inputs,
            "seed": self.seed,
            "inputs_source": self.inputs_source,
        }

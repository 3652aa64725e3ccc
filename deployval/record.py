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
    """A JSON report this deployval can read (its format's major version), or a UsageError saying why not."""
    from .errors import UsageError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"report '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read report '{path}': {exc}") from None
    except ValueError as exc:
        raise UsageError(f"report '{path}' is not a deployval JSON report: {exc}") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise UsageError(f"report '{path}' is not a deployval JSON report (no format_version)")
    if str(data["format_version"]).split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise UsageError(f"report '{path}' has format {data['format_version']}; this deployval reads {FORMAT_VERSION}")
    return data


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

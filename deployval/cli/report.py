"""`deployval report merge`: shard reports into one suite report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .grouping import Omit, grouped
from .groups import ReportFiles
from .validate import write_suite

report_app = typer.Typer(help="Work with JSON reports.", no_args_is_help=True, rich_markup_mode=None)


@report_app.command("merge")
@grouped
def report_merge_command(
    reports: Annotated[list[Path], typer.Argument(help="JSON reports (shards of validate --all, or compare/validate).",
                                                  show_default=False, metavar="REPORT")],
    files: Annotated[ReportFiles, Omit("html")],
) -> None:
    """Merge shard reports into one and recompute the overall verdict (its exit code is the merged one)."""
    from ..report.console import render_suite
    from ..suite import load_reports, suite_dict

    files.check()
    merged, errors = load_reports(reports)
    suite = suite_dict(merged, errors, manifest=None, shard=None)
    suite["merged_from"] = [str(p) for p in reports]
    render_suite(suite)
    write_suite(suite, merged, files)
    raise typer.Exit(int(suite["summary"]["exit_code"]))

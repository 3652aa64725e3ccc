"""`deployval report merge`: shard reports into one suite report; `report diff`: release over release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import ReportWriteError
from .grouping import Omit, grouped
from .groups import ReportFiles
from .helptext import HelpfulCommand, examples
from .validate import write_suite

report_app = typer.Typer(help="Work with JSON reports.", no_args_is_help=True, rich_markup_mode=None)


@report_app.command("merge", cls=HelpfulCommand, epilog=examples(
    "deployval report merge shard-*.json --json release.json"))
@grouped
def report_merge_command(
    reports: Annotated[list[Path], typer.Argument(help="JSON reports (shards of validate --all, or compare/validate).",
                                                  show_default=False, metavar="REPORT")],
    files: Annotated[ReportFiles, Omit("html")],
    allow_missing_shards: Annotated[bool, typer.Option(
        "--allow-missing-shards", help="Judge the shards given even when some of the run's shards are missing "
                                       "(the summary records which); without it the merge is INCOMPLETE, exit 3.")
    ] = False,
) -> None:
    """Merge shard reports into one and recompute every verdict from the rows (its exit code is the merged
    one): a report that did not finish, or missing shards, make it INCOMPLETE (exit 3)."""
    from dataclasses import replace

    from ..report.console import render_suite
    from ..run.suite import merge

    files.check()
    suite = merge(reports, allow_missing_shards=allow_missing_shards)
    render_suite(suite)
    failures = []
    if files.junit is not None:  # from the whole suite: its error entries and gaps are failing cases too
        from ..report.junit import write_junit

        try:
            write_junit(suite, files.junit)
        except OSError as exc:
            failures.append(f"cannot write the JUnit report '{files.junit}': {exc.strerror or exc}")
    try:
        write_suite(suite, suite["reports"], replace(files, junit=None))
    except ReportWriteError as exc:
        failures.append(exc.message)
    if failures:
        raise ReportWriteError("; ".join(failures))
    raise typer.Exit(int(suite["summary"]["exit_code"]))


@report_app.command("diff", cls=HelpfulCommand, epilog=examples(
    "deployval report diff last-release.json this-release.json --markdown diff.md"))
@grouped
def report_diff_command(
    baseline: Annotated[Path, typer.Argument(help="The last release's JSON report (compare, validate or a suite).",
                                             show_default=False, metavar="BASELINE")],
    candidate: Annotated[Path, typer.Argument(help="This release's JSON report, of the same model(s).",
                                              show_default=False, metavar="CANDIDATE")],
    files: Annotated[ReportFiles, Omit("junit", "html")],
    error_growth: Annotated[float, typer.Option(
        "--error-growth", help="An error metric that grew by more than this factor is a regression (when it is "
                               "also above --error-floor).")] = 2.0,
    error_floor: Annotated[float, typer.Option(
        "--error-floor", help="Ignore error growth below this fraction of the bound the row's own tolerance sets "
                              "on the metric (so 1e-9 -> 3e-9 is not a regression).")] = 0.1,
    latency_tolerance: Annotated[str, typer.Option(
        "--latency-tolerance", help="A median latency slower by more than this is a regression (10% or 0.1); "
                                    "compared only between reports from the same kind of machine (device, GPU, "
                                    "CPU model and count).")] = "10%",
) -> None:
    """Compare two releases' reports: exit 1 on a regression (error growth, slower median, a verdict that
    flipped to fail, a vanished row), 0 otherwise, 2 when they cannot be compared."""
    from .._util import atomic_write_json, atomic_write_text
    from ..report.diff import DiffOptions, diff_markdown, diff_reports, load_report, render_diff

    files.check()
    options = DiffOptions(error_growth=error_growth, error_floor=error_floor,
                          latency_tolerance=_fraction(latency_tolerance, "--latency-tolerance"))
    diff = diff_reports(load_report(baseline), load_report(candidate), options,
                        names=(str(baseline), str(candidate)))
    render_diff(diff)
    if files.json_path is not None:
        atomic_write_json(files.json_path, diff.to_dict())
    if files.markdown is not None:
        atomic_write_text(files.markdown, diff_markdown(diff))
    raise typer.Exit(diff.exit_code)


def _fraction(text: str, option: str) -> float:
    """'10%' or '0.1' as 0.1."""
    from ..errors import UsageError

    try:
        return float(text[:-1]) / 100.0 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"{option} must be a fraction or a percentage such as 10% (got '{text}')") from None

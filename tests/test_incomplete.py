"""Work that did not finish never passes: a partial report (a run cut short, a gated row that never ran)
is INCOMPLETE in its own summary and in every rendering; `report merge` recomputes each report's verdict
and is INCOMPLETE without every shard; `report diff` calls an incomplete candidate a regression.

Reports are real (`compare convs`, `validate --all --shard` on a small manifest); partial ones are made
the way a Ctrl-C leaves them (`complete: false`, the rows not yet run absent), and one is captured from
the pipeline's own partial write."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_line_error
from corpus_incomplete import MANIFEST, cut_short, write

from deployval.debug.report import DebugReport
from deployval.judge.results import ERROR, FAIL, PASS, REFERENCE, SKIPPED, BackendResult, Report, judge_dict

HEADER = dict(command="deployval compare convs", model={"name": "convs"}, inputs=[], seed=0,
              inputs_source="random (seed 0)", device={"device": "cpu"}, versions={})


def labels(report: dict[str, Any]) -> list[str]:
    return [f"{r['backend']}:{r['precision']}" for r in report["results"]]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """convs through torch and ONNX Runtime at fp32 and fp16, through the CLI."""
    from deployval.cli import main

    path = tmp_path_factory.mktemp("incomplete") / "r.json"
    assert main(["compare", "convs", "--backends", "torch,ort", "--precisions", "fp32,fp16", "--iterations", "1",
                 "--json", str(path), "-q"]) == 0
    report = json.loads(path.read_text())
    assert report["complete"] is True and report["summary"]["verdict"] == "PASS"
    assert labels(report) == ["torch:fp32", "torch:fp16", "ort:fp32", "ort:fp16"]
    return report


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both shards of a two-model manifest, from `validate --all --shard I/2`."""
    from deployval.cli import main

    tmp = tmp_path_factory.mktemp("shards")
    (tmp / "deployval.toml").write_text(MANIFEST)
    paths = {}
    for index in (1, 2):
        paths[f"s{index}"] = tmp / f"s{index}.json"
        assert main(["validate", "--all", "--manifest", str(tmp / "deployval.toml"), "--shard", f"{index}/2",
                     "--json", str(paths[f"s{index}"]), "-q"]) == 0
    return paths


def merged(cli, tmp_path: Path, *reports: Path, options: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    out = tmp_path / "merged.json"
    out.unlink(missing_ok=True)
    result = cli("report", "merge", *reports, "--json", out, *options)
    return result, json.loads(out.read_text()) if out.exists() else {}


def last_line(text: str) -> str:
    return [ln for ln in text.splitlines() if ln.strip()][-1]


# ---- a report's own verdict --------------------------------------------------------------------------------


def test_a_report_still_being_filled_is_incomplete_in_its_own_summary():
    """The pipeline's partial writes come from this very object before `complete` is set."""
    report = Report(**HEADER, results=[BackendResult("torch", "fp32", "cpu", REFERENCE),
                                       BackendResult("ort", "fp32", "cpu", PASS)])
    assert not report.complete and report.exit_code == 3 and report.verdict == "INCOMPLETE" and not report
    assert report.to_dict()["summary"] == {"verdict": "INCOMPLETE", "exit_code": 3,
                                           "counts": {"reference": 1, "pass": 1},
                                           "incomplete": "the run did not finish"}
    report.results.append(BackendResult("ort", "fp16", "cpu", FAIL))
    assert report.verdict == "INCOMPLETE"  # whatever its rows say: the rest could have failed, or the end
    report.complete = True
    assert report.exit_code == 1 and "incomplete" not in report.to_dict()["summary"]
    report.results.pop()
    assert report.exit_code == 0 and report.verdict == "PASS" and report


def test_a_gated_row_missing_from_a_finished_report_is_incomplete():
    rows = [BackendResult("torch", "fp32", "cpu", REFERENCE), BackendResult("ort", "fp32", "cpu", PASS)]
    report = Report(**HEADER, complete=True, gate=["torch:fp32", "ort", "ort:fp16"], results=rows)
    summary = report.to_dict()["summary"]
    assert (summary["verdict"], summary["exit_code"]) == ("INCOMPLETE", 3)
    assert summary["incomplete"] == "the gate's ort:fp16 did not run"
    report.results.append(BackendResult("ort", "fp16", "cpu", ERROR, "unavailable"))
    assert report.to_dict()["summary"]["incomplete"] == "ort:fp16 could not run" and report.exit_code == 3
    report.results[-1] = BackendResult("ort", "fp16", "cpu", PASS)
    assert report.exit_code == 0  # 'ort' in a gate means ort:fp32, as the pipeline plans it


def test_a_finished_report_that_judged_nothing_is_incomplete():
    """Only the reference and skipped rows: nothing was compared, so nothing may pass."""
    rows = [BackendResult("ort", "fp32", "cpu", REFERENCE), BackendResult("torchscript", "int8", "cpu", SKIPPED)]
    report = Report(**HEADER, complete=True, results=rows)
    summary = report.to_dict()["summary"]
    assert (summary["verdict"], summary["exit_code"]) == ("INCOMPLETE", 3)
    assert summary["incomplete"].startswith("nothing was judged") and report.judged().gap == summary["incomplete"]
    assert Report(**HEADER, complete=True, results=[]).exit_code == 3
    report.results.append(BackendResult("ort", "fp16", "cpu", FAIL))
    assert report.exit_code == 1 and not report.judged().nothing_judged
    report.results[-1] = BackendResult("ort", "fp16", "cpu", PASS)
    assert report.exit_code == 0


def test_a_usage_error_row_is_recomputed_from_the_json(real):
    data = copy.deepcopy(real)
    data["results"][2].update(status="error", usage_error=True)
    assert int(judge_dict(data).exit_code) == 2
    data["results"][2]["usage_error"] = False
    assert int(judge_dict(data).exit_code) == 3
    del data["complete"]  # a report that does not say it is complete is not
    assert judge_dict(data).unfinished


def test_an_unfinished_debug_report_is_incomplete():
    report = DebugReport(**HEADER, backend="ort", precision="fp16")
    assert (report.verdict, int(report.exit_code)) == ("INCOMPLETE", 3)
    assert report.to_dict()["summary"]["incomplete"] == "the run did not finish"
    report.complete = True
    assert (report.verdict, int(report.exit_code)) == ("PASS", 0)


def test_the_pipelines_partial_report_is_incomplete_everywhere(tmp_path, cli):
    """The first report `pipeline.compare` hands `on_progress` (what a Ctrl-C after the reference
    leaves): INCOMPLETE in its JSON, on the console, in Markdown, JUnit and HTML, and in a merge."""
    from rich.console import Console

    from deployval.catalog.registry import resolve_model
    from deployval.model.spec import RunConfig
    from deployval.report.console import render
    from deployval.report.html import render_html
    from deployval.report.junit import to_junit
    from deployval.report.markdown import to_markdown
    from deployval.run.pipeline import compare

    snapshots: list[dict[str, Any]] = []
    objects: list[Report] = []

    def on_progress(report: Report) -> None:
        if not snapshots and report.results:  # the first partial report that holds a row
            snapshots.append(report.to_dict())
            objects.append(copy.copy(report))

    final = compare(resolve_model("convs"), ("torch", "ort"), ("fp32",), RunConfig(iterations=1),
                    on_progress=on_progress)
    assert final.complete and final.verdict == "PASS"
    first = snapshots[0]
    assert first["complete"] is False and labels(first) == ["torch:fp32"]
    assert first["summary"]["verdict"] == "INCOMPLETE" and first["summary"]["exit_code"] == 3
    assert first["summary"]["incomplete"] == "the run did not finish"

    console = Console(record=True, width=200)
    partial = objects[0]
    partial.results = partial.results[:1]
    render(partial, console)
    assert last_line(console.export_text()).startswith("INCOMPLETE (1 reference; the run did not finish) exit code 3")
    assert "INCOMPLETE (exit 3)" in to_markdown(first) and "the run did not finish" in to_markdown(first)
    root = ET.fromstring(to_junit(first))
    assert int(root.get("errors")) >= 1 and root.find(".//error[@type='Incomplete']") is not None
    page = render_html(first)
    assert 'class="verdict v-INCOMPLETE"' in page and "exit code 3" in page and "did not finish" in page

    result, data = merged(cli, tmp_path, write(tmp_path, "first.json", first))
    assert result.code == 3 and data["summary"]["incomplete_models"] == ["convs"]


# ---- report merge ------------------------------------------------------------------------------------------


def test_merge_of_a_reference_only_partial_report_is_incomplete(cli, tmp_path, real):
    result, data = merged(cli, tmp_path, write(tmp_path, "p.json", cut_short(real, 1)), options=("--junit",
                                                                                                 tmp_path / "m.xml"))
    assert result.code == 3, result.out
    assert last_line(result.out) == "INCOMPLETE (1 model; incomplete: convs: the run did not finish) exit code 3"
    assert data["summary"]["verdict"] == "INCOMPLETE" and data["summary"]["incomplete"] == (
        "convs: the run did not finish")
    root = ET.parse(tmp_path / "m.xml").getroot()  # <testsuites> has no counts in the Ant schema
    assert sum(int(s.get("errors")) for s in root) == 1 and root.find(".//testcase[@name='complete']/error") is not None


def test_merge_never_trusts_a_stored_summary(cli, tmp_path, real):
    failing = copy.deepcopy(real)
    failing["results"][3]["status"] = "fail"  # its summary still says PASS
    result, data = merged(cli, tmp_path, write(tmp_path, "f.json", failing))
    assert result.code == 1 and data["summary"]["verdict"] == "FAIL"
    assert "FAIL" in result.out.split("convs", 1)[1].splitlines()[0]  # the model's own line too

    passing = copy.deepcopy(real)
    passing["summary"] = {**passing["summary"], "verdict": "FAIL", "exit_code": 1}
    result, _ = merged(cli, tmp_path, write(tmp_path, "p.json", passing))
    assert result.code == 0


def test_merge_of_a_report_whose_gated_fp16_row_never_ran_is_incomplete(cli, tmp_path, shards):
    suite = json.loads(shards["s2"].read_text())
    (report,) = suite["reports"]
    assert report["gate"] == ["torch:fp32", "ort:fp32", "ort:fp16"] and "ort:fp16" in labels(report)
    report["results"] = [r for r in report["results"] if r["precision"] != "fp16"]
    result, data = merged(cli, tmp_path, shards["s1"], write(tmp_path, "s2.json", suite))
    assert result.code == 3
    assert data["summary"]["incomplete"] == "convs-b: the gate's ort:fp16 did not run"
    assert "ort:fp16 (gate, did not run)" in result.out


def test_merge_of_one_shard_alone_is_incomplete_unless_allowed(cli, tmp_path, shards):
    result, data = merged(cli, tmp_path, shards["s1"], options=("--markdown", tmp_path / "m.md"))
    assert result.code == 3
    assert "shard 2/2 missing" in last_line(result.out) and "--allow-missing-shards" in last_line(result.out)
    assert data["shards"] == ["1/2"] and data["missing_shards"] == ["2/2"]
    assert data["summary"]["missing_shards"] == ["2/2"] and data["summary"]["verdict"] == "INCOMPLETE"
    assert "INCOMPLETE (exit 3)" in (tmp_path / "m.md").read_text()

    result, data = merged(cli, tmp_path, shards["s1"], options=("--allow-missing-shards",))
    assert result.code == 0 and "2/2 missing, allowed" in last_line(result.out)
    assert data["summary"]["missing_shards"] == ["2/2"] and data["summary"]["missing_shards_allowed"] is True

    result, data = merged(cli, tmp_path, shards["s2"], shards["s1"], options=("--junit", tmp_path / "all.xml"))
    assert result.code == 0 and data["shards"] == ["1/2", "2/2"] and data["missing_shards"] == []
    assert data["manifest"] == json.loads(shards["s1"].read_text())["manifest"]
    assert sum(int(s.get("errors")) for s in ET.parse(tmp_path / "all.xml").getroot()) == 0


def test_merging_the_merge_of_missing_shards_with_the_rest_completes_it(cli, tmp_path, shards):
    first = tmp_path / "first.json"
    assert cli("report", "merge", shards["s1"], "--allow-missing-shards", "--json", first).code == 0
    result, data = merged(cli, tmp_path, first, shards["s2"])
    assert result.code == 0 and data["shards"] == ["1/2", "2/2"]


def test_merge_refuses_shards_that_do_not_belong_together(cli, tmp_path, shards):
    s1, s2 = json.loads(shards["s1"].read_text()), json.loads(shards["s2"].read_text())
    assert_one_line_error(cli("report", "merge", shards["s1"], shards["s1"]), 2, "shard 1/2 is in both")
    other_count = write(tmp_path, "s2of3.json", {**s2, "shard": "2/3"})
    assert_one_line_error(cli("report", "merge", shards["s1"], other_count), 2, "a shard of 2 and")
    other_manifest = write(tmp_path, "other.json", {**s2, "manifest_sha256": "0" * 64, "manifest": "other.toml"})
    assert_one_line_error(cli("report", "merge", shards["s1"], other_manifest), 2, "shards of different manifests")
    bad = write(tmp_path, "bad.json", {**s1, "shard": "3/2"})
    assert_one_line_error(cli("report", "merge", bad), 2, "expected I/N")


def test_a_shard_that_did_not_finish_makes_the_merge_incomplete(cli, tmp_path, shards):
    s2 = json.loads(shards["s2"].read_text())
    cut = write(tmp_path, "s2cut.json", {**s2, "complete": False, "reports": [], "entries": []})
    result, data = merged(cli, tmp_path, shards["s1"], cut, options=("--junit", tmp_path / "m.xml"))
    assert result.code == 3 and data["complete"] is False
    assert data["summary"]["incomplete"] == f"'{cut}': the run did not finish"
    root = ET.parse(tmp_path / "m.xml").getroot()
    assert root.find("testsuite[@name='deployval.run.suite']/testcase[@name='complete']/error") is not None


# ---- report diff -------------------------------------------------------------------------------------------


def diffed(cli, tmp_path: Path, baseline: Path, candidate: Path) -> tuple[Any, dict[str, Any]]:
    out = tmp_path / "diff.json"
    out.unlink(missing_ok=True)
    result = cli("report", "diff", baseline, candidate, "--json", out)
    return result, json.loads(out.read_text()) if out.exists() else {}


def test_diff_calls_an_incomplete_candidate_a_regression(cli, tmp_path, real):
    full = write(tmp_path, "full.json", real)
    partial = write(tmp_path, "partial.json", cut_short(real, 4))  # every row there; the run's end was not
    result, data = diffed(cli, tmp_path, full, partial)
    assert result.code == 1
    assert [(c["kind"], c["what"]) for c in data["changes"]] == [("regression", "incomplete")]
    assert data["summary"]["incomplete"] == "convs: its run did not finish"
    assert "the candidate is incomplete: convs: its run did not finish" in last_line(result.out)

    result, data = diffed(cli, tmp_path, partial, full)  # an incomplete baseline is a note
    assert result.code == 0 and "the baseline report is partial" in data["notes"][0]

    gated = copy.deepcopy(real)
    gated["gate"] = ["torch:fp32", "ort:fp32", "ort:fp16"]
    base = write(tmp_path, "gated.json", gated)
    gated["results"] = gated["results"][:3]
    result, data = diffed(cli, tmp_path, base, write(tmp_path, "nofp16.json", gated))
    assert result.code == 1 and data["summary"]["incomplete"] == "convs: ort:fp16 did not run"


def test_diff_calls_a_candidate_missing_shards_a_regression(cli, tmp_path, shards):
    whole = tmp_path / "whole.json"
    assert cli("report", "merge", shards["s1"], shards["s2"], "--json", whole).code == 0
    result, data = diffed(cli, tmp_path, whole, shards["s1"])
    assert result.code == 1 and data["summary"]["incomplete"] == "shard 2/2 missing"
    allowed = tmp_path / "allowed.json"
    assert cli("report", "merge", shards["s1"], "--allow-missing-shards", "--json", allowed).code == 0
    result, data = diffed(cli, tmp_path, whole, allowed)
    assert result.code == 1 and data["summary"]["incomplete"] == "shard 2/2 missing"
    result, _ = diffed(cli, tmp_path, shards["s1"], shards["s1"])  # shard against the same shard: complete
    assert result.code == 0

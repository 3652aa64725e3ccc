"""torch.compile rows: compiled at the first call (its time reported apart from latency), judged like any
row, and a graph break (a part run eagerly) said in the row."""

from __future__ import annotations

import json

import pytest

from deployval.backends.torch_compile import TorchCompileRunner

available, why = TorchCompileRunner.available("cpu")
needs_compile = pytest.mark.skipif(not available, reason=why)


def _rows(path) -> dict[tuple[str, str], dict]:
    return {(r["backend"], r["precision"]): r for r in json.loads(path.read_text())["results"]}


@needs_compile
def test_a_compiled_row_reports_its_compile_time_and_its_graph_breaks(cli, tmp_path):
    report = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:breaks_the_graph", "--input-shape", "x=2x8", "--backends",
                 "torch,compile", "--iterations", "3", "--json", report, "-q")
    assert result.code == 0, result.out + result.err
    row = _rows(report)[("compile", "fp32")]
    assert row["status"] == "pass" and row["outputs"][0]["metrics"]["max_abs"] < 1e-5
    details = row["details"]
    assert details["compile_s"] > 0 and details["graph_breaks"] >= 1 and details["graphs"] >= 2, details
    assert any("torch.compile broke the graph" in w for w in row["warnings"]), row["warnings"]
    # the compile is the first call: the timed runs that follow are not slowed by it
    assert row["latency"]["median_ms"] < 1000 * details["compile_s"]


@needs_compile
@pytest.mark.slow
def test_compiled_rows_at_every_half_precision_match_eager(cli, tmp_path):
    report = tmp_path / "r.json"
    assert cli("compare", "convs", "--backends", "torch,compile", "--precisions", "fp32,fp16,bf16",
               "--iterations", "1", "--json", report, "-q").code == 0
    rows = _rows(report)
    for precision in ("fp16", "bf16"):
        compiled = rows[("compile", precision)]["outputs"][0]["metrics"]["rel_l2"]
        eager = rows[("torch", precision)]["outputs"][0]["metrics"]["rel_l2"]
        assert compiled == pytest.approx(eager, rel=0.5), (precision, compiled, eager)
    assert rows[("compile", "fp32")]["details"]["graph_breaks"] == 0

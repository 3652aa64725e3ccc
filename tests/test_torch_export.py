"""torch.export -> AOTInductor rows (.pt2 packages compiled for the run's shapes, cached like any artifact)
and torch.export.save archives accepted as MODEL."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error

from deployval.backends.torch_export import TorchExportRunner

available, why = TorchExportRunner.available("cpu")
needs_aoti = pytest.mark.skipif(not available, reason=why)


def _report(path) -> dict:
    return json.loads(path.read_text())


def _row(report: dict, backend: str, precision: str = "fp32") -> dict:
    return next(r for r in report["results"] if (r["backend"], r["precision"]) == (backend, precision))


@needs_aoti
def test_an_aoti_package_is_built_once_judged_and_served_from_the_cache(cli, tmp_path):
    args = ("compare", "dv_test_models:tiny_conv", "--input-shape", "x=1x3x16x16", "--backends", "torch,export",
            "--iterations", "2", "--cache-dir", tmp_path / "cache", "-q")
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert cli(*args, "--json", first).code == 0
    row = _row(_report(first), "export")
    assert row["status"] == "pass" and row["outputs"][0]["metrics"]["max_abs"] < 1e-5, row
    assert row["artifact"]["path"].endswith("model.pt2")
    step = next(s for s in _report(first)["steps"] if s["name"] == "aoti")
    assert step["status"] == "ok" and not step["cached"] and step["details"]["compile_s"] > 0
    assert cli(*args, "--json", second).code == 0
    step = next(s for s in _report(second)["steps"] if s["name"] == "aoti")
    assert step["cached"], step


def test_an_export_that_fails_is_a_row_with_torch_exports_own_reason(cli, tmp_path):
    report = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:breaks_the_graph", "--input-shape", "x=2x8", "--backends", "torch,export",
                 "--iterations", "1", "--json", report, "-q")
    assert result.code == 3, result.out + result.err
    row = _row(_report(report), "export")
    assert row["status"] == "error" and "artifact 'pt2' could not be made: torch.export failed:" in row["reason"]


@pytest.fixture
def exported_program(tmp_path):
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(module, (torch.randn(1, 3, 16, 16),)), str(path))
    return path


def test_a_torch_export_archive_is_a_model_with_its_inputs_read_from_the_program(cli, tmp_path, exported_program):
    report = tmp_path / "r.json"
    result = cli("compare", exported_program, "--backends", "torch,ort", "--iterations", "1", "--json", report, "-q")
    assert result.code == 0, result.out + result.err
    data = _report(report)
    assert [(i["name"], i["shape"], i["dtype"]) for i in data["inputs"]] == [("input", [1, 3, 16, 16], "float32")]
    assert _row(data, "ort")["status"] == "pass"
    assert_one_line_error(cli("compare", exported_program, "--input-shape", "input=1x3x16", "-q"), 2,
                          "the program takes a rank-4 input (1x3x16x16)")


@needs_aoti
def test_an_aoti_package_given_as_the_model_says_what_to_give_instead(cli, tmp_path):
    assert cli("compare", "dv_test_models:tiny_conv", "--input-shape", "x=1x3x8x8", "--backends", "torch,export",
               "--iterations", "1", "--cache-dir", tmp_path / "cache", "-q").code == 0
    package = next((tmp_path / "cache").rglob("model.pt2"))
    assert_one_line_error(cli("compare", package, "-q"), 2, "is an AOTInductor package (compiled code, no program")


@needs_aoti
@pytest.mark.slow
def test_aoti_packages_at_every_half_precision_match_eager(cli, tmp_path):
    report = tmp_path / "r.json"
    assert cli("compare", "convs", "--backends", "torch,export", "--precisions", "fp32,fp16,bf16", "--iterations",
               "1", "--json", report, "-q").code == 0
    data = _report(report)
    for precision in ("fp16", "bf16"):
        aoti = _row(data, "export", precision)["outputs"][0]["metrics"]["rel_l2"]
        eager = _row(data, "torch", precision)["outputs"][0]["metrics"]["rel_l2"]
        assert aoti == pytest.approx(eager, rel=0.5), (precision, aoti, eager)


def test_int8_is_skipped_saying_where_pt2e_quantization_went():
    import importlib.util

    supported, reason = TorchExportRunner.supports("int8", "cpu")
    assert not supported and "torchao" in reason
    # the reason stays true only while torch itself has no PT2E quantization
    assert importlib.util.find_spec("torch.ao.quantization.quantize_pt2e") is None

"""--shape-grid: one export with dynamic axes, every row judged at every shape; --batch-invariance:
copies of one input in a batch must get the same outputs."""

from __future__ import annotations

import json

import onnx
import pytest
from conftest import assert_one_line_error

from deployval.catalog.registry import resolve_model
from deployval.model.shape_grid import ShapeGrid

GRID = ("image=1x3x32x32,2x3x48x64,1x3x16x16",)


def test_every_row_is_judged_at_every_shape_of_one_dynamic_export(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "srcnn", "--shape-grid", *GRID, "--batch-invariance", "--backends",
                 "torch,torchscript,ort", "--iterations", "1", "--cache-dir", tmp_path / "cache", "--json",
                 report_path, "-q")
    assert result.code == 0, result.out + result.err
    report = json.loads(report_path.read_text())
    labels = ["image=1x3x32x32", "image=2x3x48x64", "image=1x3x16x16"]
    assert report["analysis"]["dataset"]["shape_grid"] == labels and report["samples"] == 3
    for row in report["results"][1:]:
        per_shape = {w["sample"]: w["passed"] for w in row["details"]["dataset"]["worst"]}
        assert per_shape == dict.fromkeys(labels, True), row["backend"]
        assert row["details"]["batch_invariance"]["identical"], row["backend"]
    ort = next(r for r in report["results"] if r["backend"] == "ort")
    dims = onnx.load(ort["artifact"]["path"]).graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]  # batch, height, width vary


def test_the_grid_spans_the_profile_and_only_varying_dimensions_are_dynamic():
    spec = resolve_model("srcnn")
    grid = ShapeGrid.parse(list(GRID), spec)
    assert grid.dynamic_axes() == {"image": {0: "image_dim0", 2: "image_dim2", 3: "image_dim3"}}
    applied = grid.apply(spec, batch=4)
    [image] = applied.inputs
    assert image.shape == (1, 3, 32, 32) and image.min_shape == (1, 3, 16, 16) and image.max_shape == (4, 3, 48, 64)
    assert applied.export.dynamic_axes == grid.dynamic_axes(batch=True)


def test_a_batch_that_mixes_items_fails_the_row(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:position_dependent", "--input-shape", "x=1x3x8x8", "--batch-invariance",
                 "--backends", "torch,ort", "--iterations", "1", "--no-cache", "--json", report_path, "-q")
    assert result.code == 1, result.out + result.err
    report = json.loads(report_path.read_text())
    [ort] = [r for r in report["results"] if r["backend"] == "ort"]
    assert ort["status"] == "fail" and "batch invariance: copy 2 of 4" in ort["reason"]
    assert not report["analysis"]["dataset"]["batch_invariance"]["reference"]["identical"]


@pytest.mark.parametrize("args, message", [
    (("--shape-grid", "image=1x3x32x32,1x3x64x64", "--shape-grid", "image=1x3x8x8"), "given twice"),
    (("--shape-grid", "x=1x3x32x32"), "has no input 'x'"),
    (("--shape-grid", "image=1x3x32x32,1x3x32"), "same rank"),
    (("--shape-grid", "image=1x3x32x32", "--input-shape", "image=1x3x32x32"), "alone defines the shapes"),
])
def test_bad_grids_are_one_line_errors(cli, args, message):
    assert_one_line_error(cli("compare", "srcnn", *args, "-q"), 2, message)


def test_a_shape_the_network_cannot_take_is_refused_before_any_work(cli):
    result = cli("compare", "fine_organs", "--shape-grid", "input=1x1x16x32x32,1x1x17x32x32", "-q")
    assert_one_line_error(result, 2, "17")

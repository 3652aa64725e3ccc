"""Worst-slice metrics (--slices): a detector-style output holding pixel-scale boxes beside 0..1 scores
passes a whole-tensor norm while its scores moved by 20 %; judged slice by slice, it fails on the worst."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_line_error

from deployval.errors import UsageError
from deployval.judge.metrics import compare_output
from deployval.judge.slices import SliceSpec
from deployval.model.spec import Tolerance

MODEL = "dv_test_models:boxes_and_scores"
SHAPE = ["--input-shape", "x=1x3x32x32"]


@pytest.mark.parametrize("text, output, axis, groups", [
    ("output0:1=0:4,4:", "output0", 1, ((0, 4), (4, None))),
    ("Identity:0:2", "Identity:0", 2, None),
    ("y:-1=3,5:7", "y", -1, ((3, 4), (5, 7))),
])
def test_slices_parse_and_print_back(text, output, axis, groups):
    spec = SliceSpec.parse(text)
    assert (spec.output, spec.axis, spec.groups) == (output, axis, groups)
    assert SliceSpec.parse(spec.text) == spec


@pytest.mark.parametrize("text, says", [("y", "expected NAME:AXIS"), ("y:a", "not an integer"),
                                        ("y:1=4:2", "empty or negative"), ("y:1=a", "not START:STOP")])
def test_bad_slices_are_one_line(text, says):
    with pytest.raises(UsageError, match=says):
        SliceSpec.parse(text)


def _detections(rng: np.random.Generator) -> np.ndarray:
    boxes = rng.uniform(0, 640, (1, 4, 100))
    scores = rng.uniform(0, 1, (1, 6, 100))
    return np.concatenate([boxes, scores], axis=1).astype(np.float32)


def test_a_slice_the_norm_hides_fails_the_output():
    ref = _detections(np.random.default_rng(0))
    cand = ref.copy()
    cand[:, 4:] *= 0.8  # every score down by 20 %
    tolerance = Tolerance(rel_l2=0.05)
    whole = compare_output("output", ref, cand, tolerance)
    assert whole.passed and whole.metrics["rel_l2"] < 0.05
    sliced = compare_output("output", ref, cand, tolerance, slices=[SliceSpec.parse("output:1=0:4,4:")])
    assert not sliced.passed
    assert sliced.failures == [f"slice 1[4:10] rel_l2 {0.2:.3g} exceeds 0.05"]
    assert [s["passed"] for s in sliced.slices] == [True, False]
    assert sliced.metrics["worst_slice_rel_l2"] == pytest.approx(0.2, rel=1e-5)
    per_index = compare_output("output", ref, cand, tolerance, slices=[SliceSpec("output", 1)])
    assert len(per_index.slices) == 10 and "and 5 other slices" in per_index.failures[0]


@pytest.fixture
def golden(cli, tmp_path):
    """The model's inputs and outputs, and a copy of those outputs with every score 20 % lower."""
    assert cli("compare", MODEL, *SHAPE, "--backends", "torch", "--save-inputs", tmp_path / "in.npz",
               "--save-outputs", tmp_path / "gold.npz", "-q").code == 0
    with np.load(tmp_path / "gold.npz") as data:
        moved = {k: data[k].copy() for k in data.files}
    moved["output"][:, 4:] *= 0.8
    np.savez(tmp_path / "moved.npz", **moved)
    return tmp_path


def test_the_worst_slice_gates_the_row_and_every_report_shows_it(cli, golden):
    args = ["compare", MODEL, *SHAPE, "--backends", "torch", "--inputs", golden / "in.npz", "--expected",
            golden / "moved.npz", "--tolerance", "rel_l2=0.05", "--iterations", "1"]
    assert cli(*args, "-q").code == 0  # the whole tensor's norm: boxes dominate
    reports = {"--json": golden / "r.json", "--html": golden / "r.html", "--junit": golden / "r.xml"}
    result = cli(*args, "--slices", "output:1=0:4,4:", *[x for kv in reports.items() for x in kv], "-q")
    assert result.code == 1, result.out + result.err
    row = json.loads(reports["--json"].read_text())["results"][0]
    assert row["status"] == "fail" and "slice 1[4:10] rel_l2 0.25 exceeds 0.05" in row["reason"]  # against 0.8x
    output = row["outputs"][0]
    assert [s["slice"] for s in output["slices"]] == ["1[0:4]", "1[4:10]"]
    assert output["metrics"]["worst_slice_rel_l2"] == pytest.approx(0.25, rel=1e-4)
    assert "--slices output:1=0:4,4:" in row["reproduce"]
    assert "Errors per slice" in reports["--html"].read_text() and "1[4:10]" in reports["--html"].read_text()
    assert "slice 1[4:10]" in reports["--junit"].read_text()


def test_report_diff_names_a_worst_slice_that_grew(cli, golden):
    base = ["compare", MODEL, *SHAPE, "--backends", "torch", "--inputs", golden / "in.npz", "--tolerance",
            "rel_l2=0.5", "--slices", "output:1=0:4,4:", "--iterations", "1", "-q"]
    assert cli(*base, "--expected", golden / "gold.npz", "--json", golden / "a.json").code == 0
    assert cli(*base, "--expected", golden / "moved.npz", "--json", golden / "b.json").code == 0
    result = cli("report", "diff", golden / "a.json", golden / "b.json", "--json", golden / "d.json")
    assert result.code == 1, result.out + result.err
    changes = json.loads((golden / "d.json").read_text())["changes"]
    assert any(c.get("metric") == "worst_slice_rel_l2" and c["kind"] == "regression" for c in changes), changes


def test_data_set_runs_aggregate_the_worst_slice(cli, tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    for i in range(2):
        np.save(data / f"s{i}.npy", np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32))
    path = tmp_path / "r.json"
    result = cli("compare", MODEL, "--dataset", data, "--backends", "ort", "--precisions", "fp32,fp16",
                 "--slices", "output:1=0:4,4:", "--iterations", "1", "--json", path, "-q")
    assert result.code == 0, result.out + result.err
    row = next(r for r in json.loads(path.read_text())["results"] if r["precision"] == "fp16")
    worst = row["details"]["dataset"]["outputs"]["output"]["worst_slice_rel_l2"]
    assert worst["worst"] >= worst["mean"] > 0


@pytest.mark.parametrize("value, says", [("logits:1", "the model has no output 'logits'"),
                                         ("output:3", "has 3 axes"), ("output:1=8:12", "outside axis 1")])
def test_slices_that_do_not_fit_the_outputs_are_one_line(cli, value, says):
    assert_one_line_error(cli("compare", MODEL, *SHAPE, "--backends", "torch,ort", "--slices", value,
                              "--iterations", "1", "-q"), 2, says)

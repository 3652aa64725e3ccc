"""Golden outputs: `compare --save-outputs` writes the reference's outputs; `compare --expected` judges
every row against them (for an ONNX or TorchScript file, in place of the reference run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_line_error


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """convs' inputs, its reference outputs and its exported ONNX, made once by the CLI."""
    from deployval.cli import main

    root = tmp_path_factory.mktemp("golden")
    assert main(["compare", "convs", "--backends", "torch", "--save-inputs", str(root / "in.npz"),
                 "--save-outputs", str(root / "gold.npz"), "--quiet"]) == 0
    assert main(["export", "convs", "--out", str(root / "export"), "--quiet"]) == 0
    return root


def test_saved_outputs_are_the_reference_outputs_with_their_inputs_digest(golden):
    from deployval.catalog.registry import resolve_model
    from deployval.run.golden import INPUTS_KEY
    from deployval.run.session import Session

    with np.load(golden / "gold.npz") as data:
        saved = {name: data[name] for name in data.files}
    assert set(saved) == {"y", INPUTS_KEY}
    inputs = dict(np.load(golden / "in.npz"))
    session = Session(resolve_model("convs"), inputs=inputs)
    np.testing.assert_array_equal(saved["y"], session.reference_outputs["y"])
    assert json.loads(str(saved[INPUTS_KEY]))["sha256"] == session.inputs_digest


def test_the_console_says_where_the_inputs_and_outputs_went(cli, tmp_path):
    inputs, outputs = tmp_path / "in.npz", tmp_path / "gold.npz"
    result = cli("compare", "convs", "--backends", "torch", "--save-inputs", inputs, "--save-outputs", outputs, "-q")
    assert result.code == 0, result.err
    text = " ".join(result.out.split())
    assert f"inputs saved to {inputs} (replay with --inputs)" in text
    assert f"reference outputs saved to {outputs} (judge later with --expected {outputs})" in text


def test_round_trip_judges_every_row_including_torch(cli, golden, tmp_path):
    out = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "torch,ort", "--inputs", golden / "in.npz",
                 "--expected", golden / "gold.npz", "--json", out)
    assert result.code == 0, result.out + result.err
    data = json.loads(out.read_text())
    rows = {r["backend"]: r for r in data["results"]}
    assert rows["torch"]["status"] == "pass"  # today's torch judged against the saved outputs, not the reference
    assert rows["torch"]["outputs"][0]["metrics"]["max_abs"] == 0.0
    assert rows["ort"]["status"] == "pass"
    assert data["analysis"]["expected_outputs"] == {"path": str(golden / "gold.npz"), "replaces_reference_run": False}
    assert "--expected" in rows["ort"]["reproduce"]
    assert "judged against the expected outputs" in " ".join(result.out.split())  # the title may wrap


def perturbed(golden, tmp_path, scale: float):
    with np.load(golden / "gold.npz") as data:
        arrays = {name: data[name] for name in data.files}
    arrays["y"] = arrays["y"] * scale
    path = tmp_path / "perturbed.npz"
    np.savez(path, **arrays)
    return path


def test_outputs_that_moved_fail_every_row(cli, golden, tmp_path):
    out = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "torch,ort", "--inputs", golden / "in.npz",
                 "--expected", perturbed(golden, tmp_path, 1.05), "--json", out)
    assert result.code == 1
    data = json.loads(out.read_text())
    assert {r["backend"]: r["status"] for r in data["results"]} == {"torch": "fail", "ort": "fail"}


@pytest.mark.parametrize("artifact", ["model.onnx", "model.ts"])
def test_a_file_is_judged_against_the_expected_outputs_without_a_reference_run(cli, golden, tmp_path, artifact):
    backends = "ort" if artifact.endswith(".onnx") else "torchscript"
    model = golden / "export" / artifact
    out = tmp_path / "r.json"
    result = cli("compare", model, "--backends", backends, "--inputs", golden / "in.npz",
                 "--expected", golden / "gold.npz", "--json", out)
    assert result.code == 0, result.out + result.err
    data = json.loads(out.read_text())
    assert data["analysis"]["expected_outputs"]["replaces_reference_run"] is True
    assert "reference_s" not in data["timings"]  # nothing ran as the reference
    assert [r["status"] for r in data["results"]] == ["pass"]  # the fp32 row is judged, not the reference
    result = cli("compare", model, "--backends", backends, "--inputs", golden / "in.npz",
                 "--expected", perturbed(golden, tmp_path, 1.05))
    assert result.code == 1


def test_expected_outputs_of_other_inputs_are_refused(cli, golden):
    result = cli("compare", "convs", "--backends", "ort", "--seed", "7", "--expected", golden / "gold.npz")
    assert_one_line_error(result, 2, "was computed from other inputs")


def test_expected_outputs_with_other_names_are_refused(cli, golden):
    result = cli("compare", golden / "export" / "model.onnx", "--backends", "ort", "--inputs", golden / "in.npz",
                 "--expected", golden / "in.npz")
    assert_one_line_error(result, 2, "lacks 'y'")


@pytest.mark.parametrize("args, message", [
    (("--expected", "TMP/missing.npz"), "does not exist"),
    (("--save-outputs", "TMP/out.npy"), "use a .npz file name"),
    (("--save-outputs", "TMP/out.npz", "--expected", "GOLD"), "give one"),
    (("--expected", "GOLD", "--batch-invariance"), "do not combine"),
])
def test_bad_golden_options_are_one_line(cli, golden, tmp_path, args, message):
    args = tuple(a.replace("GOLD", str(golden / "gold.npz")).replace("TMP", str(tmp_path)) for a in args)
    result = cli("compare", "convs", "--backends", "ort", "--inputs", golden / "in.npz", *args)
    assert_one_line_error(result, 2, message)


def test_the_python_api_takes_golden_outputs(golden, tmp_path):
    from deployval import api

    inputs = golden / "in.npz"
    report = api.compare(golden / "export" / "model.onnx", inputs=inputs, expected=golden / "gold.npz")  # ort
    assert report and report.results[0].status == "pass"
    assert report.analysis["expected_outputs"]["replaces_reference_run"] is True
    report = api.compare("convs", backends=("torch",), inputs=inputs, save_outputs=tmp_path / "again.npz")
    with np.load(tmp_path / "again.npz") as again, np.load(golden / "gold.npz") as gold:
        np.testing.assert_array_equal(again["y"], gold["y"])


def test_outputs_named_like_savez_arguments_round_trip(tmp_path):
    from deployval.run.golden import load_expected, save_outputs

    outputs = {"file": np.arange(3, dtype=np.float32), "allow_pickle": np.ones((2, 2), np.float16)}
    save_outputs(tmp_path / "g.npz", outputs, "abc")
    loaded = load_expected(tmp_path / "g.npz", "abc")
    assert list(loaded) == ["file", "allow_pickle"]
    for name, value in outputs.items():
        np.testing.assert_array_equal(loaded[name], value)
        assert loaded[name].dtype == value.dtype


def test_golden_files_are_checked_before_any_work(cli, golden, tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3, np.float32))
    result = cli("compare", "convs", "--backends", "ort", "--inputs", golden / "in.npz", "--expected",
                 tmp_path / "one.npy")
    assert_one_line_error(result, 2, "not an .npz file of named outputs")
    result = cli("compare", "convs", "--backends", "ort", "--save-outputs", tmp_path, "--save-inputs",
                 tmp_path / "case.npz")
    assert_one_line_error(result, 2, "use a .npz file name")
    assert not (tmp_path / "case.npz").exists()  # nothing written by a run that was refused
    (tmp_path / "dir.npz").mkdir()
    result = cli("compare", "convs", "--backends", "ort", "--save-outputs", tmp_path / "dir.npz")
    assert_one_line_error(result, 2, "is a directory")
    assert "reference run" not in result.out + result.err  # refused before the model ran
    result = cli("compare", "hyperprior", "--backends", "ort", "--submodule", "all", "--expected", golden / "gold.npz")
    assert_one_line_error(result, 2, "one model's outputs")

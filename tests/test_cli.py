"""End to end through the command line, on the small zoo models and the test models."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import assert_one_line_error


def test_compare_convs_writes_metrics_and_latency(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "torch,torchscript,ort", "--precisions", "fp32",
                 "--json", report_path, "--quiet")
    assert result.code == 0, result.err
    report = json.loads(report_path.read_text())
    assert report["format_version"] == "1.0" and report["complete"] is True
    assert report["summary"] == {"verdict": "PASS", "exit_code": 0, "counts": {"reference": 1, "pass": 2}}
    rows = {r["backend"]: r for r in report["results"]}
    for backend in ("torchscript", "ort"):
        metrics = rows[backend]["outputs"][0]["metrics"]
        assert {"max_abs", "mean_abs", "rel_l2", "max_rel", "cosine", "sqnr_db"} <= set(metrics)
        assert metrics["max_abs"] < 1e-4
        latency = rows[backend]["latency"]
        assert latency["iterations"] >= 1 and latency["median_ms"] > 0 and latency["p99_ms"] >= latency["median_ms"]
        assert rows[backend]["reproduce"].startswith("deployval compare convs --backends")
    assert rows["torch"]["status"] == "reference" and rows["torch"]["latency"]["median_ms"] > 0
    assert rows["torchscript"]["outputs"][0]["metrics"]["max_abs"] == 0.0  # the traced module is eager's code
    assert report["inputs"][0]["shape"] == [1, 3, 32, 32] and report["seed"] == 0
    assert {s["name"] for s in report["steps"]} >= {"torchscript", "export-onnx", "check", "simplify"}
    assert "convs" in result.out and "PASS" in result.out


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_export_only_defect_fails_and_names_the_output(cli, tmp_path, exporter):
    report_path = tmp_path / "trap.json"
    result = cli("compare", "dv_test_models:export_trap", "--input-shape", "x=1x3x16x16", "--backends", "torch,ort",
                 "--exporter", exporter, "--json", report_path, "--quiet")
    assert result.code == 1, result.err
    report = json.loads(report_path.read_text())
    ort = next(r for r in report["results"] if r["backend"] == "ort")
    assert ort["status"] == "fail"
    failing = [o["name"] for o in ort["outputs"] if not o["passed"]]
    assert failing == ["output_0"]  # the head output; the stem mean (output_1) is untouched
    assert "output_0" in ort["reason"]
    assert "ort:fp32" in result.out and "output_0" in result.out
    export_step = next(s for s in report["steps"] if s["name"] == "export-onnx")
    assert export_step["details"]["exporter"] == exporter


def test_int64_model_runs_int32_onnx_identically(tmp_path, cli):
    import onnx

    from deployval.export.onnx_io import run_onnxruntime

    out = tmp_path / "tagger"
    result = cli("export", "tagger", "--out", out, "--kinds", "onnx,onnx-int32", "--quiet")
    assert result.code == 0, result.err
    original, cast = onnx.load(out / "model.onnx"), onnx.load(out / "model.int32.onnx")
    assert [i.type.tensor_type.elem_type for i in original.graph.input] == [onnx.TensorProto.INT64]
    assert [i.type.tensor_type.elem_type for i in cast.graph.input] == [onnx.TensorProto.INT32]
    assert not any(init.data_type == onnx.TensorProto.INT64 for init in cast.graph.initializer)
    tokens = np.random.default_rng(5).integers(0, 1000, size=(1, 32), dtype=np.int64)
    a = run_onnxruntime(out / "model.onnx", {"tokens": tokens})
    b = run_onnxruntime(out / "model.int32.onnx", {"tokens": tokens.astype(np.int32)})
    assert np.array_equal(a["logits"], b["logits"])
    assert np.array_equal(a["tags"], b["tags"].astype(np.int64))
    assert b["tags"].dtype == np.int32


def test_out_of_range_int64_constant_is_refused(cli, tmp_path):
    result = cli("export", "dv_test_models:big_offset", "--input-shape", "ids=1x4:int64", "--kinds", "onnx-int32",
                 "--out", tmp_path / "big", "--quiet")
    assert_one_line_error(result, 2, "outside int32")
    assert "1099511627776" in result.err


def test_tagger_fp32_passes_on_all_backends(cli):
    result = cli("compare", "tagger", "--backends", "torch,torchscript,ort", "--quiet")
    assert result.code == 0, result.out + result.err
    assert "tags" in result.out and "0.000% differ" in result.out


def test_save_and_replay_inputs(cli, tmp_path):
    saved = tmp_path / "inputs.npz"
    first = tmp_path / "first.json"
    second = tmp_path / "second.json"
    assert cli("compare", "convs", "--backends", "torch,ort", "--seed", "7", "--save-inputs", saved,
               "--json", first, "-q").code == 0
    assert cli("compare", "convs", "--backends", "torch,ort", "--inputs", saved, "--json", second, "-q").code == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["inputs"][0]["sha256"] == b["inputs"][0]["sha256"]
    assert b["inputs_source"] == str(saved) and b["seed"] is None
    assert a["results"][1]["outputs"][0]["metrics"] == b["results"][1]["outputs"][0]["metrics"]


def test_junit_and_markdown_reports(cli, tmp_path):
    junit, markdown = tmp_path / "r.xml", tmp_path / "r.md"
    result = cli("compare", "dv_test_models:two_inputs", "--input-shape", "features=2x4",
                 "--input-shape", "ids=2x3:int64", "--input-range", "ids=0,20", "--backends", "torch,torchscript,ort",
                 "--junit", junit, "--markdown", markdown, "-q")
    assert result.code == 0, result.err
    suite = ET.parse(junit).getroot()
    names = {(c.get("classname").split(".")[-2], c.get("name")) for c in suite.iter("testcase")}
    assert ("ort", "scores") in names and ("ort", "best") in names  # one case per backend x output
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    text = markdown.read_text()
    assert "| ort | fp32 | PASS | scores |" in text and "PASS (exit 0)" in text


def test_onnx_file_model_uses_onnxruntime_as_reference(cli, tmp_path):
    out = tmp_path / "convs"
    assert cli("export", "convs", "--out", out, "--kinds", "onnx-raw", "-q").code == 0
    report_path = tmp_path / "onnx.json"
    result = cli("compare", out / "exported.onnx", "--backends", "ort", "--precisions", "fp32,fp16",
                 "--json", report_path, "-q")
    assert result.code == 0, result.err
    report = json.loads(report_path.read_text())
    assert [r["status"] for r in report["results"]] == ["reference", "pass"]
    assert report["results"][1]["faithful"] is False  # fp16 on ORT's CPU provider
    assert "not faithful" in report["results"][1]["warnings"][0]
    # Without --backends an ONNX file runs on ort (torch cannot run it) ...
    result = cli("compare", out / "exported.onnx", "--precisions", "fp32,fp16", "--json", report_path, "-q")
    assert result.code == 0, result.err
    assert [r["backend"] for r in json.loads(report_path.read_text())["results"]] == ["ort", "ort"]
    # ... and its CPU release gate, ort fp32, is the reference itself: it judges nothing, so it is refused.
    assert_one_line_error(cli("validate", out / "exported.onnx"), 2, "judges nothing on cpu")


def test_torchscript_file_model_exports_with_the_legacy_exporter(cli, tmp_path):
    out = tmp_path / "ts"
    assert cli("export", "convs", "--out", out, "--kinds", "torchscript", "-q").code == 0
    report_path = tmp_path / "ts.json"
    result = cli("compare", out / "model.ts", "--input-shape", "x=1x3x32x32", "--backends", "torch,torchscript,ort",
                 "--json", report_path, "-q")
    assert result.code == 0, result.err
    report = json.loads(report_path.read_text())
    export_step = next(s for s in report["steps"] if s["name"] == "export-onnx")
    assert export_step["details"]["exporter"] == "legacy"
    assert "legacy" in export_step["reason"]


def test_validate_runs_the_gate(cli, tmp_path):
    report_path = tmp_path / "gate.json"
    result = cli("validate", "convs", "--json", report_path, "-q")
    assert result.code == 0, result.err
    report = json.loads(report_path.read_text())
    assert report["gate"] == ["torch:fp32", "torchscript:fp32", "ort:fp32"]
    assert [f"{r['backend']}:{r['precision']}" for r in report["results"]] == report["gate"]


def test_second_run_uses_the_cache_and_a_damaged_entry_is_rebuilt(cli, tmp_path):
    cache = tmp_path / "cache"
    args = ("compare", "srcnn", "--input-shape", "image=1x3x32x32", "--backends", "torch,torchscript,ort",
            "--iterations", "1", "--cache-dir", cache, "-q")
    first, second, third = tmp_path / "1.json", tmp_path / "2.json", tmp_path / "3.json"
    assert cli(*args, "--json", first).code == 0
    assert cli(*args, "--json", second).code == 0
    steps = {s["name"]: s for s in json.loads(second.read_text())["steps"]}
    assert steps["export-onnx"]["cached"] and steps["simplify"]["cached"] and steps["torchscript"]["cached"]
    model_file = next(cache.glob("srcnn-*/model.onnx"))
    model_file.write_bytes(model_file.read_bytes()[:-100])  # truncated on disk
    assert cli(*args, "--json", third).code == 0
    steps = {s["name"]: s for s in json.loads(third.read_text())["steps"]}
    assert not steps["simplify"]["cached"] and steps["export-onnx"]["cached"]


def test_no_cache_leaves_nothing_behind(cli, tmp_path):
    cache = tmp_path / "unused"
    assert cli("compare", "convs", "--backends", "torch,ort", "--no-cache", "--cache-dir", cache, "-q").code == 0
    assert not cache.exists()


def test_simplification_that_changes_outputs_is_dropped(cli, tmp_path, monkeypatch):
    """A simplifier bug (planted: one weight changed) must be caught by the verification."""
    from onnx import numpy_helper

    from deployval.export import simplify

    real = simplify.simplify_onnx

    def broken(model):
        simplified, details = real(model)
        weight = next(i for i in simplified.graph.initializer if len(i.dims) == 4)
        array = numpy_helper.to_array(weight).copy()
        array.flat[0] += 0.5
        weight.CopyFrom(numpy_helper.from_array(array, weight.name))
        return simplified, details

    monkeypatch.setattr(simplify, "simplify_onnx", broken)
    report_path = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "torch,ort", "--no-cache", "--json", report_path, "-q")
    assert result.code == 0, result.err  # the unsimplified model is kept, and it is correct
    report = json.loads(report_path.read_text())
    step = next(s for s in report["steps"] if s["name"] == "simplify")
    assert step["status"] == "fail" and "keeping the unsimplified model" in step["reason"]
    # The ORT fp32 row judged the simplified model, failed, was blamed on the simplifier and ran again.
    assert "after the ort fp32 row failed" in step["details"]["verification"]["by"]
    ort = next(r for r in report["results"] if r["backend"] == "ort")
    assert ort["status"] == "pass" and "ran the unsimplified model" in ort["warnings"][0]
    # Without an fp32 row to judge it, the build verifies the simplification itself.
    result = cli("compare", "convs", "--backends", "ort", "--precisions", "fp16", "--no-cache", "--json",
                 report_path, "-q")
    step = next(s for s in json.loads(report_path.read_text())["steps"] if s["name"] == "simplify")
    assert step["status"] == "fail" and "by" not in step["details"]["verification"]


def test_simplification_is_verified_by_the_ort_row_and_then_cached(cli, tmp_path):
    cache, first, second = tmp_path / "cache", tmp_path / "1.json", tmp_path / "2.json"
    args = ("compare", "convs", "--backends", "torch,ort", "--cache-dir", cache, "-q")
    assert cli(*args, "--json", first).code == 0
    step = next(s for s in json.loads(first.read_text())["steps"] if s["name"] == "simplify")
    assert step["details"]["verification"]["status"] == "ok"
    assert step["details"]["verification"]["by"] == "the ort fp32 row, against the reference"
    assert cli(*args, "--json", second).code == 0
    assert next(s for s in json.loads(second.read_text())["steps"] if s["name"] == "simplify")["cached"]
    # Other inputs: the entry was verified on the first inputs only, so it is built (and judged) again.
    assert cli(*args, "--seed", "3", "--json", second).code == 0
    assert not next(s for s in json.loads(second.read_text())["steps"] if s["name"] == "simplify")["cached"]


def test_unsupported_combination_is_skipped_not_failed(cli):
    result = cli("compare", "convs", "--backends", "torch,torchscript", "--precisions", "fp32,int8", "-q")
    assert result.code == 0
    assert "torchscript:int8 skipped" in result.out


def test_plain_python_api():
    import deployval

    report = deployval.compare("convs", backends=["torch", "ort"], precisions=["fp32", "fp16"])
    assert report and report.exit_code == 0
    ort16 = report.result("ort", "fp16")
    assert ort16 and not ort16.faithful
    assert ort16.outputs[0].metrics["rel_l2"] < 1e-2


def test_help_is_fast_and_imports_no_heavy_library():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "deployval", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "compare" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not {"torch", "numpy", "onnx", "onnxruntime"} & imported


@pytest.mark.parametrize("command", ["compare", "validate", "precision", "export", "debug", "models", "backends",
                                     "report merge", "report diff"])
def test_every_commands_help_groups_its_options_names_its_values_and_shows_examples(cli, command):
    result = cli(*command.split(), "--help")
    assert result.code == 0
    text = result.out
    assert "<list[" not in text and "<str>" not in text and "<int>" not in text and "{" not in text.splitlines()[0]
    assert "\nOptions:\n" not in text  # one flat list is what the panels replace
    examples = text.split("Examples:\n", 1)[1].split("\n")
    assert examples[0].strip().startswith(f"deployval {command}")


@pytest.mark.parametrize(("option", "message"), [
    ("--onnxrt", "No such option: --onnxrt (see"),  # click alone offered --worst
    ("--jsn", "No such option: --jsn (did you mean --json?)"),
])
def test_an_unknown_option_suggests_only_options_that_look_like_it(cli, option, message):
    assert_one_line_error(cli("compare", "convs", option, "x"), 2, message)


def test_progress_numbers_the_rows_and_the_samples(cli, tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    for i in range(3):
        np.save(data / f"s{i}.npy", np.random.default_rng(i).random((1, 3, 32, 32)).astype(np.float32))
    result = cli("compare", "convs", "--backends", "torch,torchscript,ort", "--dataset", data, "--iterations", "1")
    assert result.code == 0, result.err
    steps = [line for line in result.err.splitlines() if line.startswith("✓")]
    assert any(line.startswith("✓ row 1 of 2: loading torchscript fp32") for line in steps), steps
    assert any(line.startswith("✓ row 2 of 2: timing ort fp32") for line in steps), steps
    assert any(line.startswith("✓ sample 3 of 3: s2.npy") for line in steps), steps


def test_a_shape_of_the_wrong_rank_is_refused_before_any_work(cli):
    assert_one_line_error(cli("compare", "fine_organs", "--input-shape", "input=1x1x96x160"), 2,
                          "--input-shape input=1x1x96x160: 'fine_organs' takes a rank-5 input (1x1x96x160x160), "
                          "not rank 4")


def test_compare_help_shows_its_panels_in_the_order_a_user_needs_them(cli):
    text = cli("compare", "--help").out
    panels = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert panels == ["Arguments", "Model and inputs", "Backends and precisions", "Tolerances and task checks",
                      "int8 and fp16", "Timing", "Data sets", "Reports", "Cache and isolation", "Compare options"]
    inputs = text.split("Model and inputs:")[1].split("Backends and precisions:")[0]
    assert "--input-shape NAME=SHAPE[:DTYPE]" in inputs and "--expected FILE.npz" in inputs
    assert "--dataset DIR" in text.split("Data sets:")[1]


def test_tolerance_option_replaces_the_models_bounds_for_every_row(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "ort", "--tolerance", "rel_l2=1e-9", "--json", report_path, "-q")
    assert result.code == 1
    [row] = json.loads(report_path.read_text())["results"]
    assert row["outputs"][0]["tolerance"] == {"rel_l2": 1e-9}  # fp32's atol/rtol are not in it
    assert "--tolerance rel_l2=1e-09" in row["reproduce"]
    result = cli("compare", "convs", "--backends", "ort", "--tolerance", "rel_l2=1e-3, cosine=0.9999999",
                 "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    [row] = json.loads(report_path.read_text())["results"]
    assert "--tolerance rel_l2=0.001,cosine=0.9999999" in row["reproduce"]  # every digit of a bound kept
    assert_one_line_error(cli("compare", "convs", "--tolerance", "rel_l2=big"), 2, "rel_l2 needs a number")

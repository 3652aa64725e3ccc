"""`deployval debug`: planted defects are localized to the right module by both exporters, mark()
reaches code hooks cannot see (and leaves the deployable export alone), triage names the export or
the runtime, streaming gives the same numbers as one run, and the command keeps the exit-code contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT, assert_one_line_error

from deployval.catalog.registry import resolve_model
from deployval.debug.run import run_debug
from deployval.model.arguments import parse_input_shape
from deployval.model.spec import RunConfig

EXPORTERS = ["dynamo", "legacy"]


def debug(model: str, shape: str, exporter: str = "dynamo", precision: str = "fp32", **kwargs):
    spec = resolve_model(model, input_shapes=[parse_input_shape(shape)])
    return run_debug(spec, "ort", precision, RunConfig(exporter=exporter), **kwargs)


@pytest.fixture
def debug_cli(cli):
    """The CLI with `debug` registered (a no-op: deployval/cli/__init__.py registers it itself)."""
    from deployval.cli import app
    from deployval.cli.debug import debug_command

    if not any(c.name == "debug" for c in app.registered_commands):
        app.command("debug")(debug_command)
    return cli


# ----------------------------------------------------------------------------- localization


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize(("model", "shape", "first", "new_in", "kind"), [
    # a leaf layer computes something else (channel order of a folded normalization)
    ("debug_models:conv_stack", "x=1x3x16x16", "features.4", "features.4", "layer"),
    # the defect is in attention's own code between qkv and proj: proj diverges first, inheriting it
    ("debug_models:tiny_transformer", "x=1x12x8", "blocks.1.attn.proj", "blocks.1.attn", "module-code"),
    # an upsampling layer (align_corners) in the middle of a U-Net with folded BatchNorms
    ("debug_models:tiny_unet", "x=1x1x16x16", "decoder.up", "decoder.up", "layer"),
])
def test_planted_defect_is_localized(exporter, model, shape, first, new_in, kind):
    report = debug(model, shape, exporter)
    assert report.exit_code == 1
    assert report.first_divergent == first, [(r.label, r.status) for r in report.layers]
    assert report.localized is not None and report.localized.label == new_in and report.localized.kind == kind
    assert report.triage is not None and report.triage.verdict == "export", report.triage
    # everything before the first divergent layer passes, and its own error is what makes it fail
    order = [r.label for r in report.layers]
    assert all(r.status in ("pass", "unmapped", "vanished") for r in report.layers[:order.index(first)])
    culprit = report.layer(new_in)
    assert culprit.own is not None and culprit.own.get("passed") is False
    assert report.map_source.startswith("dynamo" if exporter == "dynamo" else "legacy")


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize(("model", "shapes"), [
    ("convs", []),
    ("tagger", []),  # int64 ids, embeddings, argmax output
    # two same-shape outputs, an activation merged into Clip
    ("deployval.catalog.zoo.hyperprior:build", ["x=1x3x64x64"]),
    ("dv_test_models:two_inputs", ["features=2x4", "ids=2x3:int64"]),
])
def test_correct_models_pass(model, shapes, exporter):
    from deployval.catalog.registry import apply_ranges

    spec = resolve_model(model, input_shapes=[parse_input_shape(s) for s in shapes])
    if model.endswith("two_inputs"):
        spec = apply_ranges(spec, [("ids", 0, 20)])
    report = run_debug(spec, "ort", "fp32", RunConfig(exporter=exporter), own_errors="divergent")
    assert report.exit_code == 0, [(r.label, r.failures) for r in report.layers if r.status == "fail"]
    assert sum(r.status == "pass" for r in report.layers) >= 4


def test_existing_export_trap_points_at_model_code():
    report = debug("dv_test_models:export_trap", "x=1x3x16x16")
    assert report.first_divergent == "head" and report.localized.kind == "model-code"
    assert "Mul" in report.localized.ops and report.triage.verdict == "export"


def test_inherited_error_is_not_new():
    report = debug("debug_models:conv_stack", "x=1x3x16x16")
    after = report.layer("features.5")  # the conv after the defect: wrong only because its input is
    assert after.status == "fail" and after.new_share is not None and after.new_share < 0.01
    assert report.layer("features.4").new_share == pytest.approx(1.0, abs=0.01)
    shared_relu = [r.label for r in report.layers if r.label.startswith("act#")]
    assert shared_relu == ["act#0", "act#1", "act#2"]  # one module called three times: three layers


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_mark_finds_a_defect_between_modules(exporter):
    report = debug("debug_models:between_marked", "x=1x3x16x16", exporter)
    assert report.first_divergent == "mark:activated"
    assert report.layer("mark:encoded").status == "pass"
    assert report.localized.label == "mark:activated" and "HardSwish" in report.localized.ops
    assert report.triage.verdict == "export"


def test_without_marks_the_error_is_traced_to_the_model_code():
    report = debug("debug_models:between_unmarked", "x=1x3x16x16")
    assert report.first_divergent == "dec.0"
    assert report.layer("dec.0").own["passed"] is True  # dec.0 itself is right
    assert report.localized.kind == "model-code" and "HardSwish" in report.localized.ops
    assert "deployval.mark" in report.localized.explanation


def test_marks_do_not_touch_eager_or_the_deployable_export(tmp_path):
    import debug_models
    import torch

    from deployval.export.onnx import export_onnx

    model = debug_models.between_fixed()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        plain = model.dec(torch.nn.functional.silu(model.enc(x)))
        assert torch.equal(model(x), plain)
    for exporter in EXPORTERS:
        path = tmp_path / f"{exporter}.onnx"
        export_onnx(model, (x,), path, input_names=["x"], output_names=["y"], exporter=exporter)
        graph = onnx.load(str(path)).graph
        assert not any(n.domain == "deployval" for n in graph.node)
        assert not any(n.op_type == "Identity" for n in graph.node)
    report = debug("debug_models:between_fixed", "x=1x3x16x16")
    assert report.exit_code == 0 and report.first_divergent is None
    assert report.layer("mark:activated").status == "pass" and report.layer("mark:encoded").status == "pass"


def test_runtime_is_blamed_when_onnx_runtime_departs_from_the_spec():
    """ONNX Runtime's CPU ReduceMax skips NaN; torch, numpy and onnx.reference propagate it."""
    report = debug("debug_models:nan_guard", "x=1x3x16x16")
    assert report.first_divergent == "pool" and report.localized.label == "pool"
    assert report.triage.verdict == "runtime", report.triage.explanation
    assert report.triage.reference_vs_eager["rel_l2"] == 0.0
    assert report.layer("features").status == "pass"  # NaN where eager has NaN is no error


# ----------------------------------------------------------------------------- memory and streaming


def test_streaming_in_chunks_gives_the_same_numbers():
    whole = debug("debug_models:conv_stack", "x=1x3x16x16")
    streamed = debug("debug_models:conv_stack", "x=1x3x16x16", memory_budget_bytes=4096)
    assert whole.memory["chunks"] == 1 and streamed.memory["chunks"] > 3
    assert [r.status for r in whole.layers] == [r.status for r in streamed.layers]
    for a, b in zip(whole.layers, streamed.layers):
        assert a.metrics.get("max_abs") == b.metrics.get("max_abs"), a.label
    assert streamed.first_divergent == "features.4" and streamed.localized.label == "features.4"


def test_second_run_reuses_the_survey_and_the_marker_bindings(tmp_path):
    spec = resolve_model("debug_models:between_marked", input_shapes=[parse_input_shape("x=1x3x16x16")])
    first = run_debug(spec, "ort", "fp32", RunConfig(cache_dir=tmp_path))
    again = run_debug(spec, "ort", "fp32", RunConfig(cache_dir=tmp_path))
    assert not any("cached survey" in n for n in first.notes) and any("cached survey" in n for n in again.notes)
    assert next(s for s in again.steps if s.name == "debug-marker-export").cached
    rows = [(r.label, r.status, r.metrics) for r in first.layers]
    assert rows == [(r.label, r.status, r.metrics) for r in again.layers]
    assert again.localized.label == "mark:activated"


def test_focused_mode_with_a_tiny_budget_still_localizes():
    report = debug("debug_models:between_unmarked", "x=1x3x16x16", own_errors="divergent", memory_budget_bytes=2048)
    assert report.memory["chunks"] > 2 and report.memory["own_errors"] == "around the first divergent layer"
    assert report.layer("enc.0").own is None  # passing layers are not replayed in focused mode
    assert report.localized.kind == "model-code" and report.triage.verdict == "export"


def test_enclosing_module_left_out_by_modules_is_still_searched():
    report = debug("debug_models:tiny_transformer", "x=1x12x8", modules=["blocks.1.attn.proj", "head"])
    assert [r.label for r in report.layers if r.kind == "module"] == ["blocks.1.attn.proj", "head"]
    assert report.first_divergent == "blocks.1.attn.proj" and report.localized.label == "blocks.1.attn"


def test_int8_artifact_localizes_the_planted_defect():
    report = debug("debug_models:conv_stack", "x=1x3x16x16", precision="int8")
    assert report.artifact["kind"] == "onnx-int8"
    assert report.first_divergent == "features.4" and report.localized.label == "features.4"
    assert report.triage.verdict == "export" and "int8" in report.triage.explanation


def test_fine_organs_maps_every_layer_and_passes():
    report = debug("fine_organs", "input=1x1x16x32x32")
    assert report.exit_code == 0, [(r.label, r.failures) for r in report.layers if r.status == "fail"]
    modules = [r for r in report.layers if r.kind == "module"]
    assert len(modules) > 100 and all(r.status == "pass" for r in modules)
    assert {"InstanceNormalization", "LeakyRelu", "ConvTranspose"} <= {op for r in modules for op in r.ops}


def test_fp16_artifact_is_debugged_layer_by_layer():
    report = debug("convs", "x=1x3x32x32", precision="fp16")
    assert report.artifact["kind"] == "onnx-fp16" and report.exit_code == 0
    compared = [r for r in report.layers if r.status == "pass" and r.kind == "module"]
    assert len(compared) >= 12 and all(0 < r.metrics["max_abs"] < 1e-2 for r in compared)
    assert not report.faithful and report.warnings  # ORT CPU fp16 caveat carried over


# ----------------------------------------------------------------------------- layer map


def test_legacy_scope_names_resolve_to_module_paths():
    from deployval.export.scopes import _legacy_chain

    names = {"convs1", "convs1.0", "stages.0", "stages.0.blocks", "stages.0.blocks.1", "stages.0.blocks.1.0",
             "stages.0.blocks.1.0.conv", "decoder", "decoder.up", "decoder.fuse", "decoder.fuse.0", "a", "a.conv"}
    assert _legacy_chain("/convs1/convs1.0/Conv", names) == ("convs1", "convs1.0")
    assert _legacy_chain("/stages.0/blocks/blocks.1/blocks.1.0/conv/Conv", names) == (
        "stages.0", "stages.0.blocks", "stages.0.blocks.1", "stages.0.blocks.1.0", "stages.0.blocks.1.0.conv")
    assert _legacy_chain("/up/Resize", names) == ("decoder.up",)  # ModuleDict child called directly
    assert _legacy_chain("/fuse/fuse.0/Conv", names) == ("decoder.fuse", "decoder.fuse.0")
    assert _legacy_chain("/a/conv_1/Conv", names) == ("a", "a.conv")  # a repeated call
    assert _legacy_chain("/Mul", names) == ()
    assert _legacy_chain("Constant_12", names) is None


# ----------------------------------------------------------------------------- command line


def test_debug_command_reports_and_exits_1(debug_cli, tmp_path):
    report_path, html_path = tmp_path / "debug.json", tmp_path / "debug.html"
    result = debug_cli("debug", "debug_models:tiny_unet", "--input-shape", "x=1x1x16x16", "--backend", "ort",
                       "--json", report_path, "--html", html_path, "--quiet")
    assert result.code == 1, result.err
    assert "first divergent layer: decoder.up" in result.out and "triage: export" in result.out
    data = json.loads(report_path.read_text())
    assert data["kind"] == "debug" and data["summary"]["exit_code"] == 1
    assert data["first_divergent"] == "decoder.up" and data["localized"]["label"] == "decoder.up"
    assert [r["label"] for r in data["layers"]][:3] == ["enc1.0", "enc1.1", "enc1.2"]  # execution order
    html = html_path.read_text()
    assert "decoder.up" in html and ("data:image/png;base64," in html or "plots need matplotlib" in html)


def test_debug_command_modules_filter_and_passing_model(debug_cli, tmp_path):
    report_path = tmp_path / "convs.json"
    result = debug_cli("debug", "convs", "--modules", "convs2.*,convs4", "--json", report_path, "-q")
    assert result.code == 0, result.err
    labels = [r["label"] for r in json.loads(report_path.read_text())["layers"] if r["kind"] == "module"]
    assert labels == ["convs2.0", "convs2.1", "convs2.2", "convs4"]
    assert "no layer exceeds its tolerance" in result.out


@pytest.mark.parametrize(("args", "code", "message"), [
    (["convs", "--precision", "fp64"], 2, "unknown precision 'fp64'"),
    (["convs", "--backend", "nope"], 2, "unknown backend 'nope'"),
    (["convs", "--backend", "torchscript"], 2, "debug compares the layers of an ONNX artifact"),
    (["convs", "--json", "/no/such/dir/r.json"], 2, "does not exist"),
])
def test_debug_command_bad_usage(debug_cli, args, code, message):
    assert_one_line_error(debug_cli("debug", *args, "-q"), code, message)


def test_debug_package_imports_light():
    code = ("import sys, deployval.debug, deployval.cli.debug; "
            "print(sorted(m for m in ('torch', 'numpy', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_stats_match_the_metrics_module():
    from deployval.judge.metrics import error_metrics
    from deployval.judge.stats import compare_tensors
    from deployval.model.spec import Tolerance

    rng = np.random.default_rng(3)
    ref = rng.standard_normal(700_001).astype(np.float32)
    cand = (ref + rng.standard_normal(ref.size).astype(np.float32) * 1e-3).astype(np.float32)
    cand[11], ref[12] = np.nan, np.inf
    stats, failures = compare_tensors(ref, cand, Tolerance(atol=1e-3, rtol=1e-3), block=4096)
    exact = error_metrics(ref, cand)
    for key in ("max_abs", "mean_abs", "rel_l2", "cosine", "nan", "inf"):
        assert stats.metrics()[key] == pytest.approx(exact[key], rel=1e-9), key
    assert any("non-finite" in f for f in failures) and any("exceed atol" in f for f in failures)

"""fp16 you can trust: activation ranges from the reference run decide fp16 verdicts that an
executor computing in fp32 (ONNX Runtime's CPU provider) cannot reach."""

from __future__ import annotations

import json

import numpy as np
import torch

from deployval.judge.ranges import LIMITS, findings, record_ranges


def test_overflowing_layer_fails_fp16_and_is_named(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:hot_layer", "--input-shape", "x=1x3x16x16", "--backends", "torch,ort",
                 "--precisions", "fp32,fp16", "--json", report_path, "-q")
    assert result.code == 1, result.out + result.err
    report = json.loads(report_path.read_text())
    rows = {(r["backend"], r["precision"]): r for r in report["results"]}
    assert rows[("ort", "fp32")]["status"] == "pass"  # fp32 is healthy
    ort16 = rows[("ort", "fp16")]
    assert ort16["status"] == "fail" and ort16["faithful"] is False
    assert "layer 'amplify' reaches" in ort16["reason"] and "65504" in ort16["reason"]
    torch16 = rows[("torch", "fp16")]  # real half arithmetic overflows by itself
    assert torch16["status"] == "fail" and torch16["outputs"][0]["metrics"]["nan"] > 0
    assert "likely cause: layer 'amplify'" in torch16["reason"]
    findings_ = report["analysis"]["activation_ranges"]["fp16"]
    assert [f["module"] for f in findings_ if f["kind"] == "overflow"] == ["amplify"]
    assert "layer 'amplify' reaches" in result.out


def test_healthy_model_fp16_passes_with_ranges_recorded(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "torch,ort", "--precisions", "fp16", "--json", report_path, "-q")
    assert result.code == 0, result.out
    analysis = json.loads(report_path.read_text())["analysis"]["activation_ranges"]
    assert analysis["fp16"] == [] and analysis["layers"] >= 12


def test_record_ranges_measures_max_and_flush_to_zero():
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Identity())
    x = torch.tensor([1e-9, 3e-6, 2.0, -7e4])
    with record_ranges(model) as ranges:
        model(x)
    assert [r.module for r in ranges] == ["0"]  # the second Identity returns the same tensor
    layer = ranges[0]
    assert layer.max_abs == np.float32(7e4)
    assert layer.below["fp16"] == 0.25 and layer.subnormal["fp16"] == 0.25
    assert layer.overflows("fp16") and not layer.overflows("bf16")
    found = findings(ranges, "fp16")
    assert {f.kind for f in found} == {"overflow", "flush"}
    assert findings(ranges, "fp16", keep_fp32=("0",)) == []
    assert LIMITS["fp16"]["max"] == float(torch.finfo(torch.float16).max)
    assert LIMITS["fp16"]["min_subnormal"] == float(torch.finfo(torch.float16).smallest_normal) / 2**10


def test_int8_calibration_method_limit_and_exclusions(cli, tmp_path):
    calibration = tmp_path / "cal"
    calibration.mkdir()
    rng = np.random.default_rng(1)
    for index in range(5):
        np.savez(calibration / f"{index:02d}.npz", x=rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32))
    report_path = tmp_path / "r.json"
    result = cli("compare", "convs", "-b", "torch,ort", "-p", "int8", "--calibration", calibration,
                 "--calibration-limit", "3", "--calibration-method", "percentile", "--int8-exclude", "node_conv2d_1*",
                 "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    step = next(s for s in json.loads(report_path.read_text())["steps"] if s["name"] == "int8")
    assert step["details"]["samples"] == 3 and step["details"]["method"] == "percentile"
    assert "node_conv2d_1" in step["details"]["excluded_nodes"] and step["reason"] == ""


def test_int8_exclusion_that_matches_nothing_is_refused(cli):
    result = cli("compare", "convs", "-b", "torch,ort", "-p", "int8", "--int8-exclude", "nope*", "-q")
    assert result.code == 2 and "matches no ONNX node" in result.err


def test_keep_fp32_builds_a_mixed_precision_artifact(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:hot_layer", "--input-shape", "x=1x3x16x16", "-b", "torch,ort",
                 "-p", "fp16", "--keep-fp32", "amplify", "--keep-fp32", "op:InstanceNormalization",
                 "--json", report_path, "-q")
    report = json.loads(report_path.read_text())
    ort16 = next(r for r in report["results"] if r["backend"] == "ort")
    assert ort16["status"] == "pass", ort16["reason"]  # the overflowing layer now runs in fp32
    step = next(s for s in report["steps"] if s["name"] == "fp16")
    assert "InstanceNormalization" in step["details"]["op_block_list"] and step["details"]["kept_fp32"]
    assert report["analysis"]["activation_ranges"]["fp16"] == []  # kept layers are exempt
    assert result.code == 1  # torch's whole-model .half() still overflows: --keep-fp32 shapes the ONNX artifact


def test_keep_fp32_pattern_that_matches_no_module(cli):
    result = cli("compare", "convs", "-b", "torch,ort", "-p", "fp16", "--keep-fp32", "decoder.*", "-q")
    assert result.code == 2 and "matches no module" in result.err

"""OpenVINO rows and bf16: each row computes at its own precision (the hint pinned and checked), the
device's default is recorded, and where that default is not f32 the fp32 row says so."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import assert_one_line_error

from deployval.backends.openvino import OpenVinoRunner, default_precision_warning, hint_name

available, why = OpenVinoRunner.available()
needs_openvino = pytest.mark.skipif(not available, reason=why)


def _rows(path) -> dict[tuple[str, str], dict]:
    return {(r["backend"], r["precision"]): r for r in json.loads(path.read_text())["results"]}


@needs_openvino
def test_each_openvino_row_computes_at_its_precision_and_fp32_names_the_default(cli, tmp_path):
    report = tmp_path / "r.json"
    result = cli("compare", "srcnn", "--input-shape", "image=1x3x64x64", "--backends", "torch,ort,openvino",
                 "--precisions", "fp32,fp16,bf16", "--iterations", "1", "--json", report, "-q")
    assert result.code == 0, result.out + result.err
    rows = _rows(report)
    for precision, hint in (("fp32", "f32"), ("fp16", "f16"), ("bf16", "bf16")):
        row = rows[("openvino", precision)]
        assert row["status"] == "pass" and row["details"]["inference_precision"] == hint, row
    fp32, bf16 = rows[("openvino", "fp32")], rows[("openvino", "bf16")]
    # bf16 really ran: its error is orders of magnitude above fp32's and close to torch's own bf16
    assert bf16["outputs"][0]["metrics"]["rel_l2"] > 100 * fp32["outputs"][0]["metrics"]["rel_l2"]
    torch_bf16 = rows[("torch", "bf16")]["outputs"][0]["metrics"]["rel_l2"]
    assert 0.2 < bf16["outputs"][0]["metrics"]["rel_l2"] / torch_bf16 < 5
    default = fp32["details"]["device_default_precision"]
    assert default in ("f32", "f16", "bf16")
    expected = default_precision_warning(default, "CPU")
    assert (expected in fp32["warnings"]) if expected else not fp32["warnings"], fp32["warnings"]
    assert rows[("ort", "bf16")]["status"] == "skipped" and "ort has no bf16 mode" in rows[("ort", "bf16")]["reason"]


@needs_openvino
def test_a_device_openvino_does_not_have_is_an_error_row_saying_so(cli, tmp_path):
    report = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "torch,openvino", "--backend-option", "openvino.device=NOSUCH",
                 "--iterations", "1", "--json", report, "-q")
    assert result.code == 3, result.out + result.err
    row = _rows(report)[("openvino", "fp32")]
    assert row["status"] == "error" and "OpenVINO could not compile the model for NOSUCH" in row["reason"]


@needs_openvino
@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf is not installed")
def test_openvino_int8_is_nncf_quantized_and_really_runs_in_int8(cli, tmp_path):
    report = tmp_path / "r.json"
    result = cli("compare", "srcnn", "--input-shape", "image=1x3x64x64", "--backends", "torch,openvino",
                 "--precisions", "fp32,int8", "--iterations", "1", "--json", report, "-q")
    assert result.code == 0, result.out + result.err
    data = json.loads(report.read_text())
    rows = {(r["backend"], r["precision"]): r for r in data["results"]}
    int8, fp32 = rows[("openvino", "int8")], rows[("openvino", "fp32")]
    quantized, layers = (int(n) for n in int8["details"]["int8_layers"].split(" of "))
    assert int8["status"] == "pass" and 0 < quantized <= layers, int8["details"]
    assert int8["details"]["inference_precision"] == "f32"  # what NNCF left unquantized stays fp32
    assert int8["outputs"][0]["metrics"]["rel_l2"] > 100 * fp32["outputs"][0]["metrics"]["rel_l2"]
    step = next(s for s in data["steps"] if s["name"] == "int8 (nncf)")
    assert step["details"]["quantizer"].startswith("nncf ") and step["details"]["quantize_nodes"] > 0
    assert "pass --calibration DIR with real data" in step["reason"]


def test_the_default_precision_warning_and_type_names():
    assert default_precision_warning("f32", "CPU") is None
    assert "computes in bf16 (its error is the bf16 row's)" in default_precision_warning("bf16", "CPU")
    assert hint_name("<Type: 'bfloat16'>") == "bf16" and hint_name("f16") == "f16" and hint_name("float32") == "f32"


def test_an_empty_openvino_device_is_one_line(cli):
    assert_one_line_error(cli("compare", "convs", "--backends", "openvino", "--backend-option", "openvino.device= "),
                          2, "openvino.device must name an OpenVINO device")


def test_bf16_is_a_precision_with_its_own_tolerance(cli, tmp_path):
    from deployval.model.spec import ToleranceTable

    assert ToleranceTable().resolve("torch", "bf16", "y").to_dict() == {"rel_l2": 0.08, "cosine": 0.997}
    report = tmp_path / "r.json"
    assert cli("compare", "convs", "--backends", "torch", "--precisions", "fp32,bf16", "--iterations", "1",
               "--json", report, "-q").code == 0
    row = _rows(report)[("torch", "bf16")]
    assert row["status"] == "pass" and 1e-3 < row["outputs"][0]["metrics"]["rel_l2"] < 0.08

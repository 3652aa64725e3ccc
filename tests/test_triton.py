"""The triton backend against a real Triton server on 127.0.0.1 (tests/triton_server.py): the model as
served is judged like any row; a served model that computes the same thing passes over HTTP and gRPC,
one served at fp16 or with a planted error fails, and what cannot be judged is an error, never a pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from triton_server import TritonServer, add_model, locate

from deployval.backends.triton import Endpoint, TritonRunner, match_names
from deployval.errors import BackendError, UsageError

client_available, client_why = TritonRunner.available()
server_files, server_why = locate()
needs_server = pytest.mark.skipif(not (client_available and server_files), reason=client_why or server_why)
INPUTS = ("--input-shape", "image=1x3x32x32", "--input-range", "image=0,255")  # pixels, as served


def _ocr_rec() -> Path | None:
    import importlib.util

    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        return None
    from real_models import ocr_rec_onnx

    return ocr_rec_onnx()


OCR_REC = _ocr_rec()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """srcnn's simplified ONNX and its fp16 ONNX (deployval's own), served four ways by one server."""
    from deployval.api import export_artifacts

    work = tmp_path_factory.mktemp("triton")
    written = export_artifacts("srcnn", work / "artifacts", kinds=["onnx", "onnx-fp16"],
                               input_shapes={"image": (1, 3, 32, 32)})
    repository = work / "models"
    add_model(repository, "srcnn", written["onnx"])
    add_model(repository, "srcnn_fp16", written["onnx-fp16"])
    add_model(repository, "srcnn_planted", written["onnx"], planted_error=1.0)  # one grey level on half the image
    add_model(repository, "srcnn_renamed", written["onnx"], renamed={"image": "INPUT__0", "output": "OUTPUT__0"})
    if OCR_REC is not None:  # a trained model no one here wrote, served as is and with a planted error
        add_model(repository, "ocr_rec", OCR_REC)
        add_model(repository, "ocr_rec_planted", OCR_REC, planted_error=0.01)
    assert server_files is not None
    server = TritonServer(server_files, repository, work).start()
    yield server
    server.stop()


def _row(cli, tmp_path: Path, url: str, model: str, *extra: str) -> tuple[int, dict, str]:
    report = tmp_path / f"{model}.json"
    result = cli("compare", "srcnn", *INPUTS, "--backends", "torch,triton", "--backend-option", f"triton.url={url}",
                 "--backend-option", f"triton.model={model}", "--iterations", "3", "--json", report, *extra)
    data = json.loads(report.read_text())
    return result.code, next(r for r in data["results"] if r["backend"] == "triton"), result.out + result.err


@needs_server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_served_model_that_computes_the_same_passes(cli, tmp_path, served, protocol):
    url = served.http_url if protocol == "http" else served.grpc_url
    code, row, out = _row(cli, tmp_path, url, "srcnn")
    assert code == 0 and row["status"] == "pass", out
    assert row["outputs"][0]["metrics"]["rel_l2"] < 1e-5
    assert row["details"]["protocol"] == protocol and row["details"]["model_version"] == "1"
    assert row["details"]["server"].startswith("triton") and row["details"]["platform"] == "python"
    assert row["latency"]["median_ms"] > 0 and row["latency"]["iterations"] == 3
    assert any("round trip" in w for w in row["warnings"])
    assert f"triton.url={url}" in row["reproduce"]


@needs_server
def test_a_model_served_at_fp16_fails_at_fp32_tolerance(cli, tmp_path, served):
    code, row, out = _row(cli, tmp_path, served.http_url, "srcnn_fp16")
    assert code == 1 and row["status"] == "fail", out
    assert row["outputs"][0]["metrics"]["max_abs"] > 0.05  # fp32 serving differs by ~1e-3 on these pixels


@needs_server
def test_a_planted_error_in_the_served_model_fails_the_row(cli, tmp_path, served):
    code, row, out = _row(cli, tmp_path, served.grpc_url, "srcnn_planted")
    assert code == 1 and row["status"] == "fail", out
    assert row["outputs"][0]["metrics"]["max_abs"] == pytest.approx(1.0, rel=1e-2)


@needs_server
def test_names_that_differ_are_matched_by_position_and_said(cli, tmp_path, served):
    code, row, out = _row(cli, tmp_path, served.http_url, "srcnn_renamed")
    assert code == 0 and row["status"] == "pass", out
    assert any("matched by position: image -> INPUT__0" in w for w in row["warnings"]), row["warnings"]


@needs_server
def test_a_model_the_server_does_not_serve_is_an_error_naming_what_it_serves(cli, tmp_path, served):
    code, row, out = _row(cli, tmp_path, served.http_url, "nosuch")
    assert code == 3 and row["status"] == "error", out
    assert "model 'nosuch' is not ready" in row["reason"] and "srcnn READY" in row["reason"], row["reason"]


@needs_server
def test_a_served_model_is_a_manifest_entry(cli, tmp_path, served):
    manifest = tmp_path / "deployval.toml"
    manifest.write_text(f'''
[[model]]
id = "srcnn-staging"
model = "srcnn"
input_shapes = {{ image = [1, 3, 32, 32] }}
input_ranges = {{ image = [0, 255] }}
backends = ["triton"]
iterations = 2
backend_options = {{ triton = {{ url = "{served.grpc_url}", model = "srcnn" }} }}

[[model]]
id = "srcnn-broken"
model = "srcnn"
input_shapes = {{ image = [1, 3, 32, 32] }}
input_ranges = {{ image = [0, 255] }}
backends = ["triton"]
iterations = 2
backend_options = {{ triton = {{ url = "{served.http_url}", model = "srcnn_planted" }} }}
''')
    report = tmp_path / "suite.json"
    result = cli("validate", "--all", "--manifest", manifest, "--json", report)
    assert result.code == 1, result.out + result.err
    data = json.loads(report.read_text())
    status = {r["entry"]: next(row["status"] for row in r["results"] if row["backend"] == "triton")
              for r in data["reports"]}
    assert status == {"srcnn-staging": "pass", "srcnn-broken": "fail"}


@needs_server
@pytest.mark.skipif(OCR_REC is None, reason="rapidocr_onnxruntime is not installed (make install brings it)")
@pytest.mark.parametrize(("served_as", "status"), [("ocr_rec", "pass"), ("ocr_rec_planted", "fail")])
def test_a_trained_model_no_one_here_wrote_is_judged_as_served(tmp_path, served, served_as, status):
    """PP-OCRv4's recognizer (a paddle2onnx file) on a rendered text line: served as is it computes what
    ONNX Runtime computes here; 0.01 added to half its character probabilities fails."""
    from dataclasses import replace

    import real_models

    entry = next(e for e in real_models.CORPUS if e.name == "ocr-rec")
    report = real_models.run_corpus_model(
        replace(entry, backends=("ort", "triton"), precisions=("fp32",)), tmp_path,
        backend_options={"triton": {"url": served.grpc_url, "model": served_as}}).to_dict()
    row = next(r for r in report["results"] if r["backend"] == "triton")
    assert row["status"] == status, row
    if status == "pass":
        assert row["outputs"][0]["metrics"]["max_abs"] < 1e-5
    else:
        assert row["outputs"][0]["metrics"]["max_abs"] == pytest.approx(0.01, rel=1e-3)


def test_no_server_answering_is_an_error_row_not_a_pass(cli, tmp_path):
    if not client_available:
        pytest.skip(client_why)
    from triton_server import free_ports

    code, row, out = _row(cli, tmp_path, f"http://127.0.0.1:{free_ports(1)[0]}", "srcnn")
    assert code == 3 and row["status"] == "error", out
    assert "cannot reach model 'srcnn'" in row["reason"]


def test_the_served_model_must_be_named(cli):
    assert_one_line_error(cli("compare", "srcnn", "--backends", "torch,triton"), 2,
                          "the triton backend needs the served model")
    assert_one_line_error(cli("compare", "srcnn", "--backends", "torch,triton", "--backend-option",
                              "triton.url=localhost:8000", "--backend-option", "triton.model=m"), 2,
                          "triton.url takes http://HOST:PORT")


def test_endpoints_and_name_matching():
    assert Endpoint.parse("grpcs://triton.staging:8001") == Endpoint("grpc", "triton.staging:8001", True)
    assert Endpoint.parse("http://127.0.0.1:8000/") == Endpoint("http", "127.0.0.1:8000", False)
    with pytest.raises(UsageError, match="not a path"):
        Endpoint.parse("http://h:8000/v2/models/m")
    assert match_names(["a", "b"], ["b", "a"], "input") == ({"a": "a", "b": "b"}, False)
    assert match_names(["y"], ["y", "extra"], "output") == ({"y": "y"}, False)  # an extra served output is unused
    assert match_names(["x"], ["INPUT__0"], "input") == ({"x": "INPUT__0"}, True)
    with pytest.raises(BackendError, match="neither by name nor by count"):
        match_names(["x", "y"], ["z"], "input")

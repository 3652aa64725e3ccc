"""Typed backend options: `Runner.Options`, `--backend-option NAME.FIELD=VALUE`, the dedicated flags that set
the same fields, and a third-party backend (tests/plugins, `onnxref`) taking one."""

from __future__ import annotations

import json
import os
import shlex

import pytest
from conftest import TESTS, assert_one_line_error, run_deployval

from deployval.backends.base import get_backend
from deployval.backends.onnxruntime import OnnxRuntimeRunner
from deployval.backends.onnxruntime_tensorrt import OnnxRuntimeTensorRTRunner
from deployval.backends.options import NoOptions, option_infos
from deployval.backends.options import parse_backend_options as parse
from deployval.backends.tensorrt import TensorRTRunner
from deployval.cli.common import backend_options
from deployval.errors import UsageError
from deployval.model.spec import RunConfig


def parse_backend_options(values: list[str]) -> dict:
    return parse(values, get_backend)

PLUGIN_ENV = {"PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS / "plugins")])}


def test_backend_option_values_take_the_fields_type():
    parsed = parse_backend_options(["trt.workspace_mb=512", "trt.keep_int64=true", "trt.fp16_route=flag",
                                    "ort-trt.workspace_mb=none"])
    assert parsed == {"trt": {"workspace_mb": 512, "keep_int64": True, "fp16_route": "flag"},
                      "ort-trt": {"workspace_mb": None}}
    options = TensorRTRunner.typed_options(parsed)
    assert (options.workspace_mb, options.keep_int64, options.fp16_route) == (512, True, "flag")
    assert OnnxRuntimeRunner.Options is NoOptions
    assert [(i.name, i.type, i.default) for i in option_infos(OnnxRuntimeTensorRTRunner)] == [
        ("workspace_mb", "int | None", None)]


def test_dedicated_flags_fill_the_same_typed_fields_under_the_backends_names():
    options = backend_options(True, 1024, "flag")
    assert options == {"trt": {"keep_int64": True, "workspace_mb": 1024, "fp16_route": "flag"},
                       "ort-trt": {"workspace_mb": 1024}}  # no flat keys: each setting under its backend
    typed = TensorRTRunner.typed_options(options)
    assert (typed.workspace_mb, typed.keep_int64, typed.fp16_route) == (1024, True, "flag")
    assert OnnxRuntimeTensorRTRunner.typed_options(options).workspace_mb == 1024
    assert TensorRTRunner.typed_options({}) == TensorRTRunner.Options()
    assert backend_options(False, None, "onnx") == {}  # flags left at their defaults set nothing


def test_a_setting_outside_any_backend_is_refused():
    with pytest.raises(UsageError, match=r"backend_options\['keep_int64'\] is not a backend's settings"):
        RunConfig(backend_options={"keep_int64": True})


@pytest.mark.parametrize(("values", "message"), [
    (["trt.bogus=1"], "has no option 'bogus' (its options: workspace_mb, fp16_route, keep_int64)"),
    (["trt.workspace_mb=big"], "takes an integer, not 'big'"),
    (["trt.keep_int64=maybe"], "takes true or false"),
    (["trt.fp16_route=int4"], "unknown TensorRT fp16 route 'int4'"),
    (["trt.workspace_mb=0"], "positive number of MiB"),
    (["nosuch.x=1"], "unknown backend 'nosuch'"),
    (["trt=1"], "NAME.FIELD=VALUE"),
    (["ort.x=1"], "its options: none"),
])
def test_bad_backend_options_are_usage_errors(values, message):
    with pytest.raises(UsageError) as info:
        parse_backend_options(values)
    assert message in str(info.value)


def test_a_flag_and_a_backend_option_for_one_field_conflict():
    with pytest.raises(UsageError, match=r"--trt-workspace and --backend-option trt\.workspace_mb"):
        backend_options(False, 512, "onnx", backend_option=["trt.workspace_mb=1024"])
    with pytest.raises(UsageError, match=r"--keep-int64 and --backend-option trt\.keep_int64"):
        backend_options(True, None, "onnx", backend_option=["trt.keep_int64=false"])
    # different fields, or the flag left at its default: no conflict
    assert backend_options(False, None, "onnx", backend_option=["trt.keep_int64=true"])["trt"] == {"keep_int64": True}


def test_to_args_keeps_backend_options_in_the_reproduction_line():
    config = RunConfig(backend_options={"trt": {"workspace_mb": 512, "keep_int64": False}},
                       int8_activation_matmuls=True)
    assert shlex.join(config.to_args()) == ("--int8-activation-matmuls --backend-option trt.workspace_mb=512 "
                                            "--backend-option trt.keep_int64=false")
    assert parse_backend_options(config.to_args()[2::2]) == {"trt": {"workspace_mb": 512, "keep_int64": False}}


def test_cli_rejects_an_unknown_backend_option_in_one_line(cli):
    result = cli("compare", "dv_test_models:tiny_conv", "--input-shape", "1x3x8x8", "-b", "torch",
                 "--backend-option", "trt.workspace=1", "-q")
    assert_one_line_error(result, 2, "backend 'trt' has no option 'workspace'")


def test_a_third_party_backend_takes_its_option(tmp_path):
    listed = run_deployval("backends", env={**PLUGIN_ENV, "COLUMNS": "200"})
    assert listed.code == 0, listed.err
    assert "onnxref.verbose" in listed.out and "trt.workspace_mb" in listed.out
    report = tmp_path / "r.json"
    result = run_deployval("compare", "dv_test_models:tiny_conv", "--input-shape", "1x3x8x8", "-b", "torch,onnxref",
                           "--backend-option", "onnxref.verbose=1", "--json", report, "-q", env=PLUGIN_ENV)
    assert result.code == 0, result.err[-2000:]
    row = next(r for r in json.loads(report.read_text())["results"] if r["backend"] == "onnxref")
    assert row["status"] == "pass" and row["details"]["verbose"] == 1
    assert "--backend-option onnxref.verbose=1" in row["reproduce"]
    bad = run_deployval("compare", "dv_test_models:tiny_conv", "--input-shape", "1x3x8x8", "-b", "onnxref",
                        "--backend-option", "onnxref.verbose=loud", "-q", env=PLUGIN_ENV)
    assert_one_line_error(bad, 2, "onnxref.verbose takes an integer, not 'loud'")

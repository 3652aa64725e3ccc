"""Crash isolation: a backend that aborts or hangs becomes an error row; every other row, and the
JSON report, survive; the exit code is 3."""

from __future__ import annotations

import json

import pytest
from faulty_backends import AbortingRunner, HangingRunner

from deployval.backends.base import _registered, register_backend


@pytest.fixture
def faulty_backends():
    register_backend(AbortingRunner)
    register_backend(HangingRunner)
    yield
    _registered.pop("aborting", None)
    _registered.pop("hanging", None)


def test_aborting_and_hanging_backends_are_reported_and_the_rest_survives(cli, tmp_path, faulty_backends):
    report_path = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "torch,aborting,ort,hanging", "--timeout", "8",
                 "--json", report_path, "-q")
    assert result.code == 3, result.out + result.err
    rows = {r["backend"]: r for r in json.loads(report_path.read_text())["results"]}
    assert rows["torch"]["status"] == "reference"
    assert rows["ort"]["status"] == "pass" and rows["ort"]["details"]["isolated"] is True
    assert rows["aborting"]["status"] == "error"
    assert "SIGABRT" in rows["aborting"]["reason"] and "about to run the engine" in rows["aborting"]["reason"]
    assert rows["hanging"]["status"] == "error"
    assert "timed out after 8 s" in rows["hanging"]["reason"] and "waiting forever" in rows["hanging"]["reason"]
    errors = [ln for ln in result.err.splitlines() if ln.startswith("deployval: error:")]
    assert len(errors) == 1 and "aborting" in errors[0] and "hanging" in errors[0]


def test_native_engine_backends_are_isolated_by_default(cli, tmp_path, faulty_backends):
    report_path = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "torch,aborting,torchscript", "--json", report_path, "-q")
    assert result.code == 3
    rows = {r["backend"]: r for r in json.loads(report_path.read_text())["results"]}
    assert rows["aborting"]["status"] == "error" and "SIGABRT" in rows["aborting"]["reason"]
    assert rows["torchscript"]["status"] == "pass" and "isolated" not in rows["torchscript"]["details"]


def test_isolated_module_backend_rebuilds_the_model_in_the_child(cli, tmp_path):
    report_path = tmp_path / "r.json"
    result = cli("compare", "convs", "--backends", "torch,torchscript", "--precisions", "fp32,fp16", "--isolate",
                 "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    rows = {(r["backend"], r["precision"]): r for r in json.loads(report_path.read_text())["results"]}
    assert rows[("torch", "fp16")]["details"]["isolated"] is True
    assert rows[("torch", "fp16")]["outputs"][0]["metrics"]["max_abs"] > 0
    assert rows[("torchscript", "fp32")]["outputs"][0]["metrics"]["max_abs"] == 0


def test_timeout_without_isolation_is_refused(cli):
    result = cli("compare", "convs", "--timeout", "5", "--no-isolate")
    assert result.code == 2 and "--timeout needs backends in their own process" in result.err

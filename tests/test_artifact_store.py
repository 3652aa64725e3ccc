"""The store as a table: every artifact kind has one row (sources, builder, step), and one wrapper
does the cache check, the step, its timing, the failure record and the metadata for all of them."""

from __future__ import annotations

import json

import pytest

from deployval.catalog.registry import resolve_model
from deployval.errors import ExportError, UsageError
from deployval.export import artifacts
from deployval.export.artifacts import (
    ARTIFACT_KINDS,
    FILE_NAMES,
    INT32_SOURCES,
    MODULE,
    NO_FILE_KINDS,
    ONNX_INT32,
    ONNX_RAW,
)
from deployval.export.store import BUILDS, ArtifactStore
from deployval.model.inputs import make_inputs
from deployval.model.loading import build_module
from deployval.model.spec import RunConfig


def test_every_kind_has_one_row_built_from_known_kinds():
    assert set(BUILDS) == set(ARTIFACT_KINDS)
    for kind, build in BUILDS.items():
        assert all(source in BUILDS for source in build.sources), kind
        assert (kind in NO_FILE_KINDS) != (kind in FILE_NAMES), kind  # a file, or by design none (module, served)
    assert MODULE in NO_FILE_KINDS
    for kind, source in INT32_SOURCES.items():
        assert BUILDS[kind].sources == (source,)


def test_backends_base_still_names_the_vocabulary_for_plugin_authors():
    from deployval.backends import base

    for name in ("Artifact", "ARTIFACT_KINDS", "MODULE", "TORCHSCRIPT", "ONNX_RAW", "ONNX", "ONNX_INT32",
                 "ONNX_FP16", "ONNX_INT8", "ONNX_FP16_INT32", "ONNX_INT8_INT32"):
        assert getattr(base, name) is getattr(artifacts, name), name


def _store(spec, cache, module_factory):
    return ArtifactStore(spec, make_inputs(spec.inputs, 0), RunConfig(cache_dir=cache), module=module_factory,
                         output_names=("logits", "tags"), model_digest="m", inputs_digest="i")


def test_builds_are_recorded_once_then_served_from_the_cache(tmp_path):
    spec = resolve_model("tagger")
    module = build_module(spec)
    first = _store(spec, tmp_path, lambda: module)
    built = first.get(ONNX_INT32)
    assert first.get(ONNX_INT32) is built  # once per run
    assert [s.name for s in first.steps] == ["export-onnx", "check", "simplify", "int64-to-int32"]
    assert not any(s.cached for s in first.steps)
    assert all(s.seconds > 0 for s in first.steps if s.status == "ok")
    meta = json.loads(first.artifact_path(ONNX_INT32).with_suffix(".onnx.json").read_text())
    assert (meta["kind"], meta["sha256"], meta["step"]["name"]) == (ONNX_INT32, built.sha256, "int64-to-int32")

    again = _store(spec, tmp_path, lambda: pytest.fail("a cached build must not load the module"))
    assert again.get(ONNX_INT32).sha256 == built.sha256
    assert [(s.name, s.cached) for s in again.steps] == [
        ("export-onnx", True), ("check", True), ("simplify", True), ("int64-to-int32", True)]


def test_a_failed_build_is_recorded_once_and_remembered(tmp_path):
    def no_weights():
        raise UsageError("weights server unreachable")

    store = _store(resolve_model("tagger"), tmp_path, no_weights)
    with pytest.raises(UsageError) as first:
        store.get(ONNX_INT32)
    with pytest.raises(UsageError) as second:
        store.get(ONNX_RAW)
    assert second.value is first.value
    assert [(s.name, s.status, s.reason) for s in store.steps] == [
        ("export-onnx", "fail", "weights server unreachable")]
    with pytest.raises(ExportError, match="unknown artifact kind"):
        store.get("onnx-int4")

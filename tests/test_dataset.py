"""--dataset: every row judged on every sample, one sample at a time; faults named and counted;
failing samples saved for replay; memory bounded by one sample's outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TESTS, assert_one_line_error


def _write_set(directory, count, shape=(1, 3, 32, 32), seed=0, scale=None):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        sample = rng.standard_normal(shape).astype(np.float32)
        if scale and i in scale:
            sample *= scale[i]
        np.save(directory / f"s{i:02d}.npy", sample)
    return directory


def test_every_row_is_judged_on_every_sample_and_faults_are_named(cli, tmp_path):
    data = _write_set(tmp_path / "set", 5)
    np.save(data / "s90_other_shape.npy", np.zeros((1, 3, 16, 16), np.float32))
    (data / "s91_damaged.npy").write_bytes(b"not an array")
    report_path = tmp_path / "r.json"
    result = cli("compare", "srcnn", "--dataset", data, "--backends", "torch,ort", "--iterations", "1",
                 "--no-cache", "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    report = json.loads(report_path.read_text())
    assert report["samples"] == 5 and all(r["samples"] == 5 for r in report["results"])
    ort = next(r for r in report["results"] if r["backend"] == "ort")
    summary = ort["details"]["dataset"]
    assert summary["samples"] == 5 and summary["failed"] == 0
    assert {w["sample"] for w in summary["worst"]} == {f"s{i:02d}.npy" for i in range(5)}
    rel = summary["outputs"]["upscaled"]["rel_l2"]
    assert rel["worst"] >= rel["p50"] and rel["worst"] == max(w["rel_l2"] for w in summary["worst"])
    unusable = {u["sample"]: u["reason"] for u in report["analysis"]["dataset"]["unusable"]}
    assert set(unusable) == {"s90_other_shape.npy", "s91_damaged.npy"}
    assert "1x3x16x16" in unusable["s90_other_shape.npy"]
    assert "2 samples left out" in result.out and "ort:fp32: 5 inputs, 0 fail" in result.out


def test_a_failing_sample_fails_the_row_is_saved_and_replays(cli, tmp_path):
    # One sample 200x larger: the same absolute tolerance that the others meet fails on it at fp16.
    data = _write_set(tmp_path / "set", 4, scale={2: 200.0})
    failing = tmp_path / "failing"
    args = ("compare", "srcnn", "--dataset", data, "--backends", "ort", "--precisions", "fp16", "--iterations", "1",
            "--atol", "0.05", "--rtol", "0", "--no-cache")
    report_path = tmp_path / "r.json"
    result = cli(*args, "--save-failing", failing, "--json", report_path, "-q")
    assert result.code == 1, result.out + result.err
    [row] = json.loads(report_path.read_text())["results"]
    assert row["status"] == "fail" and row["reason"].startswith("1 of 4 samples fail; worst s02.npy")
    worst = row["details"]["dataset"]["worst"][0]
    assert worst["sample"] == "s02.npy" and not worst["passed"] and "exceed atol" in worst["failures"][0]
    assert [p.name for p in failing.iterdir()] == ["s02.npz"]
    replay = cli("compare", "srcnn", "--inputs", failing / "s02.npz", "--backends", "ort", "--precisions", "fp16",
                 "--iterations", "1", "--atol", "0.05", "--rtol", "0", "--no-cache", "-q")
    assert replay.code == 1  # the saved sample shows the failure on its own
    # Three of four passing is enough when the gate says so.
    assert cli(*args, "--pass-fraction", "0.75", "-q").code == 0


def test_bad_dataset_arguments_are_one_line_errors(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(cli("compare", "srcnn", "--dataset", empty, "-q"), 2, "holds no .npy")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.npy").write_bytes(b"junk")
    assert_one_line_error(cli("compare", "srcnn", "--dataset", junk, "-q"), 2, "no sample can be used")
    data = _write_set(tmp_path / "set", 1)
    assert_one_line_error(cli("compare", "srcnn", "--dataset", data, "--inputs", data / "s00.npy", "-q"), 2,
                          "--dataset and --inputs")
    assert_one_line_error(cli("compare", "srcnn", "--limit", "3", "-q"), 2, "--limit applies to --dataset")
    assert_one_line_error(cli("compare", "srcnn", "--dataset", data, "--pass-fraction", "0", "-q"), 2,
                          "--pass-fraction")
    assert_one_line_error(cli("compare", "srcnn", "--dataset", data, "--preprocess", "resize=32", "-q"), 2,
                          "--preprocess resize=32: expected HxW")


def test_validate_takes_a_dataset_and_limit(cli, tmp_path):
    data = _write_set(tmp_path / "set", 4, shape=(1, 3, 8, 8))
    report_path = tmp_path / "r.json"
    result = cli("validate", "convs", "--dataset", data, "--limit", "3", "--no-cache", "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    report = json.loads(report_path.read_text())
    assert report["samples"] == 3 and report["analysis"]["dataset"]["first"] == "s00.npy"


def _peak_rss_mb(data, tmp_path) -> float:
    code = ("import resource, sys\nfrom deployval.cli import main\n"
            f"main(['compare', 'srcnn', '--dataset', {str(data)!r}, '--backends', 'torch,ort', '--iterations', '1',"
            " '--no-cache', '-q'])\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # ~20-30 s on 2 cores: the default suite stays near 10 minutes
def test_memory_stays_bounded_by_one_sample(tmp_path):
    """48 samples whose outputs (reference and ORT, 1.7 MB each) would take 170 MB if kept: the peak
    memory of the run is that of a 4-sample run, to within noise."""
    shape = (1, 3, 128, 128)  # srcnn upscales 3x: 1x3x384x384 float32 per output
    small = _peak_rss_mb(_write_set(tmp_path / "small", 4, shape), tmp_path)
    large = _peak_rss_mb(_write_set(tmp_path / "large", 48, shape), tmp_path)
    held = 48 * 2 * 3 * 384 * 384 * 4 / 2**20
    assert large - small < 40, (small, large, held)  # MB


def _digit_set(tmp_path, count, seed):
    """`count` generated digits as tmp_path/digits/dNN.npy (the trained MNIST CNN's inputs) and their labels;
    skipped where digit-recognizer-py is not installed."""
    import importlib.util

    if importlib.util.find_spec("digit_recognizer") is None:
        pytest.skip("digit-recognizer-py (requirements/models.txt) is not installed")
    from real_models import digit_images

    images, labels = digit_images(count, seed=seed)
    data = tmp_path / "digits"
    data.mkdir()
    for i, image in enumerate(images):
        np.save(data / f"d{i:02d}.npy", image[None])
    return data, images, labels


def test_labels_score_the_reference_and_every_row(cli, tmp_path):
    """A trained MNIST CNN over labelled digit images: top-1 of the reference as computed directly, and
    of each row; the drop is gated."""
    data, images, labels = _digit_set(tmp_path, 12, seed=3)
    import torch
    from real_models import digits

    (tmp_path / "labels.csv").write_text("sample,label\n" + "".join(f"d{i:02d}.npy,{int(y)}\n"
                                                                  for i, y in enumerate(labels)))
    with torch.inference_mode():
        expected = float(np.mean(digits()(torch.from_numpy(images)).argmax(-1).numpy() == labels))
    report_path = tmp_path / "r.json"
    result = cli("compare", "real_models:digits", "--dataset", data, "--labels", tmp_path / "labels.csv",
                 "--backends", "torch,ort", "--precisions", "fp32,fp16", "--iterations", "1", "--max-top1-drop",
                 "0%", "--no-cache", "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    assert f"against the labels top1 {expected:.2%} (reference {expected:.2%})" in result.out
    report = json.loads(report_path.read_text())
    info = report["analysis"]["dataset"]["labels"]
    assert info["labelled"] == 12 and info["unlabelled"] == []
    assert info["reference"]["top1"] == pytest.approx(expected)
    for row in report["results"][1:]:
        scores = row["details"]["dataset"]["labels"]
        assert scores["scores"]["top1"] == pytest.approx(expected) and scores["drop"]["top1"] == pytest.approx(0.0)
        assert scores["scores"]["top5"] >= scores["scores"]["top1"]


def test_a_task_metric_drop_beyond_the_gate_fails_the_row():
    from deployval.judge.results import PASS, BackendResult
    from deployval.run.dataset_run import _judge_labels

    row = BackendResult("ort", "int8", "cpu", PASS, details={"dataset": {}})
    _judge_labels(row, {"top1": 0.90, "top5": 0.99}, {"top1": 0.92, "top5": 0.99}, {"top1": 0.005})
    assert row.status == "fail" and row.reason.startswith("top1 drop 2.00% exceeds 0.50%")
    kept = BackendResult("ort", "int8", "cpu", PASS, details={"dataset": {}})
    _judge_labels(kept, {"top1": 0.92}, {"top1": 0.92}, {"top1": 0.005})
    assert kept.status == PASS and kept.details["dataset"]["labels"]["drop"] == {"top1": 0.0}


def test_label_metrics_by_hand():
    from deployval.judge.metrics import label_metrics
    from deployval.model.spec import TaskSpec

    logits = np.array([[0.1, 0.7, 0.2, 0.0]])
    assert label_metrics(logits, 1, TaskSpec("classification", axis=-1, topk=2)) == {"top1": 1.0, "top2": 1.0}
    assert label_metrics(logits, 2, TaskSpec("classification", axis=-1, topk=2)) == {"top1": 0.0, "top2": 1.0}
    seg = np.zeros((1, 2, 2, 2))
    seg[0, 1, 0, :] = 1.0  # predicts class 1 in the top row
    mask = np.array([[[1, 0], [0, 0]]])
    # class 0: predicted 2, true 3, both 2 -> 0.8; class 1: predicted 2, true 1, both 1 -> 2/3
    assert label_metrics(seg, mask, TaskSpec("segmentation"))["dice"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_a_sample_the_reference_refuses_is_left_out_by_name(cli, tmp_path):
    data = _write_set(tmp_path / "set", 4, shape=(1, 3, 8, 8))
    np.save(data / "s02.npy", np.full((1, 3, 8, 8), 10.0, np.float32))  # the reference raises on it
    report_path = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:picks_samples", "--dataset", data, "--backends", "ort", "--iterations",
                 "1", "--no-cache", "--json", report_path, "-q")
    assert result.code == 0, result.out + result.err
    report = json.loads(report_path.read_text())
    assert report["samples"] == 3
    [unusable] = report["analysis"]["dataset"]["unusable"]
    assert unusable["sample"] == "s02.npy" and "the reference failed on it" in unusable["reason"]


def test_an_interrupted_run_leaves_the_samples_judged_so_far(cli, tmp_path):
    data = _write_set(tmp_path / "set", 5, shape=(1, 3, 8, 8))
    np.save(data / "s03.npy", np.full((1, 3, 8, 8), -10.0, np.float32))  # Ctrl-C while on this one
    report_path = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:picks_samples", "--dataset", data, "--backends", "ort", "--iterations",
                 "1", "--no-cache", "--json", report_path, "-q")
    assert result.code == 130
    report = json.loads(report_path.read_text())
    assert report["samples"] == 3 and report["analysis"]["dataset"]["complete"] is False
    assert report["results"][0]["details"]["dataset"]["samples"] == 3


def test_images_go_through_the_declared_preprocessing(cli, tmp_path):
    from PIL import Image

    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(data / f"img{i}.png")
    report_path = tmp_path / "r.json"
    result = cli("compare", "srcnn", "--input-shape", "image=1x3x32x32", "--dataset", data, "--preprocess",
                 "resize=32x32,scale=0.003922", "--backends", "ort", "--iterations", "1", "--no-cache", "--json",
                 report_path, "-q")
    assert result.code == 0, result.out + result.err
    report = json.loads(report_path.read_text())
    assert report["samples"] == 3 and report["analysis"]["dataset"]["unusable"] == []


def test_the_weight_sweep_over_a_labelled_set(cli, tmp_path):
    """precision --sweep --dataset --labels: each bit width's mean over the samples and its top-1."""
    data, _, labels = _digit_set(tmp_path, 10, seed=4)
    (tmp_path / "labels.json").write_text(json.dumps({f"d{i:02d}": int(y) for i, y in enumerate(labels)}))
    report_path = tmp_path / "sweep.json"
    result = cli("precision", "real_models:digits", "--sweep", "--bits", "2,8", "--dataset", data, "--labels",
                 tmp_path / "labels.json", "--no-cache", "--json", report_path)
    assert result.code == 0, result.out + result.err
    sweep = json.loads(report_path.read_text())
    assert sweep["samples"] == 10 and "top1 vs labels" in result.out
    by_bits = {(r["scheme"], r["bits"]): r for r in sweep["rows"]}
    assert by_bits[("per-channel", 8)]["rel_l2"] < 0.02 < by_bits[("per-channel", 2)]["rel_l2"]
    assert 0.0 <= by_bits[("per-tensor", 2)]["labels"]["top1"] <= 1.0
    result = cli("precision", "real_models:digits", "--dataset", data, "--labels", tmp_path / "labels.json", "-q")
    assert_one_line_error(result, 2, "--labels goes with --sweep")


def test_a_verdict_delivered_twice_counts_once():
    """A retried Ray block may deliver a sample's verdict again: the driver keeps the first."""
    from deployval.run.dataset_run import SampleVerdict
    from deployval.run.distributed import once_per_sample

    first, again, other = SampleVerdict("a.npz", fault="x"), SampleVerdict("a.npz", fault="y"), SampleVerdict("b.npz")
    kept = list(once_per_sample([first, ("c.npz", "unreadable"), again, other, ("c.npz", "unreadable")]))
    assert kept == [first, ("c.npz", "unreadable"), other] and kept[0].fault == "x"

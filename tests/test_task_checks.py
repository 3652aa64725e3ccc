"""Task checks (--task, --judge): a row judged by what the model is for, beside or instead of its norms.
The user's check is called with the reference's outputs, the row's outputs and the inputs; what it says
enters the verdict, every report, the data-set aggregation and report diff; a check that breaks is an
ERROR row, never a pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_line_error

from deployval.errors import UsageError
from deployval.judge.task_checks import TaskCheck, run_check

SAME = "dv_test_models:same_top_class"
CONVS = ["convs", "--backends", "torch", "--iterations", "1"]


def _run(text: str, reference: dict, outputs: dict):
    check = TaskCheck.parse(text)
    return run_check(check, check.resolve(), reference, outputs, {})


def test_the_contract_is_held_or_the_row_is_an_error():
    y = np.random.default_rng(0).random((1, 3, 4, 4)).astype(np.float32)
    assert _run(SAME, {"y": y}, {"y": y * 2}).passed
    moved = y.copy()
    moved[0, :, 0, 0] = moved[0, ::-1, 0, 0] + np.array([0, 0, 1], np.float32)  # one position changes class
    outcome = _run(SAME, {"y": y}, {"y": moved})
    assert not outcome.passed and outcome.metrics["agreement"] == pytest.approx(15 / 16)
    assert _run("dv_test_models:check_that_raises", {"y": y}, {"y": y}).error == \
        "raised ValueError: no decoder for this output"
    assert _run("dv_test_models:check_without_verdict", {"y": y}, {"y": y}).error == \
        "returned no 'passed': True or False"
    with pytest.raises(UsageError, match="cannot import 'no_such_module'"):
        TaskCheck.parse("no_such_module:check")
    with pytest.raises(UsageError, match="'blanks=1' is not an option of ctc"):
        TaskCheck.parse("ctc:blanks=1")


def test_ctc_and_sequence_read_what_a_decoder_reads():
    probabilities = np.full((2, 6, 4), 0.1, np.float32)
    for item, path in enumerate([[1, 1, 0, 2, 2, 3], [3, 0, 3, 0, 0, 1]]):
        probabilities[item, range(6), path] = 0.7
    same_text = probabilities.copy()
    same_text[0, 1] = [0.1, 0.1, 0.1, 0.7]  # [1, 3, 0, 2, 2, 3] decodes to 1 3 2 3: differs
    assert not _run("ctc", {"p": probabilities}, {"p": same_text}).passed
    blank_shift = probabilities.copy()
    blank_shift[0, 1] = [0.7, 0.1, 0.1, 0.1]  # [1, 0, 0, 2, 2, 3] still decodes to 1 2 3
    assert _run("ctc", {"p": probabilities}, {"p": blank_shift}).passed
    after_end = probabilities.copy()
    after_end[1, 5] = [0.1, 0.1, 0.7, 0.1]  # item 1 ends at its first 3 (step 0): what follows is never read
    assert _run("sequence:end=3", {"p": probabilities}, {"p": after_end}).passed
    assert not _run("sequence", {"p": probabilities}, {"p": after_end}).passed


def _yolo(boxes: list[list[float]], scores: list[tuple[int, float]], anchors: int = 32) -> np.ndarray:
    out = np.zeros((4 + 3, anchors), np.float32)
    out[2:4] = 8
    for i, (box, (cls, score)) in enumerate(zip(boxes, scores)):
        out[:4, i] = box
        out[4 + cls, i] = score
    return out[None]


def test_detection_matches_boxes_by_class_and_iou():
    ref = _yolo([[100, 100, 50, 50], [300, 300, 40, 40], [102, 101, 50, 50]], [(0, 0.9), (1, 0.6), (0, 0.8)])
    assert _run("detection", {"o": ref}, {"o": ref}).metrics["reference_detections"] == 2  # one suppressed
    moved = _yolo([[104, 100, 50, 50], [300, 300, 40, 40]], [(0, 0.88), (1, 0.6)])
    assert _run("detection", {"o": ref}, {"o": moved}).passed
    dropped = _yolo([[100, 100, 50, 50], [300, 300, 40, 40]], [(0, 0.7), (1, 0.6)])
    assert _run("detection", {"o": ref}, {"o": dropped}).reason == \
        "of 2 detections above score 0.25: a score dropped by 0.2 (> 0.05)"
    relabelled = _yolo([[100, 100, 50, 50], [300, 300, 40, 40]], [(2, 0.9), (1, 0.6)])
    assert _run("detection:max_score_drop=1", {"o": ref}, {"o": relabelled}).metrics == pytest.approx(
        {"reference_detections": 2, "matched": 1, "missed": 1, "extra": 1, "max_score_drop": 0.0, "min_iou": 1.0})


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """convs' inputs and outputs, one copy scaled by 1.5 (every class kept, the norms far off) and one with
    a single position's class changed (the norms nearly the same)."""
    from deployval.cli import main

    root = tmp_path_factory.mktemp("task")
    assert main(["compare", *CONVS, "--save-inputs", str(root / "in.npz"), "--save-outputs",
                 str(root / "gold.npz"), "-q"]) == 0
    with np.load(root / "gold.npz") as data:
        gold = {k: data[k].copy() for k in data.files}
    np.savez(root / "scaled.npz", **{**gold, "y": gold["y"] * 1.5})
    y = gold["y"].copy()
    top = y[0, :, 5, 5].argmax()
    y[0, top, 5, 5] = y[0, :, 5, 5].min() - 0.01
    np.savez(root / "relabelled.npz", **{**gold, "y": y})
    return root


@pytest.mark.parametrize("expected, judge, code", [
    ("scaled", "task", 0), ("scaled", "both", 1), ("scaled", "norms", 1),
    ("relabelled", "task", 1), ("relabelled", "both", 1), ("relabelled", "norms", 0)])
def test_the_judge_decides_what_gates(cli, golden, expected, judge, code):
    path = golden / f"{expected}-{judge}.json"
    result = cli("compare", *CONVS, "--inputs", golden / "in.npz", "--expected", golden / f"{expected}.npz",
                 "--tolerance", "rel_l2=0.1", "--task", SAME, "--judge", judge, "--json", path, "-q")
    assert result.code == code, result.out + result.err
    report = json.loads(path.read_text())
    assert report["analysis"]["judge"] == {"mode": judge, "task": SAME}
    row = report["results"][0]
    assert row["task_check"]["passed"] is (expected == "scaled")
    assert f"--task {SAME} --judge {judge}" in row["reproduce"]
    assert f"--judge {judge}" in result.out  # the console says what gated
    if judge == "task" and expected == "scaled":
        assert any("by the norms it would fail" in w for w in row["warnings"])
    if code == 1 and judge != "norms" and expected == "relabelled":
        assert "task dv_test_models:same_top_class: 0.10% of positions predict another class" in row["reason"]


def test_a_check_that_breaks_is_an_error_row_in_every_report(cli, golden):
    files = {"--json": golden / "e.json", "--junit": golden / "e.xml", "--markdown": golden / "e.md"}
    result = cli("compare", *CONVS, "--precisions", "fp32,fp16", "--task", "dv_test_models:check_that_raises",
                 "--judge", "norms", *[x for kv in files.items() for x in kv], "-q")
    assert result.code == 3, result.out + result.err
    row = json.loads(files["--json"].read_text())["results"][1]
    assert row["status"] == "error"
    assert row["reason"] == "task check dv_test_models:check_that_raises: raised ValueError: no decoder for this output"
    assert 'type="TaskCheckError"' in files["--junit"].read_text()
    assert "task torch:fp16: error: raised ValueError" in files["--markdown"].read_text()


@pytest.mark.parametrize("args, says", [
    (["--judge", "task"], "--judge task needs a task check"),
    (["--judge", "tasks", "--task", "ctc"], "--judge 'tasks': choose from norms, task, both"),
    (["--task", "sequence:end=x"], "end=x is not a int"),
    (["--task", "dv_test_models:no_such_check"], "has no attribute 'no_such_check'"),
])
def test_bad_task_options_are_one_line(cli, args, says):
    assert_one_line_error(cli("compare", *CONVS, *args, "-q"), 2, says)


def test_a_data_set_counts_the_samples_the_task_fails(cli, tmp_path):
    """convs' random weights leave near-ties between its 3 classes: fp16 flips some positions' class while
    its norms pass. Each sample's task verdict gates the row (--judge both) and is counted."""
    data = tmp_path / "set"
    data.mkdir()
    for i in range(3):
        np.save(data / f"s{i}.npy", np.random.default_rng(i).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32))
    path = tmp_path / "r.json"
    result = cli("compare", "convs", "--dataset", data, "--backends", "torch,ort", "--precisions", "fp32,fp16",
                 "--task", SAME, "--iterations", "1", "--json", path, "-q")
    rows = {f"{r['backend']}:{r['precision']}": r for r in json.loads(path.read_text())["results"][1:]}
    assert rows["ort:fp32"]["details"]["dataset"]["task"]["failed"] == 0 and rows["ort:fp32"]["status"] == "pass"
    assert rows["torch:fp16"]["details"]["dataset"]["task"]["failed"] > 0  # a class flipped
    for label, row in rows.items():
        over, samples = row["details"]["dataset"]["task"], row["details"]["dataset"]
        assert over["metrics"]["agreement"]["mean"] <= 1.0 and len(over["metrics"]["agreement"]) == 4
        assert samples["failed"] == over["failed"], label  # every norm passes: the task decides
        assert row["status"] == ("fail" if over["failed"] else "pass"), label
        for record in samples["worst"]:
            assert record["passed"] == (not any("task " + SAME in f for f in record["failures"])), record
    flipped = rows["torch:fp16"]["details"]["dataset"]["task"]["failed"]
    assert result.code == 1 and f"over 3 samples it failed on {flipped}" in result.out


def test_report_diff_names_a_task_that_now_fails(cli, golden):
    base = ["compare", *CONVS, "--inputs", golden / "in.npz", "--tolerance", "rel_l2=0.1", "--task", SAME,
            "--judge", "norms", "-q"]
    assert cli(*base, "--expected", golden / "gold.npz", "--json", golden / "a.json").code == 0
    assert cli(*base, "--expected", golden / "relabelled.npz", "--json", golden / "b.json").code == 0
    result = cli("report", "diff", golden / "a.json", golden / "b.json", "--json", golden / "d.json")
    assert result.code == 1, result.out + result.err
    changes = json.loads((golden / "d.json").read_text())["changes"]
    assert any(c["what"] == "task" and c["kind"] == "regression" and c["metric"] == SAME for c in changes), changes


def test_a_manifest_entry_takes_its_task_judge_and_slices(cli, tmp_path):
    (tmp_path / "deployval.toml").write_text(f"""
[[model]]
id = "convs-task"
model = "convs"
backends = ["torch", "ort"]
precisions = ["fp32", "fp16"]
iterations = 1
task = "{SAME}"
judge = "both"
slices = ["y:1"]
""")
    path = tmp_path / "r.json"
    result = cli("validate", "--all", "--manifest", tmp_path / "deployval.toml", "--json", path, "-q")
    assert result.code == 0, result.out + result.err
    report = json.loads(path.read_text())["reports"][0]
    assert report["analysis"]["judge"] == {"mode": "both", "task": SAME}
    row = next(r for r in report["results"] if r["precision"] == "fp16")
    assert row["task_check"]["passed"] and len(row["outputs"][0]["slices"]) == 3
    (tmp_path / "bad.toml").write_text('[[model]]\nmodel = "convs"\ntask = "ctc:blank=x"\n')
    assert_one_line_error(cli("validate", "--all", "--manifest", tmp_path / "bad.toml", "-q"), 2,
                          "blank=x is not a int")


def test_the_python_api_takes_a_check_function():
    import dv_test_models

    from deployval import api

    report = api.compare("convs", backends=("torch",), precisions=("fp32", "fp16"), iterations=1,
                         task=dv_test_models.same_top_class, judge="task")
    assert report and report.result("torch", "fp16").task_check["passed"]
    assert report.analysis["judge"] == {"mode": "task", "task": SAME}

"""`debug` reproduces the int8 artifact a `compare` row judged: it takes compare's calibration options
(the same option group) and `--dataset` (calibrated on the set's first sample, as compare does), so a
failing row's reproduction line turned into a debug line builds the identical artifact (same sha256,
same cache entry). Without them debug calibrates on the debugged input and builds another one."""

from __future__ import annotations

import json
import shlex

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error
from onnx import TensorProto, numpy_helper
from onnx import helper as h


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A Conv -> Relu -> Conv file, a data set whose samples grow in range (the first calibrates, the
    later ones clip at int8), and a calibration directory of other samples."""
    root = tmp_path_factory.mktemp("calibrated")
    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(8) * 0.1,
               "w2": rng.standard_normal((4, 8, 3, 3)) * 0.2, "b2": rng.standard_normal(4) * 0.1}
    graph = h.make_graph([
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ], "calibrated", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12])],
        initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = root / "calibrated.onnx"
    onnx.save(model, str(path))
    data, calibration = root / "data", root / "calibration"
    data.mkdir()
    calibration.mkdir()
    for i in range(4):
        np.save(data / f"s{i}.npy", (rng.standard_normal((1, 3, 12, 12)) * (1 + 3 * i)).astype(np.float32))
    for i in range(3):
        np.save(calibration / f"c{i}.npy", (rng.standard_normal((1, 3, 12, 12)) * 2).astype(np.float32))
    return {"model": path, "data": data, "calibration": calibration, "root": root}


def _artifact(path):
    data = json.loads(path.read_text())
    if data.get("kind") == "debug":
        return data["artifact"]["sha256"], data["artifact"]["path"]
    (row,) = [r for r in data["results"] if r["precision"] == "int8"]
    return row["artifact"]["sha256"], row["artifact"]["path"]


def _debug_line(reproduce: str) -> list[str]:
    """A compare row's reproduction line as the debug line the README describes."""
    words = shlex.split(reproduce)
    assert words[:2] == ["deployval", "compare"]
    swap = {"--backends": "--backend", "--precisions": "--precision"}
    return ["debug", *(swap.get(w, w) for w in words[2:])]


def test_debug_with_compares_calibration_builds_the_same_int8_artifact(cli, case):
    model, root = case["model"], case["root"]
    options = ["--calibration", case["calibration"], "--calibration-method", "minmax", "--calibration-limit", "2"]
    assert cli("compare", model, "--backends", "ort", "--precisions", "int8", *options,
               "--json", root / "compare.json", "-q").code in (0, 1)
    compared = _artifact(root / "compare.json")
    result = cli("debug", model, "--backend", "ort", "--precision", "int8", *options, "--json", root / "debug.json",
                 "-q")
    assert result.code in (0, 1), result.err
    assert _artifact(root / "debug.json") == compared  # same sha256, same cache entry
    assert "--calibration" in result.out and "as compare with the same options" in result.out
    # without them, debug calibrates on its own input: another artifact
    assert cli("debug", model, "--backend", "ort", "--precision", "int8", "--json", root / "own.json",
               "-q").code in (0, 1)
    assert _artifact(root / "own.json")[0] != compared[0]


def test_a_failing_dataset_row_reproduced_by_debug(cli, case):
    """compare --dataset fails on later samples (calibrated on the first); its reproduction line,
    turned into a debug line with the failing sample as --inputs, builds the same artifact and fails
    too, where debug on that sample alone (calibrated on itself) passes."""
    model, root, data = case["model"], case["root"], case["data"]
    result = cli("compare", model, "--backends", "ort", "--precisions", "int8", "--dataset", data,
                 "--json", root / "dataset.json", "-q")
    assert result.code == 1, result.out
    report = json.loads((root / "dataset.json").read_text())
    (row,) = [r for r in report["results"] if r["precision"] == "int8"]
    compared = _artifact(root / "dataset.json")
    worst = row["details"]["dataset"]["worst"][0]["sample"]
    line = [*_debug_line(row["reproduce"]), "--inputs", data / worst, "--json", root / "worst.json", "-q"]
    debugged = cli(*line)
    assert debugged.code == 1, debugged.out
    assert _artifact(root / "worst.json") == compared
    assert "first sample 's0.npy'" in debugged.out
    alone = cli("debug", model, "--backend", "ort", "--precision", "int8", "--inputs", data / worst,
                "--json", root / "alone.json", "-q")
    assert alone.code == 0, alone.out
    assert _artifact(root / "alone.json")[0] != compared[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--calibration", "{root}/missing"], "--calibration '{root}/missing' is not a directory"),
    (["--calibration-method", "median"], "unknown calibration method 'median'"),
    (["--dataset", "{root}/missing"], "--dataset '{root}/missing' is not a directory"),
    (["--limit", "2"], "--limit applies to --dataset"),
])
def test_bad_calibration_input_is_one_line(cli, case, args, message):
    root = str(case["root"])
    result = cli("debug", case["model"], "--backend", "ort", "--precision", "int8",
                 *(a.format(root=root) for a in args), "-q")
    assert_one_line_error(result, 2, message.format(root=root))

"""Incomplete-work cases of the reliability corpus: partial reports, missing shards, merges and diffs of
work that did not finish. None of them may end in PASS.

Partial reports are made the way a Ctrl-C leaves them: the rows not yet run absent, `complete: false`,
and a stored summary that still says PASS (as partial reports once did), so a case passes only if the
verdict is recomputed from the rows."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from corpus import Case

MANIFEST = """
[defaults]
iterations = 1

[[model]]
id = "convs-a"
model = "convs"
backends = ["torch", "ort"]

[[model]]
id = "convs-b"
model = "convs"
gate = ["torch:fp32", "ort:fp32", "ort:fp16"]
"""


def _compare(tmp: Path) -> dict[str, Any]:
    """convs through torch and ONNX Runtime at fp32 and fp16 (a complete, passing report)."""
    from deployval.cli import main

    assert main(["compare", "convs", "-b", "torch,ort", "-p", "fp32,fp16", "--iterations", "1",
                 "--json", str(tmp / "full.json"), "-q"]) == 0
    return json.loads((tmp / "full.json").read_text())


def cut_short(report: dict[str, Any], keep: int) -> dict[str, Any]:
    """The report as a Ctrl-C after `keep` rows leaves it: those rows only, not complete (its stored
    summary left saying PASS, as partial reports once did: nothing may read it)."""
    partial = copy.deepcopy(report)
    partial["results"] = partial["results"][:keep]
    partial["complete"] = False
    partial["summary"] = {**partial["summary"], "verdict": "PASS", "exit_code": 0}
    return partial


def write(tmp: Path, name: str, data: Any) -> Path:
    (tmp / name).write_text(json.dumps(data))
    return tmp / name


def _shard(tmp: Path, index: int) -> Path:
    from deployval.cli import main

    (tmp / "deployval.toml").write_text(MANIFEST)
    path = tmp / f"s{index}.json"
    assert main(["validate", "--all", "--manifest", str(tmp / "deployval.toml"), "--shard", f"{index}/2",
                 "--json", str(path), "-q"]) == 0
    return path


def merge_reference_only(tmp: Path) -> list[str]:
    return ["report", "merge", str(write(tmp, "p.json", cut_short(_compare(tmp), 1)))]


def merge_one_shard(tmp: Path) -> list[str]:
    return ["report", "merge", str(_shard(tmp, 1))]


def merge_gated_row_missing(tmp: Path) -> list[str]:
    suite = json.loads(_shard(tmp, 2).read_text())
    for report in suite["reports"]:
        report["results"] = [r for r in report["results"] if r["precision"] != "fp16"]
    return ["report", "merge", str(_shard(tmp, 1)), str(write(tmp, "s2-cut.json", suite))]


def diff_incomplete_candidate(tmp: Path) -> list[str]:
    full = _compare(tmp)
    return ["report", "diff", str(tmp / "full.json"), str(write(tmp, "p.json", cut_short(full, 4)))]


def onnx_file_default_backends(tmp: Path) -> list[str]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4,), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(tmp / "m.onnx"))
    return ["compare", str(tmp / "m.onnx"), "--iterations", "1"]


def onnx_file_int8_nothing_to_quantize(tmp: Path) -> list[str]:
    """An Add-only graph at int8: the row is planned, then skipped (nothing to quantize)."""
    return [*onnx_file_default_backends(tmp), "--backends", "ort", "--precisions", "int8"]


def reference_only(tmp: Path) -> list[str]:
    return ["compare", "convs", "--backends", "torch", "--iterations", "1"]


def merge_reference_only_complete(tmp: Path) -> list[str]:
    full = _compare(tmp)
    only = {**full, "results": [r for r in full["results"] if r["status"] == "reference"]}  # finished, complete
    return ["report", "merge", str(write(tmp, "t.json", only))]


CASES: list[Case] = [
    Case("compare-onnx-file-defaults", "compare FILE.onnx with the default backends: ONNX Runtime fp32, the "
         "reference itself, and nothing else (once: PASS, exit 0)", onnx_file_default_backends, 2,
         "nothing to judge: ort fp32 is the reference itself"),
    Case("compare-reference-only", "compare with --backends torch on a PyTorch model: only the reference runs "
         "(once: PASS, exit 0)", reference_only, 2, "nothing to judge: torch fp32 is the reference itself"),
    Case("compare-every-row-skipped", "compare FILE.onnx --precisions int8 of a graph with nothing to quantize: "
         "the one row is skipped, nothing judged (once: PASS, exit 0)", onnx_file_int8_nothing_to_quantize, 3,
         "nothing was judged", error_line=False),
    Case("merge-reference-only-complete", "report merge of a finished report holding only the reference row "
         "(once: PASS, exit 0)", merge_reference_only_complete, 3, "INCOMPLETE", error_line=False),
    Case("merge-reference-only-partial", "report merge of a Ctrl-C'd report holding only the reference row, its "
         "stored summary saying PASS (once: PASS, exit 0)", merge_reference_only, 3, "INCOMPLETE", error_line=False),
    Case("merge-one-shard", "report merge of shard 1/2 alone (once: PASS, exit 0)", merge_one_shard, 3,
         "shard 2/2 missing", error_line=False),
    Case("merge-gated-row-never-ran", "report merge of shards where the gated ort:fp16 row never ran (once: PASS)",
         merge_gated_row_missing, 3, "the gate's ort:fp16 did not run", error_line=False),
    Case("diff-incomplete-candidate", "report diff whose candidate's run did not finish, every row present "
         "(once: exit 0)", diff_incomplete_candidate, 1, "the candidate is incomplete", error_line=False),
]

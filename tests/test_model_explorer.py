"""`deployval debug --model-explorer FILE.json` checked against Model Explorer itself
(ai-edge-model-explorer + model-explorer-onnx): every overlay file parses into the package's own
`GraphNodeData` (built with dacite, type-checked, as the package builds its dataclasses from JSON), the
status is numeric, and every node of a layer is keyed by the id the ONNX adapter gives it.

The package's dataclasses do not check types by themselves; dacite's `from_dict` does (it is how the
package reads JSON into its dataclasses, e.g. ndp_runner.py, and one of its dependencies). A user saw the
old status overlay (`"value": "pass"`) rejected exactly so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import pytest
from conftest import unnamed_and_repeated_nodes

pytest.importorskip("model_explorer")
pytest.importorskip("model_explorer_onnx")
dacite = pytest.importorskip("dacite")

from model_explorer.node_data_builder import GraphNodeData, ModelNodeData  # noqa: E402
from model_explorer_onnx.main import ONNXAdapter  # noqa: E402

from deployval.catalog.registry import resolve_model  # noqa: E402
from deployval.debug.model_explorer import (  # noqa: E402
    STATUS_CODES,
    STATUS_COLORS,
    node_ids,
    node_values,
    series_paths,
)
from deployval.debug.report import DebugReport  # noqa: E402
from deployval.debug.run import run_debug  # noqa: E402
from deployval.model.arguments import parse_input_shape  # noqa: E402
from deployval.model.spec import RunConfig  # noqa: E402

STRICT = dacite.Config(strict=True)  # unknown keys are errors too, not only wrong types
Explored = tuple[DebugReport, dict[str, dict[str, Any]], onnx.ModelProto]  # report, overlay per series, artifact


def adapter_nodes(path: str) -> dict[str, str]:
    """Node id -> label (op type) of the main graph as model-explorer-onnx's adapter builds it."""
    graphs = ONNXAdapter().convert(path, {})["graphs"]
    return {node.id: node.label for node in graphs[0].nodes}


@pytest.fixture(scope="module")
def explored(tmp_path_factory: pytest.TempPathFactory) -> Explored:
    """tiny_transformer: blocks.1.attn.proj (several ONNX nodes) diverges first; the error is new in
    blocks.1.attn's own code (its softmax), which is a set of nodes of no child layer."""
    root = tmp_path_factory.mktemp("explorer")
    spec = resolve_model("debug_models:tiny_transformer", input_shapes=[parse_input_shape("x=1x12x8")])
    report = run_debug(spec, "ort", "fp32", RunConfig(), model_explorer=root / "layers.json")
    assert report.model_explorer and "open" in report.model_explorer, report.model_explorer
    data = {s: json.loads(p.read_text()) for s, p in series_paths(root / "layers.json").items()}
    return report, data, onnx.load(report.model_explorer["artifact"], load_external_data=False)


def test_every_overlay_is_accepted_by_model_explorers_own_classes(explored: Explored) -> None:
    _, data, artifact = explored
    for series, content in data.items():
        parsed = dacite.from_dict(GraphNodeData, content, config=STRICT)
        assert parsed.results, series
        # the file is what the package itself writes for that object (as a graph's data in a model's, too)
        assert json.loads(parsed.to_json_string()) == content, series
        json.loads(ModelNodeData(graphsData={artifact.graph.name or "main_graph": parsed}).to_json_string())
    # the check has teeth: the old status overlay is what the user saw rejected
    old = {**data["status"], "results": {"n": {"value": "pass", "bgColor": STATUS_COLORS["pass"]}}}
    with pytest.raises(dacite.DaciteError):
        dacite.from_dict(GraphNodeData, old, config=STRICT)


def test_status_values_are_codes_each_with_a_colour_and_a_legend(explored: Explored) -> None:
    report, data, _ = explored
    status = data["status"]
    values = [r["value"] for r in status["results"].values()]
    assert values and all(type(v) is int and v in STATUS_CODES.values() for v in values)
    assert {STATUS_CODES["pass"], STATUS_CODES["diverges"], STATUS_CODES["first divergent"],
            STATUS_CODES["error is new here"]} == set(values)
    assert report.model_explorer["status_codes"] == STATUS_CODES
    # the UI colours a value by the first threshold it does not exceed (getBgColor): one colour per code
    for word, code in STATUS_CODES.items():
        colour = next(t["bgColor"] for t in status["thresholds"] if code <= t["value"])
        assert colour == STATUS_COLORS[word]
        assert f"{code} = {word}" in status["name"]
    assert len({t["bgColor"] for t in status["thresholds"]}) == len(STATUS_CODES)


def test_node_ids_resolve_in_the_onnx_adapters_graph(explored: Explored) -> None:
    report, data, artifact = explored
    adapter = adapter_nodes(report.model_explorer["artifact"])
    for series, content in data.items():
        missing = set(content["results"]) - set(adapter)
        assert not missing, (series, sorted(missing)[:5])
    # and each id is the very node: the adapter's label for it is the node's op type
    for node, node_id in zip(artifact.graph.node, node_ids(artifact.graph)):
        assert adapter[node_id] == node.op_type
    assert report.model_explorer["first_divergent_node"] in adapter


def test_every_node_of_a_multi_node_layer_carries_its_values(explored: Explored) -> None:
    report, data, artifact = explored
    by_layer: dict[str, list[str]] = {}
    for node_id, entry in node_values(report, artifact).items():
        by_layer.setdefault(entry["layer"], []).append(node_id)
    producer = {o: i for n, i in zip(artifact.graph.node, node_ids(artifact.graph)) for o in n.output}
    first = report.layer("blocks.1.attn.proj")
    assert report.first_divergent == first.label
    nodes = by_layer[first.label]
    # a Linear is MatMul + Add (or Reshape, Gemm, Reshape once ONNX Runtime fused it): all of them
    assert len(nodes) == first.own["region_nodes"] >= 2 and producer[first.tensor] in nodes
    for node_id in nodes:
        assert data["status"]["results"][node_id]["value"] == STATUS_CODES["first divergent"]
        assert data["rel_l2"]["results"][node_id]["value"] == pytest.approx(first.metrics["rel_l2"])
        assert data["max_abs"]["results"][node_id]["value"] == pytest.approx(first.metrics["max_abs"])
        assert data["own_rel_l2"]["results"][node_id]["value"] == pytest.approx(first.own["metrics"]["rel_l2"])
        assert data["new_share"]["results"][node_id]["value"] == pytest.approx(first.new_share)
    # every leaf layer gets as many nodes as its own-error region had in this artifact
    for row in report.layers:
        descendants = [r for r in report.layers if row.label in r.ancestors]
        if row.own and "region_nodes" in row.own and not descendants:
            assert len(by_layer.get(row.label, [])) == row.own["region_nodes"], row.label
    # where the error is new: blocks.1.attn's own code (block 1's softmax), not its child proj
    assert report.localized is not None and report.localized.label == "blocks.1.attn"
    softmax = [i for n, i in zip(artifact.graph.node, node_ids(artifact.graph)) if n.op_type == "Softmax"]
    assert len(softmax) == 3 and softmax[1] in by_layer["blocks.1.attn"]
    assert data["status"]["results"][softmax[1]]["value"] == STATUS_CODES["error is new here"]
    assert data["status"]["results"][softmax[0]]["value"] == STATUS_CODES["pass"]
    assert len(data["status"]["results"]) > len(by_layer)  # not one node per layer


def test_main_graph_node_ids_are_the_adapters_for_unnamed_and_repeated_names(tmp_path: Path) -> None:
    """Unnamed nodes, a repeated name and an If (whose branches the adapter inlines and whose unnamed
    nodes share the naming counter): node_ids() gives the adapter's id of each main-graph node."""
    model = unnamed_and_repeated_nodes()
    graph = model.graph
    path = tmp_path / "named.onnx"
    onnx.save(model, str(path))
    adapter = adapter_nodes(str(path))
    ids = node_ids(graph)
    assert len(set(ids)) == len(ids) == 5
    assert [adapter.get(i) for i in ids] == [n.op_type for n in graph.node]

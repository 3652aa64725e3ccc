"""`debug --model-explorer FILE.json`: the per-layer findings as per-node data for Google Model Explorer,
to be laid over the debugged ONNX artifact (`model-explorer ARTIFACT.onnx --extensions=model_explorer_onnx
--node_data_paths=FILE.json,...`, or "Add per-node data" in the UI).

The format is Model Explorer's node data JSON, written here without depending on the package: a
`GraphNodeData` as `model_explorer/node_data_builder.py` (github.com/google-ai-edge/model-explorer,
src/server/package/src/model_explorer/node_data_builder.py) serializes it with `to_json_string` (its
dataclass fields, None dropped): `{"results": {NODE_KEY: {"value": V, "bgColor"?: C}}, "thresholds":
[{"value", "bgColor"}], "gradient": [{"stop", "bgColor"}], ...}`. A file without graph ids as keys
applies to the graph on screen (the UI's node_data_provider_extension_service.ts,
getNodeDataProviderData). One file is one series (one "run" in the UI), so each quantity gets a file.

NODE_KEY is the node id the ONNX adapter gives (github.com/justinchuby/model-explorer-onnx,
src/model_explorer_onnx/main.py, create_node: `id=onnx_node.name`). Unnamed nodes are named first by
onnx_ir's NameFixPass (the adapter's _passes.process_model): "node", then "node_1", "node_2", ... in
graph order (its counter is shared with subgraph bodies), and a repeated name gets "_1", "_2", ...
node_ids() reproduces that for the main graph. Keys could also be output tensor names, but the UI
matches those against an output's `tensor_name` metadata, which the ONNX adapter does not set (it
writes `__tensor_tag`), so node ids are the keys that work.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .report import FAIL, PASS, DebugReport, LayerResult

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto

# decade bands: an error of 1e-7 and one of 1e-1 must not get the same colour (a linear gradient would)
DECADES = [(1e-6, "#e8f5e9"), (1e-4, "#c8e6c9"), (1e-3, "#fff59d"), (1e-2, "#ffcc80"), (1e-1, "#ff8a65"),
           (1e300, "#e53935")]
STATUS_COLORS = {"pass": "#c8e6c9", "diverges": "#ff8a65", "first divergent": "#b71c1c",
                 "error is new here": "#6a1b9a"}
SERIES = ("status", "rel_l2", "max_abs", "own_rel_l2", "new_share")


def node_ids(graph: GraphProto) -> list[str]:
    """The ids Model Explorer's ONNX adapter gives the main graph's nodes, in graph order."""
    counter: Counter[str] = Counter()
    ids: list[str] = []

    def unique(name: str, used: set[str]) -> str:
        new = name
        while new in used:
            counter[name] += 1
            new = f"{name}_{counter[name]}"
        used.add(new)
        return new

    def visit(g: GraphProto, top: bool) -> None:
        used: set[str] = set()
        for node in g.node:
            node_id = unique(node.name or "node", used)
            if top:
                ids.append(node_id)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    visit(sub, False)

    visit(graph, True)
    return ids


def _status(row: LayerResult, report: DebugReport) -> str:
    if row.label == report.first_divergent:
        return "first divergent"
    if report.localized is not None and row.label == report.localized.label:
        return "error is new here"
    return "diverges" if row.status == FAIL else "pass"


def node_values(report: DebugReport, model: ModelProto) -> dict[str, dict[str, Any]]:
    """Per node id of the artifact, the compared row whose tensor the node produces: the first in
    execution order (a container shares its last child's tensor), unless a later one is the first
    divergent layer or where the error is new."""
    producer = {out: node_id for node, node_id in zip(model.graph.node, node_ids(model.graph)) for out in node.output}
    chosen: dict[str, LayerResult] = {}
    for row in report.layers:
        node_id = producer.get(row.tensor or "")
        if node_id is None or row.status not in (PASS, FAIL) or not row.metrics:
            continue
        held = chosen.get(node_id)
        if held is None or (_status(row, report) in ("first divergent", "error is new here")
                            and _status(held, report) != "first divergent"):
            chosen[node_id] = row
    values: dict[str, dict[str, Any]] = {}
    for node_id, row in chosen.items():
        entry: dict[str, Any] = {"layer": row.label, "status": _status(row, report),
                                 "rel_l2": row.metrics.get("rel_l2"), "max_abs": row.metrics.get("max_abs")}
        if row.own and "metrics" in row.own:
            entry["own_rel_l2"] = row.own["metrics"].get("rel_l2")
        if row.new_share is not None:
            entry["new_share"] = row.new_share
        values[node_id] = entry
    return values


def _finite(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and math.isfinite(value)


def graph_node_data(values: dict[str, dict[str, Any]], series: str) -> dict[str, Any]:
    """One series as Model Explorer's GraphNodeData JSON object."""
    if series == "status":
        results = {k: {"value": v["status"], "bgColor": STATUS_COLORS[v["status"]]} for k, v in values.items()}
        return {"results": results, "thresholds": [], "gradient": [], "hideInAggregatedStatsTable": False,
                "hideInChildrenStatsTable": False, "showExpandedSummaryOnGroupNode": True,
                "showLabelCountColumnsInChildrenStatsTable": True}
    results = {k: {"value": v[series]} for k, v in values.items() if _finite(v.get(series))}
    data: dict[str, Any] = {"results": results, "thresholds": [], "gradient": [], "hideInAggregatedStatsTable": False,
                            "hideInChildrenStatsTable": False, "showExpandedSummaryOnGroupNode": False,
                            "showLabelCountColumnsInChildrenStatsTable": False}
    if series == "new_share":  # 0..1: white (inherited) to purple (all new)
        data["gradient"] = [{"stop": 0, "bgColor": "#ffffff"}, {"stop": 1, "bgColor": "#6a1b9a"}]
    else:
        data["thresholds"] = [{"value": v, "bgColor": c} for v, c in DECADES]
    return data


def series_paths(path: Path) -> dict[str, Path]:
    """FILE.json holds the status; FILE.rel_l2.json, FILE.max_abs.json, ... the numbers."""
    return {s: path if s == "status" else path.with_name(f"{path.stem}.{s}{path.suffix or '.json'}") for s in SERIES}


def write_node_data(report: DebugReport, model: ModelProto, path: Path) -> dict[str, Any]:
    """Write every series; what was written, for the report."""
    from .._util import atomic_write_text

    values = node_values(report, model)
    paths = series_paths(Path(path))
    for series, target in paths.items():
        atomic_write_text(target, json.dumps(graph_node_data(values, series), indent=1, allow_nan=False))
    first = next((k for k, v in values.items() if v["status"] == "first divergent"), None)
    return {"files": {s: str(p) for s, p in paths.items()}, "nodes": len(values), "first_divergent_node": first,
            "artifact": report.artifact.get("path")}


def open_command(artifact: str | None, written: dict[str, Any]) -> str:
    import shlex

    files = ",".join(written["files"].values())
    return (f"model-explorer {shlex.quote(artifact or 'ARTIFACT.onnx')} --extensions=model_explorer_onnx "
            f"--node_data_paths={shlex.quote(files)}")

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
`NodeDataResult.value` is typed float | int (checked when the dataclasses are built from JSON with dacite,
as the package does): the status is therefore a code (STATUS_CODES), coloured by one threshold per code
(a value <= a threshold's takes its colour); ThresholdItem has no label, so the code -> words key is the
series' `name` and the report's `status_codes`.

Every node of a layer gets the layer's values (layer_nodes: the report keeps a layer's tensor, not its
nodes, so they are found again in the artifact); a node in several layers gets the innermost one's.

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

from ..metric_table import MAX_ABS, REL_L2
from .report import FAIL, PASS, DebugReport, LayerResult

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto

# decade bands: an error of 1e-7 and one of 1e-1 must not get the same colour (a linear gradient would)
DECADES = [(1e-6, "#e8f5e9"), (1e-4, "#c8e6c9"), (1e-3, "#fff59d"), (1e-2, "#ffcc80"), (1e-1, "#ff8a65"),
           (1e300, "#e53935")]
# Model Explorer types a node's value float | int (NodeDataResult.value): the status is a code
STATUS_CODES = {"pass": 0, "diverges": 1, "first divergent": 2, "error is new here": 3}
STATUS_COLORS = {"pass": "#c8e6c9", "diverges": "#ff8a65", "first divergent": "#b71c1c",
                 "error is new here": "#6a1b9a"}
STATUS_LEGEND = "status: " + ", ".join(f"{code} = {status}" for status, code in STATUS_CODES.items())
SERIES = ("status", REL_L2, MAX_ABS, "own_rel_l2", "new_share")


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


def _compared(row: LayerResult) -> bool:
    return row.status in (PASS, FAIL) and bool(row.metrics)


def layer_nodes(report: DebugReport, model: ModelProto) -> dict[str, list[int]]:
    """Per compared layer (label), the indices of the artifact's main-graph nodes that compute it.

    The report keeps a layer's output tensor, not its nodes, so they are found again in the artifact:
    walking back from the layer's tensor to the tensors of the layers around it (any other row's
    tensor except those of the layer's own descendants), graph inputs and initializers. That walk also
    takes in functional code feeding the layer (attention's own code before `proj`), so it is cut to
    the size of the layer's own-error region (`own["region_nodes"]`, measured on this very artifact)
    by keeping the nodes nearest the output in graph order; a slice so taken always holds every node's
    path to the output. Without that count, only nodes of the layer's op types connected to its
    output node are kept (an optimized artifact renames ops, so this keeps at least the output node).
    """
    from ..export.graph import node_inputs

    nodes = list(model.graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    found: dict[str, list[int]] = {}
    for row in report.layers:
        start = producer.get(row.tensor or "")
        if start is None or not _compared(row):
            continue
        stop = {other.tensor for other in report.layers
                if other.tensor and other.tensor != row.tensor and other is not row
                and row.label not in other.ancestors}
        ops = set(row.ops)
        count = row.own.get("region_nodes") if row.own and "metrics" in row.own else None
        walk: set[int] = set()
        pending = [start]
        while pending:
            index = pending.pop()
            if index in walk:
                continue
            if count is None and index != start and nodes[index].op_type not in ops:
                continue
            walk.add(index)
            pending.extend(producer[name] for name in node_inputs(nodes[index])
                           if name in producer and name not in stop)
        if isinstance(count, int) and 0 < count < len(walk):
            # a node without inputs (Constant) may sit anywhere before its use: rank it by its first reader
            readers: dict[int, int] = {}
            for index in walk:
                for name in node_inputs(nodes[index]):
                    if name in producer:
                        readers[producer[name]] = min(readers.get(producer[name], index), index)
            ranked = sorted(walk, key=lambda i: (readers.get(i, i) - 0.5) if not node_inputs(nodes[i]) else i)
            walk = set(ranked[-count:])
        found[row.label] = sorted(walk)
    return found


def node_values(report: DebugReport, model: ModelProto) -> dict[str, dict[str, Any]]:
    """Per node id of the artifact (as Model Explorer's ONNX adapter names it), the numbers of the
    innermost compared layer the node belongs to: every node of a layer carries the layer's values
    (rows come children first, so a container keeps only its own code's nodes)."""
    ids = node_ids(model.graph)
    rows = {row.label: row for row in report.layers}
    chosen: dict[int, LayerResult] = {}
    for label, indices in layer_nodes(report, model).items():
        for index in indices:
            chosen.setdefault(index, rows[label])
    values: dict[str, dict[str, Any]] = {}
    for index in sorted(chosen):
        row = chosen[index]
        status = _status(row, report)
        entry: dict[str, Any] = {"layer": row.label, "status": status, "status_code": STATUS_CODES[status],
                                 REL_L2: row.metrics.get(REL_L2), MAX_ABS: row.metrics.get(MAX_ABS)}
        if row.own and "metrics" in row.own:
            entry["own_rel_l2"] = row.own["metrics"].get(REL_L2)
        if row.new_share is not None:
            entry["new_share"] = row.new_share
        values[ids[index]] = entry
    return values


def _finite(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def graph_node_data(values: dict[str, dict[str, Any]], series: str) -> dict[str, Any]:
    """One series as Model Explorer's GraphNodeData JSON object (`value` is typed float | int there,
    so the status is its code, coloured by `thresholds`; the code -> words legend is in `name`)."""
    data: dict[str, Any] = {"results": {}, "thresholds": [], "gradient": [], "hideInAggregatedStatsTable": False,
                            "hideInChildrenStatsTable": False, "showExpandedSummaryOnGroupNode": False,
                            "showLabelCountColumnsInChildrenStatsTable": False}
    if series == "status":
        data["name"] = STATUS_LEGEND
        data["results"] = {k: {"value": v["status_code"]} for k, v in values.items()}
        # a value <= threshold takes its colour: one threshold per code
        data["thresholds"] = [{"value": code, "bgColor": STATUS_COLORS[s]} for s, code in STATUS_CODES.items()]
        data["hideAggregatedStats"] = ["sum", "avg"]  # min/max of codes mean something (max = worst), not these
        return data
    data["results"] = {k: {"value": v[series]} for k, v in values.items() if _finite(v.get(series))}
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
    ids = node_ids(model.graph)
    producer = {out: node_id for node, node_id in zip(model.graph.node, ids) for out in node.output if out}
    first_row = next((row for row in report.layers if row.label == report.first_divergent), None)
    first = producer.get(first_row.tensor or "") if first_row is not None else None
    return {"files": {s: str(p) for s, p in paths.items()}, "nodes": len(values),
            "layers": len({v["layer"] for v in values.values()}),
            "first_divergent_node": first if first in values else None, "status_codes": dict(STATUS_CODES),
            "artifact": report.artifact.get("path")}


def open_command(artifact: str | None, written: dict[str, Any]) -> str:
    import shlex

    files = ",".join(written["files"].values())
    return (f"model-explorer {shlex.quote(artifact or 'ARTIFACT.onnx')} --extensions=model_explorer_onnx "
            f"--node_data_paths={shlex.quote(files)}")

"""Which PyTorch modules each ONNX node ran in, read from the raw export (before simplification: the
simplifiers drop node metadata but keep node names). The store (--keep-fp32 module patterns), the
precision tools and the debugger's layer map all read it.

* dynamo exporter: every node's `metadata_props["pkg.torch.onnx.name_scopes"]` is a Python-literal
  list of the module call stack, e.g. ``['', 'stages.0', 'stages.0.blocks', 'stages.0.blocks.0',
  'stages.0.blocks.0.conv', 'conv2d_2']``: the root, the qualified name of each enclosing module, and
  the FX node's own name last. A module called twice shows the same name for both calls.
* legacy (TorchScript-based) exporter: node names carry the scopes, e.g.
  ``/stages.0/blocks/blocks.1/blocks.1.0/conv/Conv``: each segment names a module relative to one of
  its ancestors (a repeated call adds ``_1``, ``_2``… to a segment), the last segment is the op.

Nodes an optimizer made without a scope take the scope their neighbours share.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnx import ModelProto

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
DYNAMO = "dynamo node metadata (pkg.torch.onnx.name_scopes)"
LEGACY = "legacy exporter node names"
_SUFFIX = re.compile(r"^(.*)_(\d+)$")


def node_chains(model: ModelProto, module_names: Iterable[str]) -> tuple[list[tuple[str, ...] | None], str]:
    """Per node, the qualified names of the modules it ran in (outermost first), or None where the
    node carries no scope (constants, nodes made by optimizers)."""
    names = set(module_names)
    chains: list[tuple[str, ...] | None] = []
    dynamo = any(p.key == NAME_SCOPES for n in model.graph.node for p in n.metadata_props)
    for node in model.graph.node:
        if dynamo:
            chains.append(_dynamo_chain(node, names))
        else:
            chains.append(_legacy_chain(node.name, names))
    source = DYNAMO if dynamo else (LEGACY if any(c for c in chains) else "none")
    if source != "none":
        _inherit_scopes(model, chains)
    return chains, source


def _inherit_scopes(model: ModelProto, chains: list[tuple[str, ...] | None]) -> None:
    """Nodes an optimizer made carry no scope (the dynamo exporter's Split for `chunk`): give them the
    scope that their producers and consumers share (a node between two modules belongs to neither)."""
    nodes = list(model.graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    graph_inputs = {i.name for i in model.graph.input}
    for _ in range(3):  # unscoped nodes next to each other settle in a few passes
        changed = False
        for i, node in enumerate(nodes):
            if chains[i] is not None or node.op_type == "Constant":
                continue
            around: list[tuple[str, ...] | None] = [chains[j] for out in node.output for j in consumers.get(out, [])]
            for name in node.input:
                if name in producer:
                    if nodes[producer[name]].op_type != "Constant":
                        around.append(chains[producer[name]])
                elif name in graph_inputs:
                    around.append(())
            if not around or any(c is None for c in around):
                continue
            common: list[str] = []
            for parts in zip(*around):
                if len(set(parts)) != 1:
                    break
                common.append(parts[0])
            chains[i] = tuple(common)
            changed = True
        if not changed:
            break


def _dynamo_chain(node: Any, names: set[str]) -> tuple[str, ...] | None:
    raw = next((p.value for p in node.metadata_props if p.key == NAME_SCOPES), None)
    if raw is None:
        return None
    try:
        scopes = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None
    chain = []
    for scope in scopes[1:]:
        scope = str(scope).split("@")[0]
        if scope in names and (not chain or scope != chain[-1]):
            chain.append(scope)
    return tuple(chain)


def _legacy_chain(node_name: str, names: set[str]) -> tuple[str, ...] | None:
    if not node_name.startswith("/"):
        return None
    segments = node_name.split("/")[1:-1]  # the last segment is the op
    chain: list[str] = []
    for segment in segments:
        resolved = _resolve_segment(segment, chain, names)
        if resolved is None:
            match = _SUFFIX.match(segment)  # a repeated call: conv_1
            resolved = _resolve_segment(match.group(1), chain, names) if match else None
        if resolved is None:
            break  # a scope we cannot place: keep what is certain
        chain.append(resolved)
    return tuple(chain)


def _resolve_segment(segment: str, chain: list[str], names: set[str]) -> str | None:
    current = chain[-1] if chain else ""
    prefixes = [current, *reversed(chain[:-1]), ""] if chain else [""]
    for prefix in prefixes:
        candidate = f"{prefix}.{segment}" if prefix else segment
        if candidate in names and (not current or candidate.startswith(current + ".")):
            return candidate
    # A child of a container that is never called itself (ModuleDict, ModuleList indexed in forward):
    # the scope skips the container; accept a unique descendant ending in the segment.
    below = current + "." if current else ""
    found = [n for n in names if n.startswith(below) and n.endswith("." + segment)]
    return found[0] if len(found) == 1 else None

"""How a sensitivity analysis lowers a model with a chosen set of layers in lower precision: int8 Q/DQ
models on ONNX Runtime (for a PyTorch model's export or an ONNX file), PyTorch modules in real half
arithmetic, and an ONNX file's nodes converted to fp16. Each run gives the outputs of every input the
lowering was made with (one, or a data set's samples), in order."""

from __future__ import annotations

import functools
import glob
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..model.spec import ModelSpec

MAX_SUBGRAPHS = 12  # more groups than this at the shallowest useful level: the per-layer table says as much


def subgraphs(names: Sequence[str], scope_of: Callable[[str], tuple[str, ...]]
              ) -> list[tuple[tuple[str, ...], list[str]]]:
    """The layers grouped by the shallowest level of their name scopes that splits them in two or more
    (a model's blocks: `/encoder/layer.0/...`, `layer1.0.conv1`), groups of one layer left out (the
    per-layer table has them); none when the names carry no scope or split too finely."""
    scopes = {name: scope_of(name) for name in names}
    for depth in range(1, max((len(s) for s in scopes.values()), default=0) + 1):
        by_scope: dict[tuple[str, ...], list[str]] = {}
        for name in names:
            if len(scopes[name]) >= depth:
                by_scope.setdefault(scopes[name][:depth], []).append(name)
        if len(by_scope) > MAX_SUBGRAPHS:
            return []
        if len(by_scope) >= 2:
            return [(scope, members) for scope, members in by_scope.items() if len(members) > 1]
    return []


def onnx_scope(name: str) -> tuple[str, ...]:
    """`/encoder/layer.0/attention/MatMul` -> ('encoder', 'layer.0', 'attention'): the scopes the
    PyTorch exporters write into node names; a name without them has none."""
    parts = name.split("/")
    return tuple(parts[1:-1]) if name.startswith("/") and len(parts) > 2 else ()


def module_by_parameter(model: Any, node_name: str) -> str | None:
    """The module a node belongs to, read from the parameters it reads: nodes the simplifier made
    (MatMul + Add -> Gemm), and every node of the dynamo exporter, lose their module scope but still
    read parameters named after their module, e.g. `bert.encoder.layer.0.output.dense.bias`."""
    node = next(n for n in model.graph.node if n.name == node_name)
    initializers = {t.name for t in model.graph.initializer}
    for tensor in node.input:
        if tensor in initializers and tensor.endswith((".weight", ".bias")):
            return tensor.rsplit(".", 1)[0]
    return None


class Lowering:
    """One precision's way of building a model with a chosen set of layers lowered; each run gives the
    outputs of every input it was made with (one, or a data set's samples), in order."""

    precision: str
    executor: str
    option: str
    prefix = ""  # what the option's values start with
    scope_separator = "/"  # between the scopes of a layer's name, as the user reads them

    def candidates(self) -> list[tuple[str, str, str | None]]:
        """(layer, op type, module) for every layer that can be lowered alone."""
        raise NotImplementedError

    def groups(self) -> list[tuple[str, str, list[str]]]:
        """(exclusion pattern, op type, layers) for groups worth lowering together; none by default."""
        return []

    def scope_of(self, layer: str) -> tuple[str, ...]:
        """The node's scope where the export left one in its name, else its module's parents (the
        dynamo exporter names nodes `node_conv2d_3`; its weights still say `convs1.0.weight`)."""
        module = self.module_of.get(layer)
        return onnx_scope(layer) or (tuple(module.split(".")[:-1]) if module else ())

    @functools.cached_property
    def module_of(self) -> dict[str, str | None]:
        return {name: module for name, _, module in self.candidates()}

    def scope_pattern(self, scope: tuple[str, ...]) -> str:
        """What the option takes to keep every layer of the subgraph at full precision."""
        return self.prefix + glob.escape("/" + "/".join(scope) + "/") + "*"

    def subgraphs(self) -> list[tuple[str, str, list[str]]]:
        """(exclusion pattern, subgraph, layers) for each block of the model its names reveal; the
        pattern is the subgraph's name where no single pattern selects exactly its layers."""
        from fnmatch import fnmatchcase

        names = [layer for layer, _, _ in self.candidates()]
        found = []
        for scope, members in subgraphs(names, self.scope_of):
            pattern, label = self.scope_pattern(scope), self.scope_separator.join(scope)
            exact = [n for n in names if fnmatchcase(self.prefix + n, pattern)] == members
            found.append((pattern if exact else label, label, members))
        return found

    def input_ranges(self, layer: str) -> dict[str, float]:
        """What the lowered layer's inputs must represent, where that decides its error."""
        return {}

    def run_only(self, layer: str) -> list[dict[str, np.ndarray]]:
        return self.run_only_many([layer])

    def run_only_many(self, layers: Sequence[str]) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def run_all_except(self, kept: Sequence[str]) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Int8Lowering(Lowering):
    """Q/DQ models on ONNX Runtime's CPU provider; calibrated once, ranges reused for every trial.
    The candidates are the nodes the int8 placement quantizes, named as `--int8-exclude` takes them."""

    precision, executor, option = "int8", "onnxruntime CPU (int8 Q/DQ kernels)", "--int8-exclude"

    def __init__(self, onnx_path: Path, samples: list[dict[str, np.ndarray]],
                 feeds: Sequence[Mapping[str, np.ndarray]], method: str, node_modules: Mapping[str, str],
                 output_names: Sequence[str], activation_matmuls: bool = False) -> None:
        from ..export import int8, onnx_io

        self._tmp = tempfile.TemporaryDirectory(prefix="deployval-sensitivity-")
        self.dir = Path(self._tmp.name)
        self.prepared = self.dir / "prepared.onnx"
        self.preprocess = int8.preprocess_for_quantization(onnx_path, self.prepared)
        if self.preprocess.startswith("failed"):
            self.prepared = Path(onnx_path)
        self.model = onnx_io.load_onnx(self.prepared)
        int8.name_nodes(self.model)
        self.activation_matmuls = activation_matmuls
        self.placement = int8.plan_placement(self.model, activation_matmuls)
        self.samples, self.feeds, self.method = samples, feeds, method
        self.node_modules, self.output_names = node_modules, list(output_names)
        self.cache = self.dir / "ranges.json"
        self.ranges: dict[str, float] = {}  # quantized activation -> max |x|, from the fully quantized model
        self.quantizations = 0

    def candidates(self) -> list[tuple[str, str, str | None]]:
        return [(name, op_type, self.node_modules.get(name) or module_by_parameter(self.model, name))
                for name, op_type in self.placement.nodes.items()]

    def groups(self) -> list[tuple[str, str, list[str]]]:
        by_type: dict[str, list[str]] = {}
        for name, op_type in self.placement.nodes.items():
            by_type.setdefault(op_type, []).append(name)
        if len(by_type) < 2:  # one op type: the group is the baseline
            return []
        return [(f"op:{op_type}", op_type, names) for op_type, names in by_type.items()]

    def input_ranges(self, layer: str) -> dict[str, float]:
        return {t: self.ranges[t] for t in self.placement.inputs.get(layer, ()) if t in self.ranges}

    def _run(self, record_ranges: bool = False, **selection: Any) -> list[dict[str, np.ndarray]]:
        from ..export import int8, onnx_io

        out = self.dir / f"trial{self.quantizations}.onnx"
        self.quantizations += 1
        int8.quantize_int8(self.model, self.samples, out, method=self.method, calibration_cache=self.cache,
                           preprocess=False, quantize_activation_matmuls=self.activation_matmuls, **selection)
        try:
            if record_ranges:
                self.ranges = int8.activation_ranges(out)
            runs = onnx_io.run_onnxruntime_each(out, self.feeds)
        finally:
            out.unlink(missing_ok=True)
        return [{name: outputs[name] for name in self.output_names if name in outputs} for outputs in runs]

    def run_only_many(self, layers: Sequence[str]) -> list[dict[str, np.ndarray]]:
        return self._run(only_nodes=list(layers))

    def run_all_except(self, kept: Sequence[str]) -> list[dict[str, np.ndarray]]:
        return self._run(record_ranges=not kept, exclude_nodes=list(kept))

    def close(self) -> None:
        self._tmp.cleanup()


class Fp16Lowering(Lowering):
    """PyTorch eager with real half arithmetic, module by module."""

    precision, executor, option = "fp16", "torch eager CPU half (real fp16 arithmetic)", "--keep-fp32"
    scope_separator = "."

    def __init__(self, module: Any, spec: ModelSpec, feeds: Sequence[Mapping[str, np.ndarray]], device: str) -> None:
        self.module, self.spec, self.feeds, self.device = module, spec, feeds, device

    def candidates(self) -> list[tuple[str, str, str | None]]:
        """Leaf modules that hold parameters: where weights are rounded and most arithmetic happens."""
        return [(name, type(sub).__name__, name) for name, sub in self.module.named_modules()
                if name and not list(sub.children()) and any(True for _ in sub.parameters(recurse=False))]

    def scope_pattern(self, scope: tuple[str, ...]) -> str:
        return glob.escape(".".join(scope)) + ".*"

    def _run(self, lowered: Any, half_inputs: bool) -> list[dict[str, np.ndarray]]:
        import torch

        from ..backends.torch_common import name_outputs, tensors_to_host, to_tensors

        lowered = lowered.to(self.device)
        runs = []
        with torch.inference_mode():
            for feeds in self.feeds:
                raw = lowered(*to_tensors(feeds, self.spec.input_names, self.device, "fp16" if half_inputs else "fp32"))
                runs.append(tensors_to_host(name_outputs(raw, self.spec.output_names or ()), as_float32=True))
        return runs

    def run_only_many(self, layers: Sequence[str]) -> list[dict[str, np.ndarray]]:
        from ..export.mixed import half_only

        return self._run(half_only(self.module, list(layers)), half_inputs=False)

    def run_all_except(self, kept: Sequence[str]) -> list[dict[str, np.ndarray]]:
        from ..export.mixed import half_except

        return self._run(half_except(self.module, kept), half_inputs=True)


class Fp16OnnxLowering(Lowering):
    """An ONNX file converted to fp16 (the conversion the pipeline's fp16 rows run) with chosen nodes kept
    fp32, on ONNX Runtime's CPU provider. The candidates are the converted nodes that read float weights;
    the others (activations, data movement) follow the conversion. The CPU provider computes most fp16
    ops in fp32, so what this finds is what fp16 weights and the converted graph change (clamped or
    flushed weights, fp16 casts), not fp16 arithmetic overflow."""

    precision, executor, option = "fp16", "onnxruntime CPU (fp16 ONNX, weights in fp16)", "--keep-fp32"
    prefix = "node:"

    def __init__(self, onnx_path: Path, feeds: Sequence[Mapping[str, np.ndarray]], output_names: Sequence[str]
                 ) -> None:
        from ..export import fp16, onnx_io

        self.model = onnx_io.load_onnx(Path(onnx_path))
        self.feeds, self.output_names = feeds, list(output_names)
        self._tmp = tempfile.TemporaryDirectory(prefix="deployval-sensitivity-")
        self.dir, self.runs = Path(self._tmp.name), 0
        _, details = fp16.convert_fp16(self.model, keep_io_types=True)
        kept = set(details.kept_fp32)
        weights = {t.name for t in self.model.graph.initializer if t.data_type == 1}  # FLOAT
        self.nodes = [(n.name, n.op_type) for n in self.model.graph.node
                      if n.name and n.name not in kept and any(i in weights for i in n.input)]

    def candidates(self) -> list[tuple[str, str, str | None]]:
        return [(name, op_type, module_by_parameter(self.model, name)) for name, op_type in self.nodes]

    def groups(self) -> list[tuple[str, str, list[str]]]:
        by_type: dict[str, list[str]] = {}
        for name, op_type in self.nodes:
            by_type.setdefault(op_type, []).append(name)
        return [(f"op:{t}", t, names) for t, names in by_type.items()] if len(by_type) > 1 else []

    def _run(self, kept: Sequence[str]) -> list[dict[str, np.ndarray]]:
        import onnx

        from ..export import fp16, onnx_io

        converted, _ = fp16.convert_fp16(self.model, keep_io_types=True, node_block_list=list(kept))
        path = self.dir / f"trial{self.runs}.onnx"
        self.runs += 1
        onnx.save(converted, str(path))
        try:
            runs = onnx_io.run_onnxruntime_each(path, self.feeds)
        finally:
            path.unlink(missing_ok=True)
        return [{name: outputs[name] for name in self.output_names if name in outputs} for outputs in runs]

    def run_only_many(self, layers: Sequence[str]) -> list[dict[str, np.ndarray]]:
        chosen = set(layers)
        return self._run([name for name, _ in self.nodes if name not in chosen])

    def run_all_except(self, kept: Sequence[str]) -> list[dict[str, np.ndarray]]:
        return self._run(kept)

    def close(self) -> None:
        self._tmp.cleanup()

"""`debug --repro DIR`: the first divergent layer as a model of its own, with the inputs the reference
computed for it and the outputs it should give, so that the failure can be shown (and filed) without the
rest of the network:

    DIR/model.onnx     the layer's nodes, cut out of the artifact that diverged (the simplified, fp16 or
                       int8 Q/DQ ONNX: the defect is in the cut), onnx.utils.Extractor between its input
                       and output tensors, shapes inferred, checked by onnx.checker
    DIR/inputs.npz     the reference's values of its inputs, keyed by the cut's input names, in the
                       dtypes the cut takes (float16 inside an fp16 artifact)
    DIR/expected.npz   the reference's values of its outputs, keyed by the cut's output names
    DIR/README.md      the command that shows the failure on its own (`deployval compare DIR/model.onnx
                       --inputs ... --expected ...`), the tolerance, and what the cut gives

The cut starts at the nearest tensors whose reference values the debug run kept: for a PyTorch model
the values its hooks recorded (the streamed comparison keeps recent ones, every one for a small model),
for an ONNX file ONNX Runtime fp32 on the file (run again for just those tensors). For a leaf layer
that is its input; when the layer's input was never a compared tensor (functional code before it, a
fused neighbour) the cut reaches further back, and the README says how many nodes that takes. Before
writing, the cut runs on ONNX Runtime (CPU) and is judged as compare will judge it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError, first_line
from ..metric_table import COSINE, MAX_ABS, MEAN_ABS, REL_L2
from ..model.spec import Tolerance
from .report import DebugReport

if TYPE_CHECKING:
    from onnx import ModelProto

    from ..export.graph import GraphIndex
    from .model_debugger import ModelDebugger

NOTHING = "no layer diverged: --repro wrote nothing"


@dataclass
class ReproCase:
    """What to write: the cut, its reference inputs and outputs, and how it came about."""

    layer: str
    kind: str  # the artifact kind it was cut from
    model: ModelProto
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    tolerance: dict[str, float]
    layer_nodes: int  # nodes the layer map gives the layer itself (0 when unknown)
    notes: list[str] = field(default_factory=list)


@dataclass
class ReproResult:
    directory: str
    layer: str
    nodes: int
    ops: list[str]
    inputs: list[str]
    outputs: list[str]
    command: str
    metrics: dict[str, float]
    fails: bool
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "layer": self.layer, "nodes": self.nodes, "ops": self.ops,
                "inputs": self.inputs, "outputs": self.outputs, "command": self.command, "metrics": self.metrics,
                "fails": self.fails, "notes": self.notes}


# ----------------------------------------------------------------------------- the cut


def cut_model(model: ModelProto, index: GraphIndex, inputs: Sequence[str], outputs: Sequence[str],
              node_names: Sequence[str]) -> ModelProto:
    """The nodes between `inputs` and `outputs` (onnx.utils.Extractor), with inferred shapes. `node_names`
    are the nodes graph.region found for the same cut: Extractor does not follow what If/Loop bodies
    read from outside, so when the two disagree the region's nodes are taken."""
    import onnx
    from onnx.utils import Extractor

    known = {v.name for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    for name in [*inputs, *outputs]:
        if name not in known:
            model.graph.value_info.append(index.value_info(name))
    extractor = Extractor(model)
    cut = extractor.extract_model(list(inputs), list(outputs))
    if sorted(n.name for n in cut.graph.node) != sorted(node_names):
        wanted = set(node_names)
        del cut.graph.node[:]
        cut.graph.node.extend(n for n in model.graph.node if n.name in wanted)
        used = {i for n in cut.graph.node for i in n.input}
        del cut.graph.initializer[:]
        cut.graph.initializer.extend(t for t in model.graph.initializer if t.name in used)
    cut.graph.name = "repro"
    cut.producer_name = "deployval-debug-repro"
    del cut.graph.value_info[:]
    cut = onnx.shape_inference.infer_shapes(cut, strict_mode=False)
    onnx.checker.check_model(cut)
    return cut


def _fit(value: np.ndarray, index: GraphIndex, name: str) -> np.ndarray:
    """A reference value in the shape and element type the artifact gives its tensor (an optimizer may have
    dropped a reshape; an fp16 artifact holds float16)."""
    import onnx

    value = np.asarray(value)
    shape = index.shape(name)
    if shape is not None and None not in shape and tuple(shape) != value.shape and \
            int(np.prod(shape, dtype=np.int64)) == value.size:
        value = value.reshape(tuple(int(d) for d in shape))  # type: ignore[arg-type]
    elem = index.elem_type(name)
    if elem:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        if value.dtype != dtype:
            value = value.astype(dtype)
    return value


def _layer_notes(nodes: int, layer_nodes: int, graph_inputs: Sequence[str], label: str) -> list[str]:
    notes = []
    if layer_nodes and nodes > layer_nodes:
        notes.append(f"a fused layer or code before it forces a bigger cut: {nodes} nodes, of which the layer map "
                     f"gives {label} {layer_nodes} (the cut starts at the nearest tensors whose reference values "
                     "were kept)")
    if graph_inputs:
        notes.append(f"the cut also reads the model input(s) {', '.join(graph_inputs)} directly")
    return notes


def _inputs_note(inputs: Mapping[str, np.ndarray]) -> list[str]:
    if len(inputs) < 2:
        return []
    return [f"the cut takes {len(inputs)} inputs ({', '.join(inputs)}): every tensor it reads from outside"]


def module_case(debugger: ModelDebugger) -> ReproCase | str:
    """The first divergent layer of a PyTorch-model debug run, from the reference values its hooks kept."""
    from ..export.graph import region
    from ..export.onnx_io import load_onnx

    state, index = debugger.state, debugger.index
    first = state.first
    if first is None:
        return NOTHING
    result = first.result
    target = result.tensor or ""
    # a final output diverging with no layer doing so has no kept value of its own
    expected_value = (debugger.reference or {}).get(target) if first.key is None else debugger.first_value
    if expected_value is None:
        return f"the reference value of {result.label} was not kept"
    available = {name: value for name, value in debugger.cache.items() if name != target}
    cut = region(index, [target], set(available))
    feeds: dict[str, np.ndarray] = {}
    for name in cut.inputs:
        value = available.get(name, debugger.feeds.get(name))
        if value is None:
            return f"the reference value of '{name}', an input of {result.label}'s cut, was not kept"
        feeds[name] = _fit(value, index, name)
    mapping = debugger.map.calls.get(first.key or "")
    layer_nodes = len(mapping.nodes) if mapping is not None else 0
    model = cut_model(load_onnx(Path(debugger.artifact.path or "")), index, cut.inputs, [target], cut.node_names)
    expected = {target: np.asarray(expected_value).reshape(_shape_of(index, target, np.asarray(expected_value)))}
    notes = _layer_notes(len(model.graph.node), layer_nodes, cut.graph_inputs, result.label) + _inputs_note(feeds)
    return ReproCase(result.label, debugger.kind, model, feeds, expected, dict(result.tolerance), layer_nodes, notes)


def _shape_of(index: GraphIndex, name: str, value: np.ndarray) -> tuple[int, ...]:
    shape = index.shape(name)
    if shape is not None and None not in shape and int(np.prod(shape, dtype=np.int64)) == value.size:
        return tuple(int(d) for d in shape)  # type: ignore[arg-type]
    return value.shape


def file_case(report: DebugReport, reference_path: Path, candidate: ModelProto,
              feeds: Mapping[str, np.ndarray]) -> ReproCase | str:
    """The first divergent node of an ONNX-file debug run: the candidate's nodes computing its tensor from
    tensors the file has (as the debug run replays it), fed ONNX Runtime fp32's values on the file."""
    from ..export.graph import GraphIndex, expose, region
    from ..export.meaning import meanings
    from ..export.onnx_io import load_onnx, run_onnxruntime

    if report.first_divergent is None:
        return NOTHING
    row = report.layer(report.first_divergent)
    reference = load_onnx(reference_path)
    ref_index, index = GraphIndex(reference), GraphIndex(candidate)
    found = meanings(reference, candidate)  # which candidate tensor holds which file tensor's value
    target = row.tensor or ""  # the candidate's tensor the debug run compared
    if target not in index.tensor_names:
        return f"the tensor of {row.label} is not in the {report.artifact.get('kind')} artifact"
    value = found.value_of(target) or target  # the file's tensor it holds
    sources = {name: held for name, held in found.sources().items()  # not a wrapped copy of the target's value
               if (held in ref_index.producer or held in ref_index.inputs) and found.root(held) != found.root(value)}
    cut = region(index, [target], sources)
    wanted = [n for n in dict.fromkeys([*(sources.get(i, i) for i in cut.inputs), value])
              if n not in ref_index.inputs]
    values = run_onnxruntime(expose(ref_index, wanted, keep_outputs=False), feeds) if wanted else {}
    values.update({k: np.asarray(v) for k, v in feeds.items()})
    inputs = {name: _fit(values[sources.get(name, name)], index, name) for name in cut.inputs}
    model = cut_model(candidate, index, cut.inputs, [target], cut.node_names)
    notes = _layer_notes(len(model.graph.node), 0, cut.graph_inputs, row.label) + _inputs_note(inputs)
    wrappers = [n.op_type for n in model.graph.node if n.op_type in ("Cast", "QuantizeLinear", "DequantizeLinear")]
    if wrappers:
        notes.append(f"the node comes with the {len(wrappers)} Cast/Q/DQ nodes the conversion put around it")
    return ReproCase(row.label, str(report.artifact.get("kind")), model, inputs, {target: values[value]},
                     dict(row.tolerance), 0, notes)


# ----------------------------------------------------------------------------- writing


def run_precision(precision: str) -> str:
    """The precision compare runs the cut at. An int8 cut holds its Q/DQ nodes already: compare at int8
    would quantize it again (or skip it, when no op of the cut is one the quantizer takes), so it runs
    as it is, at fp32. An fp16 cut goes through compare's fp16 conversion unchanged (it is fp16 already)
    and is judged by the fp16 tolerance."""
    return "fp32" if precision == "int8" else precision


def compare_command(directory: Path, backend: str, precision: str, tolerance: Mapping[str, float],
                    runtime_args: Sequence[str] = ()) -> str:
    """The command that judges the cut against the expected outputs as debug judged the layer, on the
    same device with the same backend settings (`runtime_args`)."""
    d = shlex.quote(str(directory))
    parts = [f"deployval compare {d}/model.onnx --inputs {d}/inputs.npz --expected {d}/expected.npz",
             f"--backends {backend} --precisions {run_precision(precision)}"]
    bounds = {name: value for name, value in tolerance.items() if value is not None}
    if set(bounds) - {"atol", "rtol"}:  # statistics (fp16, int8): exactly the bounds debug judged the layer by
        parts.append("--tolerance " + ",".join(f"{name}={float(value)!r}" for name, value in bounds.items()))
    elif bounds:
        parts.append(f"--atol {bounds.get('atol') or 0:g} --rtol {bounds.get('rtol') or 0:g}")
    if runtime_args:
        parts.append(shlex.join(runtime_args))
    return " ".join(parts)


def runtime_args(config: Any) -> list[str]:
    """The device and backend settings a reproduction must keep (a trt row runs on CUDA only)."""
    return (["--device", config.device] if config.device != "cpu" else []) + config.backend_args()


def write_repro(case: ReproCase, directory: Path, *, backend: str, precision: str,
                command_line: str | None = None, runtime: Sequence[str] = ()) -> ReproResult:
    """Write the cut, its inputs and expected outputs and a README; the cut is run on ONNX Runtime first
    to say in the README what it gives."""
    import onnx

    from .._util import atomic_write_bytes, atomic_write_text
    from ..export.onnx_io import run_onnxruntime
    from ..judge.stats import compare_tensors
    from ..model.inputs import npz_bytes, save_inputs

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--repro '{directory}' is a file, not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    outputs = [o.name for o in case.model.graph.output]
    try:
        got = run_onnxruntime(case.model, case.inputs)
    except Exception as exc:  # the cut itself fails to run: still written, said so
        got, run_error = {}, f"ONNX Runtime could not run the cut: {first_line(exc, named=False)}"
    else:
        run_error = ""
    tolerance = Tolerance(**case.tolerance)
    metrics: dict[str, float] = {}
    failures: list[str] = [run_error] if run_error else []
    for name in outputs:
        if name in got:
            stats, fails = compare_tensors(case.expected[name], got[name], tolerance)
            metrics, failures = stats.metrics(), failures + fails
    onnx.save(case.model, str(directory / "model.onnx"))
    save_inputs(directory / "inputs.npz", case.inputs)
    atomic_write_bytes(directory / "expected.npz", npz_bytes(case.expected))
    command = compare_command(directory, backend, precision, case.tolerance, runtime)
    nodes = len(case.model.graph.node)
    ops = list(dict.fromkeys(n.op_type for n in case.model.graph.node))
    result = ReproResult(str(directory), case.layer, nodes, ops, list(case.inputs), outputs, command, metrics,
                         bool(failures), list(case.notes))
    atomic_write_text(directory / "README.md", _readme(case, result, failures, backend, precision, command_line))
    return result


def _readme(case: ReproCase, result: ReproResult, failures: list[str], backend: str, precision: str,
            command_line: str | None) -> str:
    def shapes(values: Mapping[str, np.ndarray]) -> str:
        return "\n".join(f"- `{k}`: {'x'.join(map(str, v.shape)) or 'scalar'} {v.dtype}" for k, v in values.items())

    converted = {"fp16": "the fp16 conversion", "int8": "int8 quantization (Q/DQ)"}.get(precision)
    lines = [
        f"# {case.layer}: a minimal reproduction",
        "",
        f"`model.onnx` is {case.layer} cut out of the `{case.kind}` artifact that {backend}:{precision} ran"
        + (f" (after {converted}: the converted nodes are in the cut)" if converted else "")
        + f": {result.nodes} node{'s' if result.nodes != 1 else ''} ({', '.join(result.ops)}).",
        "",
        "Inputs (`inputs.npz`, the reference's values, in the dtypes the cut takes):",
        "",
        shapes(case.inputs),
        "",
        "Expected outputs (`expected.npz`, the reference's values):",
        "",
        shapes(case.expected),
        "",
        "Show the failure (exit code 1 while the defect is there):",
        "",
        "```",
        result.command,
        "```",
        "",
        f"Tolerance: {', '.join(f'{k} {v:g}' for k, v in case.tolerance.items()) or 'the default'} "
        f"(as debug judged the layer).",
        "",
        "ONNX Runtime (CPU) on the cut, against the expected outputs: "
        + (", ".join(f"{k} {v:.3g}" for k, v in result.metrics.items() if k in (MAX_ABS, MEAN_ABS, REL_L2,
                                                                                 COSINE)) or "-")
        + (f"; {failures[0]}" if failures else "; within tolerance: this cut does not show the failure"),
    ]
    if precision == "fp16":
        lines += ["", "compare builds its fp16 artifact from the cut as from any ONNX file; the cut is fp16 already "
                  "(the conversion leaves it as it is), and the inputs are stored in the dtypes its graph declares."]
    elif precision == "int8":
        lines += ["", "The cut holds the int8 Q/DQ nodes already, so the command runs it as it is (`--precisions "
                  "fp32`: at int8, compare would quantize it again), judged by the int8 bounds debug used "
                  "(`--tolerance`, in place of fp32's atol/rtol)."]
    if case.notes:
        lines += ["", "Notes:", "", *[f"- {n}" for n in case.notes]]
    if command_line:
        lines += ["", f"Written by `{command_line}`."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- entry points for run.py


def _write(report: DebugReport, case: ReproCase | str, directory: Path, command: str | None,
           runtime: Sequence[str]) -> None:
    if isinstance(case, str):
        report.repro = {"written": False, "reason": case}
        return
    result = write_repro(case, directory, backend=report.backend, precision=report.precision, command_line=command,
                         runtime=runtime)
    report.repro = {"written": True, **result.to_dict()}


def _explorer_failed(report: DebugReport, exc: Exception) -> None:
    report.model_explorer = {"written": False, "reason": f"the node data could not be written: {first_line(exc)}"}


def module_outputs(debugger: ModelDebugger, report: DebugReport, repro: Path | None, explorer: Path | None,
                   command: str | None = None) -> None:
    """--repro and --model-explorer for a PyTorch model, while the debug run's reference values are held."""
    if repro is not None:
        try:
            _write(report, module_case(debugger), repro, command, runtime_args(debugger.config))
        except Exception as exc:  # an aid: its failure must not cost the debug report
            report.repro = {"written": False, "reason": f"the cut could not be made: {first_line(exc)}"}
    if explorer is not None:
        try:
            _explorer(report, Path(debugger.artifact.path or ""), explorer, keep=not debugger.config.use_cache)
        except Exception as exc:
            _explorer_failed(report, exc)


def file_outputs(session: Any, report: DebugReport, repro: Path | None, explorer: Path | None,
                 command: str | None = None) -> None:
    """--repro and --model-explorer for an ONNX file, after its debug run: the artifact comes from the cache
    (built again when the run did not keep it)."""
    from ..export.onnx_io import load_onnx

    path = Path(report.artifact.get("path") or "")
    store = None
    try:
        if not path.is_file():
            store = session.store(tuple(session.spec.output_names or ()))
            path = Path(store.get(str(report.artifact.get("kind"))).path or "")
        if repro is not None:
            try:
                case = file_case(report, Path(session.spec.path or ""), load_onnx(path), session.feeds)
                _write(report, case, repro, command, runtime_args(session.config))
            except Exception as exc:  # an aid: its failure must not cost the debug report
                report.repro = {"written": False, "reason": f"the cut could not be made: {first_line(exc)}"}
        if explorer is not None:
            try:
                _explorer(report, path, explorer, keep=store is not None or not session.config.use_cache)
            except Exception as exc:
                _explorer_failed(report, exc)
    finally:
        if store is not None:
            store.close()


def _explorer(report: DebugReport, artifact: Path, path: Path, *, keep: bool) -> None:
    """The node data; with no artifact cache to open the ONNX from later, a copy of it as FILE.onnx."""
    import onnx

    from .model_explorer import open_command, write_node_data

    model = onnx.load(str(artifact))
    written = write_node_data(report, model, path)
    shown = report.artifact.get("path")
    if keep:
        shown = str(Path(path).with_suffix(".onnx"))
        onnx.save(model, shown)
        written["artifact"] = shown
    written["open"] = open_command(shown, written)
    report.model_explorer = written

"""How many bits do the weights need? Every conv and linear weight is fake-quantized to N bits
(symmetric, per tensor or per output channel), the model is run on the same inputs, and the
outputs are compared with the fp32 reference, for each N.

Only weights are quantized: the experiment isolates weight precision from activation ranges (which
int8 calibration and the sensitivity analysis cover). Embeddings are left alone: they are table
lookups, usually kept at higher precision, and their rows have no output channel to scale by.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..judge.metrics import error_metrics, task_metrics
from ..metric_table import ARGMAX_AGREEMENT, COSINE, DICE_MEAN, DICE_MIN, MAX_ABS, MEAN_ABS, REL_L2, SQNR_DB
from ..model.spec import TaskSpec

SCHEMES = ("per-tensor", "per-channel")


def fake_quantize_weight(weight: Any, bits: int, per_channel: bool, axis: int = 0) -> Any:
    """fake_quantize_array for a torch tensor (a module's weight), on its device and in its dtype."""
    import torch

    quantized = fake_quantize_array(weight.detach().cpu().numpy(), bits, per_channel, axis)
    return torch.from_numpy(quantized).to(device=weight.device, dtype=weight.dtype)


def quantizable_layers(module: Any) -> list[tuple[str, Any, int]]:
    """(name, layer, output-channel axis) of every conv, transposed conv and linear layer."""
    from torch import nn

    layers = []
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            layers.append((name, sub, 1))  # weight is (in, out / groups, *kernel)
        elif isinstance(sub, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            layers.append((name, sub, 0))
    return layers


@dataclass
class SweepRow:
    scheme: str
    bits: int
    weight_rel_l2: float  # relative L2 error of all quantized weights together
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)  # output -> error metrics
    task: dict[str, Any] = field(default_factory=dict)  # task metrics of the task's first output
    labels: dict[str, float] = field(default_factory=dict)  # over a labelled data set: top-1/top-k or Dice

    @property
    def rel_l2(self) -> float:
        return max((m[REL_L2] for m in self.outputs.values()), default=0.0)


@dataclass
class SweepResult:
    layers: int
    parameters: int
    rows: list[SweepRow]
    task_kind: str | None = None
    samples: int = 1  # inputs each width's metrics are the mean over

    def to_dict(self) -> dict[str, Any]:
        from .._util import finite_json

        return finite_json({"layers": self.layers, "parameters": self.parameters, "task": self.task_kind,
                            "samples": self.samples, "rows": [{**asdict(r), REL_L2: r.rel_l2} for r in self.rows]})

    def smallest_bits(self, scheme: str, accept: Callable[[SweepRow], bool]) -> int | None:
        """The fewest bits at which `scheme` meets `accept`, and every wider width too."""
        found = None
        for row in sorted((r for r in self.rows if r.scheme == scheme), key=lambda r: -r.bits):
            if not accept(row):
                break
            found = row.bits
        return found


def _mean_row(row: SweepRow, samples: Sequence[SweepRow]) -> SweepRow:
    """The row of one width over every sample: each metric's mean (one sample: its own values)."""
    def mean(values: list[Any]) -> Any:
        return float(np.mean(values)) if all(isinstance(v, (int, float)) for v in values) else values[0]

    first = samples[0]
    row.outputs = {name: {k: mean([s.outputs[name][k] for s in samples]) for k in metrics}
                   for name, metrics in first.outputs.items()}
    row.task = {k: mean([s.task[k] for s in samples if k in s.task]) for k in first.task}
    scored = [s.labels for s in samples if s.labels]
    row.labels = {k: float(np.mean([s[k] for s in scored])) for k in scored[0]} if scored else {}
    return row


def weight_sweep(module: Any, feeds: Mapping[str, np.ndarray], bits: Sequence[int] = range(2, 9),
                 schemes: Sequence[str] = SCHEMES, task: TaskSpec | None = None,
                 output_names: Sequence[str] | None = None, input_names: Sequence[str] | None = None,
                 progress: Callable[[str], None] | None = None,
                 reference: Mapping[str, np.ndarray] | None = None,
                 samples: Sequence[tuple[Mapping[str, np.ndarray], Any]] = (),
                 scorer: Any = None, first_label: Any = None) -> SweepResult:
    """Run the sweep on a copy of `module` (the caller's weights are never touched); `reference`: the
    fp32 outputs when the caller has them already (a Session's reference run). `samples` (feeds, label)
    after `feeds` (labelled `first_label`) make it a data-set sweep: each metric is the mean over every
    sample, and with a `scorer` (dataset_run.Scorer) each width's task score against the labels (label
    None: unscored)."""
    import torch

    from ..backends.torch_common import name_outputs, tensors_to_host

    work = copy.deepcopy(module).eval().float()
    layers = quantizable_layers(work)
    originals = [layer.weight.detach().clone() for _, layer, _ in layers]
    names = list(input_names or feeds)
    inputs = [[torch.from_numpy(np.ascontiguousarray(f[name])) for name in names]
              for f in [feeds, *(sample for sample, _ in samples)]]

    def run(index: int) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return tensors_to_host(name_outputs(work(*inputs[index]), list(output_names or ())))

    def quantize(width: int, per_channel: bool) -> float:
        error_sq = 0.0
        with torch.no_grad():
            for (_, layer, axis), original in zip(layers, originals):
                quantized = fake_quantize_weight(original, width, per_channel, axis)
                error_sq += float(((quantized.double() - original.double()) ** 2).sum())
                layer.weight.copy_(quantized)
        return error_sq

    try:
        weight_norm = float(np.sqrt(sum(float((w.double() ** 2).sum()) for w in originals))) or 1.0
        reference = dict(reference) if reference is not None else run(0)
        references = [reference, *(run(i) for i in range(1, len(inputs)))]  # fp32, once per sample
        rows = _sweep(quantize, run, references, weight_norm, bits, schemes, task, progress, scorer,
                      [first_label, *(label for _, label in samples)])
    finally:
        with torch.no_grad():
            for (_, layer, _), original in zip(layers, originals):
                layer.weight.copy_(original)
    return SweepResult(len(layers), sum(int(w.numel()) for w in originals), rows, task.kind if task else None,
                       samples=len(inputs))


def onnx_weight_sweep(path: Path, feeds: Mapping[str, np.ndarray], references: Sequence[Mapping[str, np.ndarray]],
                      bits: Sequence[int] = range(2, 9), schemes: Sequence[str] = SCHEMES,
                      task: TaskSpec | None = None, progress: Callable[[str], None] | None = None,
                      samples: Sequence[tuple[Mapping[str, np.ndarray], Any]] = (), scorer: Any = None,
                      first_label: Any = None) -> SweepResult:
    """The sweep of an ONNX file: the float weights of its Conv, ConvTranspose, Gemm and MatMul nodes
    (initializers of rank 2 or more, per output channel along the node's output axis) fake-quantized,
    the model run on ONNX Runtime's CPU provider against `references` (ONNX Runtime fp32, per input)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from ..export import onnx_io

    model = onnx_io.load_onnx(Path(path))
    initializers = {t.name: t for t in model.graph.initializer}
    targets: dict[str, int] = {}  # initializer -> output-channel axis
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        name = node.input[1]
        if name in initializers and initializers[name].data_type == onnx.TensorProto.FLOAT and \
                len(initializers[name].dims) >= 2:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            targets[name] = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0 if trans_b else 1}.get(node.op_type, -1)
    originals = {name: numpy_helper.to_array(initializers[name]).astype(np.float32) for name in targets}
    all_feeds = [feeds, *(sample for sample, _ in samples)]
    session: list[Any] = []

    def quantize(width: int, per_channel: bool) -> float:
        error_sq = 0.0
        for name, axis in targets.items():
            quantized = fake_quantize_array(originals[name], width, per_channel, axis)
            error_sq += float(((quantized.astype(np.float64) - originals[name]) ** 2).sum())
            initializers[name].CopyFrom(numpy_helper.from_array(quantized, name))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session[:] = [ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])]
        return error_sq

    def run(index: int) -> dict[str, np.ndarray]:
        names = [o.name for o in session[0].get_outputs()]
        return dict(zip(names, session[0].run(None, dict(all_feeds[index]))))

    weight_norm = float(np.sqrt(sum(float((w.astype(np.float64) ** 2).sum()) for w in originals.values()))) or 1.0
    rows = _sweep(quantize, run, list(references), weight_norm, bits, schemes, task, progress, scorer,
                  [first_label, *(label for _, label in samples)])
    return SweepResult(len(targets), sum(int(w.size) for w in originals.values()), rows,
                       task.kind if task else None, samples=len(all_feeds))


def fake_quantize_array(weight: np.ndarray, bits: int, per_channel: bool, axis: int = 0) -> np.ndarray:
    """Symmetric uniform quantization and back: scale = max|w| / (2^(b-1) - 1), round to nearest (half
    to even). Channels (or tensors) that are all zero stay zero; per channel along `axis`."""
    levels = 2 ** (bits - 1) - 1
    if per_channel and weight.ndim > 1:
        dims = tuple(d for d in range(weight.ndim) if d != axis % weight.ndim)
        max_abs = np.abs(weight).max(axis=dims, keepdims=True)
    else:
        max_abs = np.abs(weight).max()
    scale = max_abs / levels
    safe = np.where(scale > 0, scale, 1.0)
    return (np.clip(np.round(weight / safe), -levels, levels) * safe * (scale > 0)).astype(weight.dtype)


def _sweep(quantize: Callable[[int, bool], float], run: Callable[[int], dict[str, np.ndarray]],
           references: Sequence[Mapping[str, np.ndarray]], weight_norm: float, bits: Sequence[int],
           schemes: Sequence[str], task: TaskSpec | None, progress: Callable[[str], None] | None, scorer: Any,
           labels: Sequence[Any]) -> list[SweepRow]:
    """Per scheme and width: quantize the weights (returning the squared error), run every input and
    compare with its reference; each metric's mean over the inputs."""
    for scheme in schemes:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}")
    task_output = (task.outputs[0] if task and task.outputs else next(iter(references[0]))) if task else None
    rows = []
    for scheme in schemes:
        for width in bits:
            if progress:
                progress(f"{scheme} {width} bits")
            row = SweepRow(scheme, width, float(np.sqrt(quantize(width, scheme == "per-channel"))) / weight_norm)
            per_sample: list[SweepRow] = []
            for index, ref_outputs in enumerate(references):
                outputs, one = run(index), SweepRow(scheme, width, row.weight_rel_l2)
                for name, ref in ref_outputs.items():
                    if np.issubdtype(ref.dtype, np.floating):
                        metrics = error_metrics(ref, outputs[name])
                        one.outputs[name] = {k: metrics[k] for k in (REL_L2, MAX_ABS, MEAN_ABS, COSINE,
                                                                     SQNR_DB)}
                if task is not None and task_output in ref_outputs:
                    one.task = task_metrics(ref_outputs[task_output], outputs[task_output], task)
                if scorer is not None and labels[index] is not None:
                    one.labels = scorer.score(outputs, labels[index])
                per_sample.append(one)
            rows.append(_mean_row(row, per_sample))
    return rows


def _task_columns(result: SweepResult) -> list[tuple[str, Callable[[SweepRow], str]]]:
    if result.task_kind == "segmentation":
        return [("argmax agreement", lambda r: f"{r.task[ARGMAX_AGREEMENT]:.2%}"),
                ("mean Dice", lambda r: f"{r.task[DICE_MEAN]:.4f}"),
                ("worst Dice", lambda r: f"{r.task[DICE_MIN]:.4f}")]
    if result.task_kind:
        return [("argmax agreement", lambda r: f"{r.task[ARGMAX_AGREEMENT]:.2%}")]
    return []


def render_sweep(result: SweepResult, console: Any) -> None:
    from rich.table import Table

    from ..report.formatting import fmt

    table = Table(title=f"weights fake-quantized ({result.layers} layers, {result.parameters:,} weights); "
                        "outputs vs fp32", title_justify="left")
    columns = [("scheme", lambda r: r.scheme), ("bits", lambda r: str(r.bits)),
               ("weight rel L2", lambda r: fmt(r.weight_rel_l2)), ("output rel L2", lambda r: fmt(r.rel_l2)),
               ("SQNR dB", lambda r: f"{min(m[SQNR_DB] for m in r.outputs.values()):.1f}" if r.outputs else ""),
               *_task_columns(result),
               *[(f"{name} vs labels", lambda r, name=name: f"{r.labels.get(name, float('nan')):.2%}")
                 for name in (result.rows[0].labels if result.rows else {})]]
    if result.samples > 1:
        table.title += f"; mean over {result.samples} samples"
    for title, _ in columns:
        table.add_column(title, justify="left" if title == "scheme" else "right")
    for row in result.rows:
        table.add_row(*(cell(row) for _, cell in columns))
    console.print(table)
    for scheme in dict.fromkeys(r.scheme for r in result.rows):
        if result.task_kind:
            bits = result.smallest_bits(scheme, lambda r: r.task.get(ARGMAX_AGREEMENT, 0.0) >= 0.99)
            what = "argmax agreement ≥ 99%"
        else:
            bits = result.smallest_bits(scheme, lambda r: r.rel_l2 <= 0.01)
            what = "output rel L2 ≤ 1%"
        console.print(f"{scheme}: {what} from {bits} bits" if bits else f"{scheme}: {what} at no width tried")


def plot_sweep(result: SweepResult, path: Path) -> None:
    """Output error (log scale) and, with a task, argmax agreement against bits, per scheme."""
    from .._util import atomic_path
    from ..report.html import pyplot

    plt = pyplot()
    panels = 2 if result.task_kind else 1
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
    for scheme in dict.fromkeys(r.scheme for r in result.rows):
        rows = sorted((r for r in result.rows if r.scheme == scheme), key=lambda r: r.bits)
        bits = [r.bits for r in rows]
        axes[0][0].semilogy(bits, [max(r.rel_l2, 1e-12) for r in rows], marker="o", label=scheme)
        if panels == 2:
            axes[0][1].plot(bits, [100 * r.task.get(ARGMAX_AGREEMENT, float("nan")) for r in rows], marker="o",
                            label=scheme)
    axes[0][0].set(xlabel="weight bits", ylabel="output relative L2", title="output error")
    if panels == 2:
        axes[0][1].set(xlabel="weight bits", ylabel="argmax agreement (%)", title="task agreement")
    for axis in axes[0]:
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)

"""Which layers cannot take int8 (or fp16), and the smallest set to keep at full precision.

Each layer is lowered alone (every other layer stays fp32) and the effect at the outputs is measured
against the fp32 reference; layers are ranked by that effect. For int8 the layers are every node the
int8 placement quantizes (Conv, ConvTranspose, MatMul, Gemm, the residual Adds TensorRT fuses, and the
activation x activation MatMuls when they are quantized), and each op type is also lowered as a group;
for fp16 they are the leaf modules with weights. The proposal is the
shortest prefix of the ranking whose exclusion makes the fully lowered model meet the tolerance,
found by trying prefixes of growing length and bisecting; it is then verified by the pipeline
itself, exactly as `deployval compare` would judge it with `--int8-exclude` / `--keep-fp32`.

int8 runs Q/DQ models on ONNX Runtime's CPU provider, which executes real int8 kernels for Conv
and MatMul; fp16 runs in PyTorch eager with real half arithmetic (ONNX Runtime's CPU provider would
compute an fp16 model in fp32 and show nothing).
"""

from __future__ import annotations

import glob
import math
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..judge.metrics import OutputComparison, compare_output, failure_lines
from ..metric_table import ARGMAX_AGREEMENT, DICE_MIN, INF, NAN, REL_L2
from ..model.spec import ModelSpec, RunConfig, Tolerance
from ..progress import Progress
from .lowerings import Fp16Lowering, Fp16OnnxLowering, Int8Lowering, Lowering
from .minimal import Exclusion, minimize

# The op types int8 quantizes (export/int8.py's placement adds the residual Adds TensorRT fuses).
INT8_LAYER_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
BACKEND_FOR = {"int8": "ort", "fp16": "torch"}


@dataclass
class Trial:
    """One lowered model, compared with the reference."""

    kept: list[str]  # layers kept at full precision (for single-layer trials: all but `lowered`)
    lowered: str | None  # the only lowered layer, for single-layer trials
    passed: bool
    score: float  # worst relative L2 error over the float outputs (inf when not finite)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # OutputComparison.to_dict() per output
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    samples: int = 1  # inputs judged; with several, `outputs` and `score` are the worst one's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LayerSensitivity:
    layer: str  # ONNX node name (int8) or module name (fp16): what --int8-exclude / --keep-fp32 take
    op_type: str
    module: str | None  # the PyTorch module the layer belongs to, when known
    score: float  # worst relative L2 error at the outputs with only this layer lowered
    passed: bool  # whether lowering only this layer still meets the tolerance
    summary: str  # the deciding numbers, e.g. "rel_l2 0.012, argmax 99.8%"
    input_ranges: dict[str, float] = field(default_factory=dict)  # int8: quantized input -> max |x| it covers
    members: list[str] = field(default_factory=list)  # a group's layers (an op type's, a subgraph's)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SensitivityResult:
    """True when the model meets the tolerance lowered as a whole, or with a verified proposal."""

    model: str
    precision: str
    executor: str
    tolerance: dict[str, Any]
    baseline: Trial  # every layer lowered
    layers: list[LayerSensitivity]  # most sensitive first
    search: list[Trial]  # exclusion prefixes tried
    proposal: list[str] | None  # layers to keep at full precision; [] when none is needed
    option: str  # the command-line option that applies the proposal
    prefix: str = ""  # what the option's values start with (node: for an ONNX file's nodes kept fp32)
    verification: dict[str, Any] | None = None  # the pipeline's row for the proposal
    status: str = "fail"  # "pass" (no exclusion needed), "fixed" (proposal verified), "fail"
    reason: str = ""
    reproduce: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    op_types: list[LayerSensitivity] = field(default_factory=list)  # each op type lowered as a group
    subgraphs: list[LayerSensitivity] = field(default_factory=list)  # each block of the model lowered alone
    dropped: list[str] = field(default_factory=list)  # the search's exclusions the others make redundant
    exclusions: list[Exclusion] = field(default_factory=list)  # what each exclusion of the proposal buys

    def __bool__(self) -> bool:
        return self.status in ("pass", "fixed")

    def apply_args(self) -> list[str]:
        return [a for layer in self.proposal or () for a in (self.option, self.prefix + glob.escape(layer))]

    def to_dict(self) -> dict[str, Any]:
        from .._util import finite_json

        data = asdict(self)
        data["apply"] = shlex.join(self.apply_args()) if self.proposal else ""
        return finite_json(data)


# ----------------------------------------------------------------------------------- analysis


def _judge(runs: Sequence[Mapping[str, np.ndarray]], references: Sequence[Mapping[str, np.ndarray]],
           tolerances: Mapping[str, Tolerance], spec: ModelSpec, kept: list[str], lowered: str | None,
           seconds: float, names: Sequence[str] = (), slices: Sequence[Any] = ()) -> Trial:
    """Passed only when every input passes; otherwise the numbers of the worst input (a failing one
    first), whose failures name it when there are several."""
    trials = [_judge_one(outputs, reference, tolerances, spec, kept, lowered, slices)
              for outputs, reference in zip(runs, references)]
    index = max(range(len(trials)), key=lambda i: (not trials[i].passed, _sortable(trials[i].score)))
    worst = trials[index]
    worst.passed = all(t.passed for t in trials)
    worst.seconds, worst.samples = seconds, len(trials)
    if len(trials) > 1:
        failing = sum(not t.passed for t in trials)
        name = names[index] if index < len(names) else f"input {index}"
        worst.failures = [f"{failing} of {len(trials)} inputs fail; {name}: {f}" for f in worst.failures]
    return worst


def _judge_one(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
               tolerances: Mapping[str, Tolerance], spec: ModelSpec, kept: list[str], lowered: str | None,
               slices: Sequence[Any] = ()) -> Trial:
    comparisons: list[OutputComparison] = [
        compare_output(name, ref, outputs.get(name), tolerances[name], spec.task, slices=slices)
        for name, ref in reference.items()
    ]
    scores = [math.inf if c.metrics.get(NAN) or c.metrics.get(INF) else c.metrics.get(REL_L2, math.inf)
              for c in comparisons if c.ref_dtype.startswith(("float", "bfloat"))]
    score = max((s if math.isfinite(s) else math.inf for s in scores), default=0.0)
    if any(not c.metrics for c in comparisons):  # missing or misshapen output
        score = math.inf
    return Trial(kept=kept, lowered=lowered, passed=all(c.passed for c in comparisons), score=score,
                 outputs=[c.to_dict() for c in comparisons],
                 failures=failure_lines(comparisons))


def _summary(trial: Trial, ranges: Mapping[str, float] | None = None) -> str:
    if not math.isfinite(trial.score):
        return trial.failures[0] if trial.failures else "non-finite outputs"
    parts = [f"{REL_L2} {trial.score:.3g}"]
    for output in trial.outputs:
        task = output.get("task") or {}
        if ARGMAX_AGREEMENT in task:
            parts.append(f"argmax {task[ARGMAX_AGREEMENT]:.2%}")
        if DICE_MIN in task:
            parts.append(f"min Dice {task[DICE_MIN]:.3f}")
        break
    if ranges:
        widest = max(ranges.values())
        parts.append(f"input max |x| {widest:.3g} (int8 step {widest / 127:.2g})")
    return ", ".join(parts)


def _culprit(layers: Sequence[LayerSensitivity]) -> str:
    """The most sensitive layer and the tensor range that makes int8 coarse for it, when known."""
    if not layers or layers[0].passed or not layers[0].input_ranges:
        return ""
    tensor, widest = max(layers[0].input_ranges.items(), key=lambda item: item[1])
    return (f"; the most sensitive, {layers[0].module or layers[0].layer}, reads {tensor} with max |x| {widest:.3g}: "
            f"one int8 step is {widest / 127:.2g}")


def prefix_lengths(total: int) -> list[int]:
    """Prefix lengths to try first: 1, 2, 3, 4, then doubling, then everything."""
    lengths = [n for n in (1, 2, 3, 4) if n <= total]
    n = 8
    while n < total:
        lengths.append(n)
        n *= 2
    if total and total not in lengths:
        lengths.append(total)
    return lengths


def search_exclusions(
    ranked: Sequence[str], evaluate: Callable[[list[str]], Trial]
) -> tuple[list[str] | None, list[Trial]]:
    """The shortest prefix of `ranked` whose exclusion passes, assuming more exclusions never hurt:
    grow the prefix, then bisect between the longest failing and the shortest passing length."""
    trials: list[Trial] = []
    results: dict[int, Trial] = {}

    def passes(n: int) -> bool:
        if n not in results:
            results[n] = evaluate(list(ranked[:n]))
            trials.append(results[n])
        return results[n].passed

    low, high = 0, None  # low: a length known to fail (0 is the baseline)
    for n in prefix_lengths(len(ranked)):
        if passes(n):
            high = n
            break
        low = n
    if high is None:
        return None, trials
    while high - low > 1:
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle
    return list(ranked[:high]), trials


@dataclass
class _Request:
    """What analyze was asked, as every step of it needs it."""

    spec: ModelSpec
    precision: str
    config: RunConfig
    progress: Progress
    trust_checkpoint: bool
    allow_nonfinite_inputs: bool
    dataset: Any
    model_arg: str | None
    extra_args: Sequence[str]
    seconds: dict[str, float] = field(default_factory=dict)

    def command(self, verb: str, *args: str) -> list[str]:
        return ["deployval", verb, self.model_arg or self.spec.name, *args]


def analyze(
    spec: ModelSpec,
    precision: str,
    config: RunConfig | None = None,
    *,
    inputs: Mapping[str, np.ndarray] | Path | str | None = None,
    trust_checkpoint: bool = False,
    progress: Progress | None = None,
    model_arg: str | None = None,
    extra_args: Sequence[str] = (),
    verify: bool = True,
    allow_nonfinite_inputs: bool = False,
    dataset: Any = None,
) -> SensitivityResult:
    """Rank the layers of `spec` by their sensitivity to `precision` and propose what to keep. With
    `dataset` (dataset_run.DatasetOptions), every trial is judged on each of its samples (a trial
    passes only when all do) and the proposal is verified over the whole set."""
    from ..judge.judging import row_tolerance
    from ..run.session import Session

    started = time.perf_counter()
    request = _Request(spec, precision, config or RunConfig(), progress or Progress(), trust_checkpoint,
                       allow_nonfinite_inputs, dataset, model_arg, extra_args)
    config, progress, seconds = request.config, request.progress, request.seconds
    _check_request(precision, config)
    first, unusable = None, []
    if dataset is not None:
        if inputs is not None:
            raise UsageError("--dataset and --inputs both define the inputs: give one of them")
        first, unusable, inputs = dataset.dataset.first(spec)
    session = Session(spec, config, inputs, allow_nonfinite=allow_nonfinite_inputs,
                      trust_checkpoint=trust_checkpoint, progress=progress)
    request.spec = spec = session.spec
    backend = "ort" if spec.kind == "onnx" else BACKEND_FOR[precision]  # a file's fp16: its fp16 ONNX

    module = session.module() if spec.kind != "onnx" else None  # an ONNX file's reference is ONNX Runtime fp32
    reference = session.reference().outputs
    output_names = tuple(reference)
    notes: list[str] = []
    sample_names, all_feeds, references = _samples(request, session, reference, first, unusable, notes)
    # the tolerance the pipeline would apply to this backend's row
    tolerances = {name: row_tolerance(spec, backend, precision, name, config) for name in output_names}
    lowering = _lowering(request, session, module, all_feeds, output_names)
    trials = _Trials(request, lowering, references, tolerances, sample_names)
    try:
        result = trials.rank(notes)
        if result.baseline.passed:
            result.proposal, result.status = [], "pass"
            result.reason = f"the model meets the tolerance with every layer in {precision}"
            seconds["total"] = time.perf_counter() - started
            return result
        trials.search(result)
    finally:
        lowering.close()

    if result.proposal is None:
        result.reason = (f"even with all {len(result.layers)} layers kept at fp32 the model misses the tolerance: "
                         f"the error comes from elsewhere ({'; '.join(result.search[-1].failures[:2])})")
        if precision == "int8":
            result.reason += "; with no node quantized, the error is in the graph prepared for quantization itself"
    elif not verify:
        result.status, result.reason = "fixed", "proposal found (not verified: --no-verify)"
    else:
        _verify(request, result, backend, session.feeds)
    seconds["total"] = time.perf_counter() - started
    return result


def _check_request(precision: str, config: RunConfig) -> None:
    if precision not in BACKEND_FOR:
        raise UsageError(f"sensitivity analysis is for int8 or fp16, not '{precision}'")
    if config.device != "cpu":
        raise UsageError("sensitivity analysis runs on the CPU (ONNX Runtime int8 kernels, torch half); drop --device")


def _samples(request: _Request, session: Any, reference: dict[str, np.ndarray], first: Any, unusable: list[Any],
             notes: list[str]) -> tuple[list[str], list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The inputs every trial is judged on (their names, feeds and reference outputs): the session's,
    and with a data set every usable sample after the first; unusable ones are said in `notes`."""
    sample_names, all_feeds, references = [session.inputs_source], [session.feeds], [reference]
    dataset = request.dataset
    if dataset is None:
        return sample_names, all_feeds, references
    start = time.perf_counter()
    sample_names[0] = first.name
    read = list(dataset.dataset.samples(request.spec, after=first))
    more = [sample for sample in read if not sample.fault]
    unusable += [sample for sample in read if sample.fault]
    if unusable:
        total = len(more) + len(unusable) + 1
        notes.append(f"{len(unusable)} of {total} samples could not be used and were left out ("
                     + "; ".join(f"{sample.name}: {sample.fault}" for sample in unusable[:3])
                     + ("; ..." if len(unusable) > 3 else "") + ")")
    with request.progress.step(f"reference outputs of {len(more)} more samples"):
        references += reference_outputs(session, [sample.feeds for sample in more])
    sample_names += [sample.name for sample in more]
    all_feeds += [sample.feeds for sample in more]
    request.seconds["references"] = time.perf_counter() - start
    return sample_names, all_feeds, references


def _lowering(request: _Request, session: Any, module: Any, all_feeds: list[dict[str, np.ndarray]],
              output_names: tuple[str, ...]) -> Lowering:
    """What lowers the model's layers: int8 Q/DQ on its ONNX export, fp16 on an ONNX file's nodes, or
    fp16 on a PyTorch module's leaf modules."""
    config, progress = request.config, request.progress
    if request.precision == "int8":
        from ..export.artifacts import ONNX, ONNX_RAW

        samples = session.calibration() if config.calibration else [dict(session.feeds)]
        store = session.store(output_names)
        try:  # the store's files live only while it is open (always so with --no-cache)
            onnx_path = store.get(ONNX).path
            node_modules = _node_modules(Path(store.get(ONNX_RAW).path or ""), module) if module is not None else {}
            with progress.step("preparing the model for quantization"):
                return Int8Lowering(Path(onnx_path or ""), samples, all_feeds, config.calibration_method,
                                    node_modules, output_names,
                                    config.int8_activation_matmuls)
        finally:
            store.close()
    if module is None:  # an ONNX file: its nodes in the fp16 conversion the pipeline's rows run
        from ..export.artifacts import ONNX

        store = session.store(output_names)
        try:
            with progress.step("preparing the fp16 conversion"):
                return Fp16OnnxLowering(Path(store.get(ONNX).path or ""), all_feeds, output_names)
        finally:
            store.close()
    return Fp16Lowering(module, request.spec, all_feeds, "cpu")


@dataclass
class _Trials:
    """The lowered models of one analysis, each run and judged against the reference on every input."""

    request: _Request
    lowering: Lowering
    references: list[dict[str, np.ndarray]]
    tolerances: dict[str, Tolerance]
    sample_names: list[str]
    names: list[str] = field(default_factory=list)  # every candidate layer, once per_layer ran

    def timed(self, run: Callable[[], list[dict[str, np.ndarray]]], kept: list[str], lowered: str | None) -> Trial:
        start = time.perf_counter()
        try:
            outputs = run()
        except UsageError:
            raise
        except Exception as exc:
            from ..errors import first_line

            return Trial(kept=kept, lowered=lowered, passed=False, score=math.inf,
                         failures=[f"could not build or run: {first_line(exc)}"],
                         seconds=time.perf_counter() - start)
        return _judge(outputs, self.references, self.tolerances, self.request.spec, kept, lowered,
                      time.perf_counter() - start, self.sample_names, self.request.config.slices)

    def rank(self, notes: list[str]) -> SensitivityResult:
        """Every layer lowered, then each layer, op type and subgraph alone, most sensitive first."""
        request, lowering = self.request, self.lowering
        spec, precision, seconds = request.spec, request.precision, request.seconds
        candidates = lowering.candidates()
        if not candidates:
            raise UsageError(f"{spec.name} has no layer that {precision} lowering applies to "
                             f"({', '.join(INT8_LAYER_OPS) if precision == 'int8' else 'leaf modules with weights'}"
                             f"{' with a constant weight input' if precision == 'int8' else ''})")
        start = time.perf_counter()
        with request.progress.step(f"{precision} everywhere ({len(candidates)} layers)"):
            baseline = self.timed(lambda: lowering.run_all_except([]), [], None)
        seconds["baseline"] = time.perf_counter() - start
        layers = self.per_layer(candidates)
        op_types = self.lower_each(lowering.groups(), "op type", lambda pattern, op_type, trial, members:
                                   LayerSensitivity(pattern, op_type, None, trial.score, trial.passed,
                                                    _summary(trial), members=members))
        blocks = self.lower_each(lowering.subgraphs(), "subgraph", lambda pattern, scope, trial, members:
                                 LayerSensitivity(pattern, "subgraph", scope, trial.score, trial.passed,
                                                  _summary(trial), members=members))
        return SensitivityResult(
            model=spec.name, precision=precision, executor=lowering.executor,
            tolerance={name: t.to_dict() for name, t in self.tolerances.items()}, baseline=baseline, layers=layers,
            search=[], proposal=None, option=lowering.option, prefix=lowering.prefix,
            seconds=seconds, op_types=op_types, subgraphs=blocks, notes=notes,
            reproduce=shlex.join(request.command("precision", "--precision", precision, *request.extra_args)),
        )

    def per_layer(self, candidates: Sequence[tuple[str, str, str | None]]) -> list[LayerSensitivity]:
        """Each layer lowered alone, most sensitive first."""
        start = time.perf_counter()
        layers: list[LayerSensitivity] = []
        self.names = [c[0] for c in candidates]
        for index, (layer, op_type, module_name) in enumerate(candidates, 1):
            with self.request.progress.step(f"{self.request.precision} one layer at a time: "
                                            f"{index}/{len(candidates)} {module_name or layer}"):
                trial = self.timed(lambda layer=layer: self.lowering.run_only(layer),
                                   [n for n in self.names if n != layer], layer)
            ranges = self.lowering.input_ranges(layer)
            layers.append(LayerSensitivity(layer, op_type, module_name, trial.score, trial.passed,
                                           _summary(trial, ranges), ranges))
        order = sorted(range(len(layers)), key=lambda i: (-_sortable(layers[i].score), i))
        self.request.seconds["per_layer"] = time.perf_counter() - start
        return [layers[i] for i in order]

    def lower_each(self, groups: Sequence[tuple[str, str, list[str]]], what: str,
                   entry: Callable[[str, str, Trial, list[str]], LayerSensitivity]) -> list[LayerSensitivity]:
        """Each group (an op type, a subgraph) lowered alone, most sensitive first."""
        start = time.perf_counter()
        found = []
        for pattern, label, members in groups:
            with self.request.progress.step(f"{self.request.precision} one {what} at a time: {label} "
                                            f"({len(members)} layers)"):
                trial = self.timed(lambda members=members: self.lowering.run_only_many(members),
                                   [n for n in self.names if n not in members], pattern)
            found.append(entry(pattern, label, trial, list(members)))
        found.sort(key=lambda group: -_sortable(group.score))
        if found:
            self.request.seconds[f"per_{what.replace(' ', '_')}"] = time.perf_counter() - start
        return found

    def evaluate(self, kept: list[str]) -> Trial:
        with self.request.progress.step(f"{self.request.precision} keeping the {len(kept)} most sensitive "
                                        "layer(s) at fp32"):
            return self.timed(lambda: self.lowering.run_all_except(kept), kept, None)

    def search(self, result: SensitivityResult) -> None:
        """The shortest prefix of the ranking to keep at full precision, then made minimal."""
        start = time.perf_counter()
        result.proposal, result.search = search_exclusions([layer.layer for layer in result.layers], self.evaluate)
        if result.proposal:  # backward elimination: the errors of the exclusions need not add up
            passing = next(t for t in result.search if t.passed and t.kept == result.proposal)
            result.proposal, result.dropped, result.exclusions, more = minimize(result.proposal, self.evaluate,
                                                                                passing, result.baseline)
            result.search += more
        self.request.seconds["search"] = time.perf_counter() - start


def _verify(request: _Request, result: SensitivityResult, backend: str, feeds: Mapping[str, np.ndarray]) -> None:
    """The proposal run through the pipeline, exactly as `deployval compare` with it would judge it."""
    from ..run.pipeline import compare

    start = time.perf_counter()
    precision, config, dataset = request.precision, request.config, request.dataset
    values = tuple(result.prefix + glob.escape(n) for n in result.proposal or ())
    setting = {"int8_exclude": values} if precision == "int8" else {"keep_fp32": values}
    report = compare(request.spec, backends=(backend,), precisions=(precision,), config=replace(config, **setting),
                     inputs=dict(feeds) if dataset is None else None, dataset=dataset,
                     allow_nonfinite_inputs=request.allow_nonfinite_inputs, progress=request.progress,
                     trust_checkpoint=request.trust_checkpoint,
                     command=shlex.join(request.command("compare", "--backends", backend, "--precisions", precision,
                                                        *request.extra_args, *result.apply_args())))
    row = report.results[0]
    request.seconds["verification"] = time.perf_counter() - start
    result.verification = {"backend": row.backend, "precision": row.precision, "status": row.status,
                           "reason": row.reason, "outputs": [o.to_dict() for o in row.outputs],
                           "reproduce": report.command, "faithful": row.faithful}
    if row.status == "pass":
        result.status = "fixed"
        result.reason = (f"keeping {len(result.proposal or ())} of {len(result.layers)} layers at fp32 meets the "
                         f"tolerance (verified: {backend} {precision} passes){_culprit(result.layers)}")
        if result.dropped:
            result.reason += (f"; minimal: the search also kept {', '.join(result.dropped)}, which the others make "
                              "redundant")
    else:
        result.reason = f"the proposal did not pass verification: {row.reason}"


def reference_outputs(session: Any, samples: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The reference's outputs for more inputs, its runner loaded once."""
    from ..run.execution import host_outputs
    from ..run.reference import reference_runner

    runner = reference_runner(session.spec, session.module, session.config)
    runner.activate()
    try:
        return [host_outputs(runner, feeds) for feeds in samples]
    finally:
        runner.deactivate()


def _sortable(score: float) -> float:
    return 1e300 if not math.isfinite(score) else score


def _node_modules(raw_path: Path, module: Any) -> dict[str, str]:
    """ONNX node name -> innermost PyTorch module it came from (the simplifier keeps node names)."""
    from ..export import onnx_io
    from ..export.scopes import node_chains

    raw = onnx_io.load_onnx(raw_path)
    chains, _ = node_chains(raw, [name for name, _ in module.named_modules() if name])
    return {node.name: chain[-1] for node, chain in zip(raw.graph.node, chains) if chain}

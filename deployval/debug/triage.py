"""Triage, shared by the PyTorch-model and the ONNX-file debuggers: the region where the error is new
runs on `onnx.reference` (numpy, faithful to the ONNX spec) with the reference inputs. Agreeing with
the backend but not with the reference: the graph computes something else (*export*, conversions
included); agreeing with the reference but not with the backend: *runtime*. Regions too large for a
numpy evaluator are skipped with the reason."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import first_line
from ..metric_table import REL_L2
from ..model.spec import Tolerance
from ..progress import Progress
from .policy import TRIAGE_MAX_MACS
from .report import PASS, VANISHED, LayerResult, Localization, Triage


@dataclass(frozen=True)
class Wording:
    """The names in a triage sentence, e.g. ("the ONNX graph (after the fp16 conversion)", "eager", "eager",
    "ort") for a PyTorch model, ("the onnx-fp16 graph", "the file", "the fp32 reference", "ort") for a file."""

    graph: str  # the debugged graph
    source: str  # what it was made from and should compute the same as
    reference: str  # the run whose values are the reference
    backend: str


def describe_verdict(verdict: str, words: Wording, evaluator_reference: Mapping[str, float],
                     evaluator_backend: Mapping[str, float], backend_reference: Mapping[str, float]) -> str:
    """The report's sentence for a triage verdict, with the three rel L2 distances between the
    evaluator, the reference and the backend."""
    graph, source, reference, backend = words.graph, words.source, words.reference, words.backend
    numbers = (f"onnx.reference vs {reference} rel L2 {evaluator_reference[REL_L2]:.3g}, vs {backend} "
               f"{evaluator_backend[REL_L2]:.3g}; {backend} vs {reference} {backend_reference[REL_L2]:.3g}")
    if verdict == "export":
        return (f"{graph} computes something else than {source} in this region: the reference evaluator agrees "
                f"with {backend}, not with {reference} ({numbers})")
    if verdict == "runtime":
        return (f"{backend} computes this region differently from the ONNX specification: the reference "
                f"evaluator agrees with {reference}, not with {backend} ({numbers})")
    if verdict == "both":
        return f"{graph} differs from {source} and {backend} differs from the graph ({numbers})"
    return f"the reference evaluator is within tolerance of both ({numbers})"


JUMP = 10.0  # a first divergent layer this many times its inputs' largest error did not inherit it gradually


def jump_explanation(own: float, total: float, before: tuple[float, str], backend: str,
                     unseen: Sequence[str]) -> str | None:
    """Why a first divergent layer that is within tolerance alone diverges, where calling it accumulated
    would blame the layers before it: their error is far below its own (`before`: the largest, and whose).
    None where the error did grow gradually. `unseen`: the nodes between them the artifact no longer shows."""
    largest, where = before
    if total <= JUMP * largest:
        return None
    between = "" if not unseen else (f"; between them are nodes the artifact no longer shows, which {backend} "
                                     f"fused or removed ({', '.join(unseen[:6])}{', ...' if len(unseen) > 6 else ''})")
    return (f"its error jumps to rel L2 {total:.3g} from at most {largest:.3g} before it ({where}), and fed the "
            f"reference inputs it gives rel L2 {own:.3g}, within tolerance: either it amplifies that small error, "
            f"or {backend} computes it differently inside the whole graph than alone{between}")


def jump_localization(earlier: Sequence[LayerResult], first: LayerResult, own: float,
                      backend: str) -> Localization | None:
    """A first divergent layer within tolerance alone (`own`: its rel L2 fed the reference inputs), localized
    as a jump where its error is far above every compared layer's before it (`earlier`, in order); None
    where the error grew gradually (accumulated)."""
    compared = [(r.metrics[REL_L2], r.label) for r in earlier if r.status == PASS and REL_L2 in r.metrics]
    if not compared or REL_L2 not in first.metrics:
        return None
    unseen: list[str] = []
    for row in reversed(earlier):  # back to the last layer compared
        if row.status == PASS and REL_L2 in row.metrics:
            break
        if row.status == VANISHED:
            unseen.insert(0, row.label)
    text = jump_explanation(own, first.metrics[REL_L2], max(compared), backend, unseen)
    return None if text is None else Localization(first.label, "jump", text, first.ops)


def triage_verdict(reference_ok: bool, backend_ok: bool) -> str:
    """`reference_ok`: the evaluator agrees with the reference (eager, or the fp32 file);
    `backend_ok`: it agrees with the backend."""
    if backend_ok and not reference_ok:
        return "export"
    if reference_ok and not backend_ok:
        return "runtime"
    if not reference_ok:
        return "both"
    return "inconclusive"


def triage_region(label: str, index: Any, node_names: Sequence[str], evaluate: Callable[[], Any],
                  reference: np.ndarray, backend_value: np.ndarray, backend_metrics: dict[str, float],
                  tolerance: Tolerance, words: Wording, progress: Progress, timings: dict[str, Any]) -> Triage:
    """Run `evaluate` (onnx.reference on the region, returning its value) unless the region's
    multiply-adds exceed TRIAGE_MAX_MACS, and judge it against the reference and the backend
    (`backend_metrics`: the backend against the reference), in the sentence `words` name.
    Adds the time spent to timings["triage_s"] (not for a region skipped as too large)."""
    from ..export.graph import estimate_macs
    from ..judge.stats import passes

    start = time.perf_counter()
    nodes = len(node_names)
    macs = estimate_macs(index, node_names)
    if macs > TRIAGE_MAX_MACS:
        return Triage("skipped", label, f"the region ({nodes} nodes, {macs / 1e9:.1f} G multiply-adds) is too large "
                      "for the numpy reference evaluator", region_nodes=nodes)
    try:
        with progress.step(f"triage: {label} on onnx.reference"):
            value = np.asarray(evaluate())
    except Exception as exc:
        timings["triage_s"] += time.perf_counter() - start
        return Triage("skipped", label, f"onnx.reference could not run the region: {first_line(exc)}",
                      region_nodes=nodes)
    reference_ok, reference_metrics = passes(reference, value, tolerance)
    backend_ok, evaluator_backend = passes(value, backend_value, tolerance)
    verdict = triage_verdict(reference_ok, backend_ok)
    sentence = describe_verdict(verdict, words, reference_metrics, evaluator_backend, backend_metrics)
    triage = Triage(verdict, label, sentence, backend_metrics, reference_metrics, evaluator_backend, nodes,
                    time.perf_counter() - start)
    timings["triage_s"] += time.perf_counter() - start
    return triage

"""Triage, shared by the PyTorch-model and the ONNX-file debuggers: the region where the error is new
runs on `onnx.reference` (numpy, faithful to the ONNX spec) with the reference inputs. Agreeing with
the backend but not with the reference: the graph computes something else (*export*, conversions
included); agreeing with the reference but not with the backend: *runtime*. Regions too large for a
numpy evaluator are skipped with the reason."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import first_line
from ..progress import Progress
from ..spec import Tolerance
from .policy import TRIAGE_MAX_MACS
from .report import Triage

# (verdict, evaluator vs reference metrics, evaluator vs backend metrics) -> the report's sentence
Describe = Callable[[str, Mapping[str, float], Mapping[str, float]], str]


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
                  tolerance: Tolerance, describe: Describe, progress: Progress, timings: dict[str, Any]) -> Triage:
    """Run `evaluate` (onnx.reference on the region, returning its value) unless the region's
    multiply-adds exceed TRIAGE_MAX_MACS, and judge it against the reference and the backend.
    Adds the time spent to timings["triage_s"] (not for a region skipped as too large)."""
    from ..stats import passes
    from .graph import estimate_macs

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
    triage = Triage(verdict, label, describe(verdict, reference_metrics, evaluator_backend), backend_metrics,
                    reference_metrics, evaluator_backend, nodes, time.perf_counter() - start)
    timings["triage_s"] += time.perf_counter() - start
    return triage

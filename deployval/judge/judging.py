"""A row's verdict from its outputs: each output compared with the reference under the row's
tolerance. One place for the pipeline's rows, the reference judged against golden outputs, and the
sensitivity analysis's trials, so a row means the same wherever it is judged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from ..model.spec import ModelSpec, RunConfig, TaskSpec, Tolerance
from .metrics import compare_output, failure_lines
from .results import ERROR, FAIL, PASS, BackendResult
from .slices import SliceSpec
from .task_checks import combine, run_check


def row_tolerance(spec: ModelSpec, backend: str, precision: str, output: str, config: RunConfig) -> Tolerance:
    """The spec's tolerance for this row and output (or --tolerance's, for every row); --atol/--rtol
    override both parts of its elementwise rule."""
    tolerance = config.tolerance or spec.tolerances.resolve(backend, precision, output)
    if config.atol is not None or config.rtol is not None:
        tolerance = replace(
            tolerance,
            atol=config.atol if config.atol is not None else (tolerance.atol or 0.0),
            rtol=config.rtol if config.rtol is not None else (tolerance.rtol or 0.0),
        )
    return tolerance


def judge_outputs(result: BackendResult, reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
                  tolerance: Callable[[str], Tolerance], task: TaskSpec | None, *,
                  allow_nonfinite: bool = False, slices: Sequence[SliceSpec] = ()) -> None:
    """Compare every reference output (a missing one fails); outputs the reference lacks are named.
    `allow_nonfinite`: the reference's NaN/Inf were accepted (--allow-nonfinite): masked, judged by kind."""
    start = time.perf_counter()
    result.outputs = [compare_output(name, ref, outputs.get(name), tolerance(name), task,
                                     allow_nonfinite=allow_nonfinite, slices=slices)
                      for name, ref in reference.items()]
    # For the HTML report's histograms (72 counts per output), from the comparison's own pass.
    result.details["error_histograms"] = {o.name: o.histogram for o in result.outputs if o.histogram is not None}
    extra = sorted(set(outputs) - set(reference))
    if extra:
        result.warnings.append(f"outputs not in the reference, not compared: {', '.join(extra)}")
    result.seconds["compare"] = time.perf_counter() - start


def settle_verdict(result: BackendResult, judge: str = "norms") -> BackendResult:
    """The row's verdict under `judge` (task_checks.py): by its outputs' norms (PASS when every compared
    output passed, else FAIL with the first failure of each), by its task check, or by both. A check that
    broke makes the row an ERROR; norms that fail under --judge task are said, not hidden."""
    norms = failure_lines(result.outputs)
    failures, error = combine(norms, result.task_check, judge)
    if error:
        result.status, result.reason = ERROR, error
        return result
    result.status = FAIL if failures else PASS
    result.reason = "; ".join(failures)
    if judge == "task" and norms:
        result.warnings.append(f"judged by the task only (--judge task); by the norms it would fail: {norms[0]}")
    return result


def check_task(result: BackendResult, config: RunConfig, reference: Mapping[str, np.ndarray],
               outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray]) -> None:
    """The run's task check on this row's outputs, recorded in the row (settle_verdict weighs it)."""
    if config.task_check is not None:
        start = time.perf_counter()
        check = config.task_check
        result.task_check = run_check(check, check.resolve(), reference, outputs, inputs).to_dict()
        result.seconds["task_check"] = time.perf_counter() - start

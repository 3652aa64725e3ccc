"""fp16 findings around a compare run: the reference's activation ranges (module outputs, or every tensor
of the fp32 ONNX graph an fp16 row runs) against fp16's limits, recorded in the report and said at once,
and how they decide a row whose executor cannot show an overflow (ORT's CPU provider computes in fp32)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeployvalError, first_line
from ..export.artifacts import MODULE, ONNX, ONNX_FP16, ONNX_FP16_INT32, ONNX_RAW, TORCHSCRIPT
from ..export.store import ArtifactStore
from ..judge.results import FAIL, PASS, BackendResult, Report
from ..model.spec import ModelSpec, RunConfig
from ..progress import Progress


def range_findings(ranges: list[Any] | None, config: RunConfig, report: Report, progress: Progress,
                    quiet: bool = False, seconds: float = 0.0) -> list[Any]:
    """fp16 findings of the reference run's activation ranges: recorded in the report and said at
    once, before any engine is built (unless `quiet`: the tensor-level check will speak). `seconds`:
    what recording them added to the reference run."""
    if ranges is None:
        return []
    from ..judge.ranges import findings

    found = findings(ranges, "fp16", config.keep_fp32)
    top = sorted(ranges, key=lambda r: r.max_abs, reverse=True)[:10]
    report.analysis["activation_ranges"] = {
        "level": "module",
        "layers": len(ranges),
        "largest": [{"module": r.module, "type": r.type, "max_abs": r.max_abs} for r in top],
        "fp16": [{"module": f.module, "kind": f.kind, "value": f.value, "finding": f.describe()} for f in found],
        "keep_fp32": list(config.keep_fp32),
        "seconds": round(seconds, 3),
    }
    for finding in [] if quiet else found:
        progress.note(f"fp16: {finding.describe()}")
    return found


def fp16_onnx_kind(jobs: Sequence[Any], config: RunConfig) -> str | None:
    """The artifact of the first fp16 row that runs an ONNX artifact, if any: then the fp32 ONNX graph it
    is made from has its every tensor checked against fp16's range."""
    for job in jobs:
        if job.result is None and job.precision == "fp16" and job.runner is not None:
            try:
                kind = job.runner.artifact_for("fp16", dict(config.backend_options))
            except DeployvalError:
                continue
            if kind not in (MODULE, TORCHSCRIPT):
                return kind
    return None


def tensor_range_findings(spec: ModelSpec, store: ArtifactStore, feeds: Mapping[str, np.ndarray], config: RunConfig,
                           report: Report, progress: Progress, module: Callable[[], Any], kind: str,
                           fallback: list[Any], module_ranges: Sequence[Any] = ()) -> list[Any]:
    """fp16 findings of every tensor of the fp32 ONNX graph that the fp16 artifact `kind` is made from,
    named by module; recorded in the report and said at once. Where the check cannot run, the
    module-level findings (`fallback`) stay the judge."""
    import contextlib

    from . import tensor_ranges

    try:
        with contextlib.suppress(DeployvalError):  # its row says why; the check does without its details
            store.get(kind)  # its conversion step says which nodes stay fp32
        source = store.get(ONNX)
        raw = store.get(ONNX_RAW).path if spec.kind != "onnx" else None
        names = [n for n, _ in module().named_modules() if n] if spec.kind != "onnx" else []
        step = store.step_for("fp16")
        details = step.details if step is not None and step.status == "ok" else None
        with progress.step("fp16 ranges of every tensor (fp32 ONNX on ONNX Runtime)"):
            check = tensor_ranges.record_tensor_ranges(Path(source.path or ""), feeds, raw_path=raw,
                                                       module_names=names, keep_fp32=config.keep_fp32,
                                                       fp16_details=details, module_ranges=module_ranges)
    except Exception as exc:  # the check is an aid: its failure must not cost the rows
        reason = exc.one_line() if isinstance(exc, DeployvalError) else first_line(exc)
        report.analysis.setdefault("activation_ranges", {"level": "none"})["tensor_level_error"] = reason
        progress.note(f"fp16: the ranges of every tensor could not be checked ({reason})")
        for finding in fallback:
            progress.note(f"fp16: {finding.describe()}")
        return fallback
    found = tensor_ranges.findings(check, "fp16")
    top = sorted(check.ranges, key=lambda r: r.max_abs, reverse=True)[:10]
    module_level = report.analysis.get("activation_ranges")
    report.analysis["activation_ranges"] = {
        "level": "tensor",
        "layers": len(check.ranges),
        "largest": [{"module": r.module, "after": r.after, "node": r.node, "op": r.op, "tensor": r.tensor,
                     "max_abs": r.max_abs} for r in top],
        "fp16": [{"module": f.module, "node": f.node, "tensor": f.tensor, "kind": f.kind, "value": f.value,
                  "finding": f.describe()} for f in found],
        "keep_fp32": list(config.keep_fp32),
        "float_tensors": check.float_tensors,
        "exempt": {"kept_fp32": check.kept_fp32, "saturating_constants": check.saturating},
        "copies_not_measured": check.copies,
        "from_module_outputs": check.from_modules,
        "segments": check.segments, "budget_bytes": check.budget_bytes, "exposed_bytes": check.exposed_bytes,
        "seconds": round(check.seconds, 3), "layer_map": check.map_source, "notes": check.notes,
        **({"module_level": module_level} if module_level else {}),
    }
    for finding in found:
        progress.note(f"fp16: {finding.describe()}")
    return found


def judge_ranges(result: BackendResult, found: list[Any]) -> None:
    """An fp16 result from an executor that computes in fp32 (ORT's CPU provider) cannot show an
    overflow; the reference's ranges decide for it. A faithful executor shows the outcome itself;
    there the finding explains it."""
    overflows = [f for f in found if f.kind == "overflow"]
    flushes = [f for f in found if f.kind == "flush"]
    if result.status in (PASS, FAIL) and not result.faithful and overflows:
        result.status = FAIL
        reason = overflows[0].describe() + (f" (and {len(overflows) - 1} more layers)" if len(overflows) > 1 else "")
        result.reason = f"{reason}; {result.reason}" if result.reason else reason
    elif overflows and result.status == FAIL:
        result.reason += f"; likely cause: {overflows[0].describe()}"
    result.warnings.extend(f.describe() for f in flushes[:3])


def fp16_onnx_weights(result: BackendResult, store: ArtifactStore) -> None:
    """A row running the fp16 ONNX carries the weights its conversion could not hold (torch rows find theirs)."""
    step = store.step_for("fp16")
    if (result.artifact or {}).get("kind") in (ONNX_FP16, ONNX_FP16_INT32) and step is not None:
        result.details.setdefault("fp16_weights", step.details.get("weights", []))

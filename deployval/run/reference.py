"""The reference run: what defines "correct" for every row of a Session.

Torch eager fp32 on the run's device (ONNX Runtime fp32 on the CPU for an ONNX file), run once. The
same forward pass can record the activation range of every module (fp16's limits) and, when a
TorchScript row will need a trace, be that trace: the row's export then costs no forward of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Runner, check_available
from ..errors import BackendError, DeployvalError, UsageError, first_line
from ..export.artifacts import MODULE, ONNX_RAW, Artifact
from ..memory import PeakMemory
from ..model import inputs as inputs_mod
from ..model.spec import ModelSpec, RunConfig, format_shape
from ..progress import Progress
from .execution import describe_exit, exits_guarded, infer_once, rerun_differences


@dataclass
class ReferenceRun:
    """The reference's outputs (named), its first run's seconds, and what the same pass recorded."""

    outputs: dict[str, np.ndarray]
    seconds: float
    traced: Any = None  # the TorchScript traced during the run (when asked and the trace worked)
    trace_error: str = ""  # why not, when asked: the TorchScript build then traces on its own and says so
    ranges_seconds: float = 0.0  # of `seconds`, the time the activation-range hooks took
    memory: dict[str, int] = field(default_factory=dict)  # the run's peak memory (memory.PeakMemory)
    repeat_differences: dict[str, float] = field(default_factory=dict)  # output -> max |diff| between runs


def reference_runner(spec: ModelSpec, module: Callable[[], Any], config: RunConfig) -> Runner:
    """The runner that defines 'correct': torch eager fp32 on the run's device, or ONNX Runtime fp32
    on the CPU for ONNX models."""
    if spec.kind == "onnx":
        from ..backends.onnxruntime import OnnxRuntimeRunner

        ok, reason = check_available(OnnxRuntimeRunner, "cpu")
        if not ok:
            raise UsageError(f"ONNX models need ONNX Runtime for the reference run: {reason}")
        artifact = Artifact(ONNX_RAW, path=Path(spec.path or ""), input_names=spec.input_names,
                            output_names=spec.output_names or ())
        return OnnxRuntimeRunner(artifact, "fp32", "cpu")
    from ..backends.torch_eager import TorchEagerRunner

    ok, reason = check_available(TorchEagerRunner, config.device)
    if not ok:
        raise UsageError(f"the reference (torch eager on {config.device}) cannot run: {reason}")
    artifact = Artifact(MODULE, obj=module(), input_names=spec.input_names, output_names=spec.output_names or ())
    return TorchEagerRunner(artifact, "fp32", config.device)


def run_reference(
    runner: Runner, spec: ModelSpec, feeds: Mapping[str, np.ndarray], progress: Progress, *,
    ranges: list[Any] | None = None, trace: bool = False,
    then: Callable[[Runner, Mapping[str, np.ndarray], float], None] | None = None, repeat: int = 1,
) -> ReferenceRun:
    """Run the reference once. With `ranges`, the activation range of every module is recorded in the
    same pass; with `trace`, the pass runs under torch.jit.trace (for the TorchScript row); `then(runner,
    prepared feeds, first run seconds)` runs while the runner is still active (e.g. timing the
    reference as a row). The user's model failing here is a usage error: there is nothing to judge."""
    with exits_guarded():
        return _run_reference(runner, spec, feeds, progress, ranges=ranges, trace=trace, then=then, repeat=repeat)


def _run_reference(
    runner: Runner, spec: ModelSpec, feeds: Mapping[str, np.ndarray], progress: Progress, *,
    ranges: list[Any] | None, trace: bool, then: Callable[[Runner, Mapping[str, np.ndarray], float], None] | None,
    repeat: int,
) -> ReferenceRun:
    label = "onnxruntime" if spec.kind == "onnx" else "torch eager"
    result: ReferenceRun | None = None
    peak = PeakMemory(runner.device).__enter__()
    try:
        with progress.step(f"reference run ({label} fp32{', traced' if trace else ''})"):
            runner.activate()
            prepared = inputs_mod.adapt_for_backend(feeds, runner.input_dtypes(), runner.name)
            start = time.perf_counter()
            if ranges is not None:
                from ..judge.ranges import record_ranges

                with record_ranges(runner.module) as recorded:  # type: ignore[attr-defined]
                    result = _first_run(runner, prepared, trace)
                ranges.extend(recorded)
                result.ranges_seconds = recorded.seconds
            else:
                result = _first_run(runner, prepared, trace)
            result.seconds = time.perf_counter() - start
        runner.artifact.output_names = runner.output_names
        if repeat > 1:  # a reference that is not a pure function (state kept between calls) misleads every row
            with progress.step(f"repeating the reference ({repeat - 1} more)"):
                result.repeat_differences = rerun_differences(runner, prepared, result.outputs, repeat)
        if then is not None:
            then(runner, prepared, result.seconds)
    except BackendError as exc:  # the reference runtime refuses the user's model itself: bad input, not a row
        raise UsageError(f"the reference ({runner.name} fp32) cannot run this model: {exc.one_line()}") from None
    except DeployvalError:
        raise
    except Exception as exc:
        if result is not None:  # the model ran: what failed after it is deployval's own
            raise
        shapes = ", ".join(f"{k}={format_shape(v.shape)}:{v.dtype}" for k, v in feeds.items())
        raise UsageError(f"the reference run failed on inputs {shapes}: {first_line(exc)}") from None
    except SystemExit as exc:  # the model would end the run with its own exit code (0: a silent PASS)
        raise UsageError(f"the model called {describe_exit(exc)} during the reference run: a model must return "
                         "its outputs") from None
    finally:
        peak.__exit__(None, None, None)
        if result is not None:
            result.memory = peak.to_dict()
        runner.deactivate()
    return result


def _first_run(runner: Runner, prepared: Mapping[str, np.ndarray], trace: bool) -> ReferenceRun:
    trace_impl = getattr(runner, "trace_impl", None)
    if trace and trace_impl is not None:
        tensors = runner.to_device(prepared)
        try:
            traced, outputs = trace_impl(tensors)
        except Exception as exc:  # not traceable: the plain run gives the reference; the build will say why
            error = first_line(exc)
        else:
            runner.synchronize()
            return ReferenceRun(runner.to_host(outputs), 0.0, traced=traced)
        return ReferenceRun(runner.to_host(infer_once(runner, prepared)), 0.0, trace_error=error)
    return ReferenceRun(runner.to_host(infer_once(runner, prepared)), 0.0)

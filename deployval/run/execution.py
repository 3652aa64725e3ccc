"""Running one backend: activate, the correctness run, warm-ups and timed runs, deactivate.

The same code runs in the deployval process or, isolated, in a child process (see isolation.py);
either way the caller gets an `Execution`: the outputs of the correctness run on the host, the
latency statistics, and the error if the backend failed part-way.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Runner
from ..errors import DeployvalError, UsageError, first_line
from ..export.artifacts import Artifact
from ..judge.metrics import difference_if_any
from ..memory import PeakMemory
from ..model import inputs as inputs_mod
from ..model.spec import RunConfig
from ..progress import Progress
from ..timing import LatencyStats, measure, summarize


@dataclass
class Execution:
    outputs: dict[str, np.ndarray] | None = None
    latency: LatencyStats | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    usage_error: bool = False


class ExitCalled(SystemExit):
    """`os._exit()` called in the thread that guards it (`exits_guarded`): raised instead of ending the
    process, so that code running in-process cannot turn the run into a silent exit code."""


_real_exit = os._exit


@contextmanager
def exits_guarded() -> Iterator[None]:
    """While a model or backend runs in this process, `os._exit` from this thread raises `ExitCalled`
    (a SystemExit) instead of ending the process; other threads and forked children exit as usual. A
    native `exit()` cannot be caught: only `--isolate` contains it."""
    if getattr(os._exit, "deployval_guard", False):
        yield
        return
    thread, pid = threading.get_ident(), os.getpid()

    def guarded_exit(code: int) -> None:
        if threading.get_ident() == thread and os.getpid() == pid:
            raise ExitCalled(code)
        _real_exit(code)

    guarded_exit.deployval_guard = True  # type: ignore[attr-defined]
    os._exit = guarded_exit
    try:
        yield
    finally:
        os._exit = _real_exit


def describe_exit(exc: SystemExit) -> str:
    """How code ended the process it ran in: 'sys.exit(0)' or 'os._exit(1)'."""
    return f"{'os._exit' if isinstance(exc, ExitCalled) else 'sys.exit'}({exc.code!r})"


def batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 1


def infer_once(runner: Runner, feeds: Mapping[str, np.ndarray]) -> Any:
    """One complete run as the harness times it: inputs to the device, run, wait for the device."""
    outputs = runner.infer_impl(runner.to_device(feeds))
    runner.synchronize()
    return outputs


def host_outputs(runner: Runner, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An active runner's named outputs on the host, for inputs not yet in the dtypes it takes."""
    prepared = inputs_mod.adapt_for_backend(feeds, runner.input_dtypes(), runner.name)
    return runner.to_host(infer_once(runner, prepared))


def time_runner(runner: Runner, feeds: Mapping[str, np.ndarray], config: RunConfig,
                first_run_s: float) -> tuple[LatencyStats, dict[str, float]]:
    """Warm-ups and timed runs after the correctness run (which was the first warm-up)."""

    def run_once() -> float | None:
        runner.to_host(infer_once(runner, feeds))
        return runner.device_time_ms()

    start = time.perf_counter()
    host, device = measure(run_once, extra_warmup=config.warmup - 1, iterations=config.iterations,
                           time_budget_s=config.time_budget_s, max_iterations=config.max_iterations)
    stats = summarize(host, batch=batch_size(feeds), warmup=config.warmup, first_run_ms=first_run_s * 1000.0,
                      device_samples_ms=device)
    return stats, {"timing": time.perf_counter() - start}


def execute(
    runner_cls: type[Runner], artifact: Artifact, precision: str, device: str, options: Mapping[str, Any],
    feeds: Mapping[str, np.ndarray], config: RunConfig, progress: Progress | None = None, label: str = "",
) -> Execution:
    """Run one backend in this process. Failures become `Execution.error`; outputs of a correctness
    run that succeeded are kept even if timing fails afterwards. A backend that calls `sys.exit()` or
    `os._exit()` is an error too, never the end of the run."""
    with exits_guarded():
        return _execute(runner_cls, artifact, precision, device, options, feeds, config, progress, label)


def _execute(
    runner_cls: type[Runner], artifact: Artifact, precision: str, device: str, options: Mapping[str, Any],
    feeds: Mapping[str, np.ndarray], config: RunConfig, progress: Progress | None, label: str,
) -> Execution:
    progress = progress or Progress()
    label = label or f"{runner_cls.name} {precision}"
    result = Execution()
    runner = runner_cls(artifact, precision, device, options)
    peak = PeakMemory(device).__enter__()  # loading, the correctness run and the timed runs
    try:
        start = time.perf_counter()
        with progress.step(f"loading {label}"):
            runner.activate()
        result.seconds["prepare"] = time.perf_counter() - start
        prepared = inputs_mod.adapt_for_backend(feeds, runner.input_dtypes(), runner_cls.name)
        with progress.step(f"running {label}"):
            start = time.perf_counter()
            result.outputs = runner.to_host(infer_once(runner, prepared))
            first_run = time.perf_counter() - start
        result.seconds["correctness"] = first_run
        if config.repeat > 1:
            with progress.step(f"repeating {label} ({config.repeat - 1} more)"):
                _repeat(runner, prepared, result.outputs, config.repeat, result)
        with progress.step(f"timing {label}"):
            result.latency, seconds = time_runner(runner, prepared, config, first_run)
        result.seconds.update(seconds)
        if config.repeat > 1 and runner_cls.builds_engine:
            runner.deactivate()  # one engine in memory at a time
            with progress.step(f"building {label} again (no engine cache)"):
                _rebuild(runner_cls, artifact, precision, device, options, prepared, result)
    except DeployvalError as exc:
        result.error, result.usage_error = exc.one_line(), isinstance(exc, UsageError)
    except Exception as exc:  # a crashing runtime is a result, not the end of the run
        result.error = f"{runner_cls.name} failed: {first_line(exc)}"
    except SystemExit as exc:  # its exit code would become the run's: a silent PASS for exit(0)
        result.error = (f"{runner_cls.name} called {describe_exit(exc)} while it ran in this process; "
                        "its outputs cannot be judged")
    finally:
        peak.__exit__(None, None, None)
        result.details.update(runner.details)
        result.warnings.extend(runner.warnings)
        result.details["memory"] = {**peak.to_dict(), **artifact_size(artifact),
                                    **{k: v for k, v in runner.details.items() if k.startswith("engine_") and
                                       k.endswith("_bytes")}}
        try:
            runner.deactivate()
        except (Exception, SystemExit) as exc:
            result.warnings.append(f"deactivate failed: {first_line(exc)}")
    return result


def repeat_difference(first: Mapping[str, np.ndarray], again: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per output that is not bit-identical between two runs of the same inputs: max |difference|
    (NaN in the same places counts as identical)."""
    differing = {}
    for name, value in first.items():
        diff = float("inf") if name not in again else difference_if_any(value, again[name])
        if diff is not None:
            differing[name] = diff
    return differing


def rerun_differences(runner: Runner, prepared: Mapping[str, np.ndarray], first: Mapping[str, np.ndarray],
                      repeat: int) -> dict[str, float]:
    """Run the same inputs `repeat - 1` more times on an active runner: per output that was ever not
    bit-identical to `first`, the largest |difference|."""
    worst: dict[str, float] = {}
    for _ in range(repeat - 1):
        for name, diff in repeat_difference(first, runner.to_host(infer_once(runner, prepared))).items():
            worst[name] = max(worst.get(name, 0.0), diff)
    return worst


def _repeat(runner: Runner, prepared: Mapping[str, np.ndarray], first: Mapping[str, np.ndarray], repeat: int,
            result: Execution) -> None:
    """Run the same inputs again: a runtime that gives other numbers each time is reported."""
    worst = rerun_differences(runner, prepared, first, repeat)
    result.details["repeat"] = {"runs": repeat, "identical": not worst, "max_abs_difference": worst}
    if worst:
        name, diff = max(worst.items(), key=lambda item: item[1])
        result.warnings.append(f"not deterministic: {repeat} runs of the same inputs differ (output '{name}' by "
                               f"max |diff| {diff:.3g}); the first run is the one judged")


def _rebuild(runner_cls: type[Runner], artifact: Artifact, precision: str, device: str, options: Mapping[str, Any],
             prepared: Mapping[str, np.ndarray], result: Execution) -> None:
    """Build the engine once more, bypassing the engine cache, and run the same inputs: kernels chosen
    at build time (TensorRT's tactics) may differ from one build to the next."""
    again = runner_cls(artifact, precision, device, {**options, "engine_cache_dir": None})
    try:
        again.activate()
        outputs = again.to_host(infer_once(again, prepared))
    except Exception as exc:  # the first engine's outputs are judged all the same
        reason = exc.one_line() if isinstance(exc, DeployvalError) else first_line(exc)
        result.details.setdefault("repeat", {}).update(engine_builds=1, build_error=reason)
        result.warnings.append(f"the second engine build (for --repeat) failed: {reason}")
        return
    finally:
        again.deactivate()
    assert result.outputs is not None
    differences = repeat_difference(result.outputs, outputs)
    result.details.setdefault("repeat", {}).update(engine_builds=2, builds_identical=not differences,
                                                   build_max_abs_difference=differences)
    if differences:
        name, diff = max(differences.items(), key=lambda item: item[1])
        result.warnings.append(f"not deterministic across engine builds: a second build (no engine cache) computes "
                               f"output '{name}' differently (max |diff| {diff:.3g})")


def artifact_size(artifact: Artifact) -> dict[str, int]:
    """The artifact's size on disk (with its external data), where it is a file."""
    if artifact.path is None:
        return {}
    path = Path(artifact.path)
    try:
        size = path.stat().st_size
        for extra in path.parent.glob(path.name + ".data"):
            size += extra.stat().st_size
    except OSError:
        return {}
    return {"artifact_bytes": size}

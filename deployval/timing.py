"""Latency: warm-up, timed iterations or a time budget, robust statistics.

The correctness run is the first warm-up, so a heavy model runs only as often as the numbers
need: with a budget shorter than one forward pass, a 20-second model is timed once after it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per run; throughput in samples per second (batch / median)."""

    iterations: int
    warmup: int
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    throughput: float
    first_run_ms: float  # the correctness run, which includes one-time costs
    device_median_ms: float | None = None  # accelerator time (CUDA events), where measured
    clock: str = "host wall time"

    def to_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted list (numpy's default method)."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(
    samples_ms: list[float],
    *,
    batch: int,
    warmup: int,
    first_run_ms: float,
    device_samples_ms: list[float] | None = None,
) -> LatencyStats:
    """Statistics over the timed runs; with no timed run, the correctness run stands in."""
    values = sorted(samples_ms) if samples_ms else [first_run_ms]
    median = statistics.median(values)
    return LatencyStats(
        iterations=len(samples_ms),
        warmup=warmup,
        median_ms=median,
        mean_ms=statistics.fmean(values),
        p90_ms=percentile(values, 90),
        p99_ms=percentile(values, 99),
        min_ms=values[0],
        max_ms=values[-1],
        std_ms=statistics.pstdev(values) if len(values) > 1 else 0.0,
        throughput=batch / (median / 1000.0) if median > 0 else math.inf,
        first_run_ms=first_run_ms,
        device_median_ms=statistics.median(device_samples_ms) if device_samples_ms else None,
    )


def measure(
    run_once: Callable[[], float | None],
    *,
    extra_warmup: int,
    iterations: int | None,
    time_budget_s: float,
    max_iterations: int,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[float], list[float]]:
    """Run warm-ups, then `iterations` timed runs, or runs until `time_budget_s` is spent (at least
    one, at most `max_iterations`); returns host samples and device samples (ms).

    `run_once` performs one complete inference (inputs to device, run, synchronize, outputs to
    host) and may return the accelerator's own time for it in ms.
    """
    for _ in range(extra_warmup):
        run_once()
    host: list[float] = []
    device: list[float] = []
    limit = iterations if iterations is not None else max_iterations
    deadline = clock() + time_budget_s
    while len(host) < limit:
        start = clock()
        device_ms = run_once()
        end = clock()
        host.append((end - start) * 1000.0)
        if device_ms is not None:
            device.append(device_ms)
        if iterations is None and end >= deadline:
            break
    return host, device

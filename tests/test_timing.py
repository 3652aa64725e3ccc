"""Latency statistics and the run plan (a fake clock makes them exact)."""

from __future__ import annotations

import pytest

from deployval.timing import measure, percentile, summarize


class FakeClock:
    def __init__(self, step_s: float) -> None:
        self.now = 0.0
        self.step_s = step_s

    def __call__(self) -> float:
        return self.now

    def run(self) -> None:
        self.now += self.step_s


def test_percentile_matches_numpy_linear():
    import numpy as np

    values = sorted([5.0, 1.0, 3.0, 2.0, 4.0, 10.0])
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_summary_statistics():
    stats = summarize([10.0, 20.0, 30.0, 40.0], batch=2, warmup=1, first_run_ms=100.0)
    assert stats.median_ms == 25.0 and stats.mean_ms == 25.0
    assert stats.min_ms == 10.0 and stats.max_ms == 40.0
    assert stats.throughput == pytest.approx(2 / 0.025)
    assert stats.iterations == 4 and stats.first_run_ms == 100.0


def test_no_timed_run_falls_back_to_the_correctness_run():
    stats = summarize([], batch=1, warmup=1, first_run_ms=20_000.0)
    assert stats.iterations == 0 and stats.median_ms == 20_000.0


def test_time_budget_bounds_a_heavy_model_to_one_timed_run():
    clock = FakeClock(step_s=20.0)  # a 20 s forward pass
    calls = []

    def run_once():
        calls.append(1)
        clock.run()

    host, device = measure(run_once, extra_warmup=0, iterations=None, time_budget_s=1.0, max_iterations=1000,
                           clock=clock)
    assert len(calls) == 1 and host == [20_000.0] and device == []


def test_time_budget_for_a_light_model_and_the_iteration_cap():
    clock = FakeClock(step_s=0.01)
    host, _ = measure(clock.run, extra_warmup=2, iterations=None, time_budget_s=0.5, max_iterations=1000,
                      clock=clock)
    assert len(host) == 50
    host, _ = measure(clock.run, extra_warmup=0, iterations=None, time_budget_s=100.0, max_iterations=30,
                      clock=clock)
    assert len(host) == 30


def test_explicit_iterations_ignore_the_budget():
    clock = FakeClock(step_s=1.0)
    host, _ = measure(clock.run, extra_warmup=0, iterations=5, time_budget_s=0.1, max_iterations=2, clock=clock)
    assert len(host) == 5


def test_device_times_are_collected():
    clock = FakeClock(step_s=0.002)

    def run_once():
        clock.run()
        return 1.5

    host, device = measure(run_once, extra_warmup=0, iterations=3, time_budget_s=1, max_iterations=10, clock=clock)
    stats = summarize(host, batch=1, warmup=1, first_run_ms=5.0, device_samples_ms=device)
    assert device == [1.5, 1.5, 1.5] and stats.device_median_ms == 1.5

"""Memory: how much activation data one backend run may hand back (debug's streamed layers, the
tensor-level fp16 ranges), and how much memory a row took (its peak resident memory, sampled, and on
CUDA torch's device peak). Low in the layers: the debugger, the pipeline and execution use it."""

from __future__ import annotations

import os
from typing import Any

from .errors import UsageError

DEFAULT_BUDGET_BYTES = 512 << 20  # exposed activations per backend run (also capped by free memory)
MEMORY_ENV = "DEPLOYVAL_DEBUG_MEMORY_MB"


def memory_budget(requested_bytes: int | None = None) -> int:
    """Bytes of exposed activations one backend run may return: the request, $DEPLOYVAL_DEBUG_MEMORY_MB,
    or 512 MiB capped at a quarter of the memory available now."""
    if requested_bytes:
        return int(requested_bytes)
    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            return int(float(env) * (1 << 20))
        except ValueError:
            raise UsageError(f"${MEMORY_ENV} must be a number of MiB, not '{env}'") from None
    available = _available_memory()
    return min(DEFAULT_BUDGET_BYTES, available // 4) if available else DEFAULT_BUDGET_BYTES


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ----------------------------------------------------------------------------- what a row uses

SAMPLE_INTERVAL_S = 0.01


def rss_bytes() -> int | None:
    """This process's resident memory now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """The peak resident memory of this process while the block runs, sampled every 10 ms by a
    thread, and on CUDA torch's own peak of allocated device memory. `to_dict()` is what a row
    records: the peak, what the row added to the memory before it (`added_bytes`), and the device
    peak when there is one."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.before: int | None = None
        self.peak: int | None = None
        self.cuda_peak: int | None = None
        self._stop: Any = None
        self._thread: Any = None

    def __enter__(self) -> PeakMemory:
        import threading

        self.before = self.peak = rss_bytes()
        if self.before is None:
            return self
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(SAMPLE_INTERVAL_S):
                now = rss_bytes()
                if now is not None and (self.peak is None or now > self.peak):
                    self.peak = now

        self._thread = threading.Thread(target=sample, name="deployval-peak-memory", daemon=True)
        self._thread.start()
        self._cuda("reset")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            now = rss_bytes()
            if now is not None and self.peak is not None:
                self.peak = max(self.peak, now)
        self._cuda("read")

    def _cuda(self, what: str) -> None:
        import sys

        torch = sys.modules.get("torch")  # only when the row used torch: importing it here would cost seconds
        if self.device != "cuda" or torch is None:
            return
        try:
            if what == "reset":
                torch.cuda.reset_peak_memory_stats()
            else:
                self.cuda_peak = int(torch.cuda.max_memory_allocated())
        except Exception:  # no usable CUDA: nothing to report
            self.cuda_peak = None

    def to_dict(self) -> dict[str, int]:
        info: dict[str, int] = {}
        if self.peak is not None and self.before is not None:
            info["peak_rss_bytes"] = self.peak
            info["added_rss_bytes"] = max(self.peak - self.before, 0)
        if self.cuda_peak is not None:
            info["cuda_peak_allocated_bytes"] = self.cuda_peak
        return info

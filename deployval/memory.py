"""How much activation data one backend run may hand back (debug's streamed layers, the tensor-level
fp16 ranges): low in the layers because both the debugger and the pipeline size their chunks by it."""

from __future__ import annotations

import os

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

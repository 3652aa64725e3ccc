"""What a run reports while it works: each step's record (status, reason, how to redo it) and the
progress display interface. Here, low in the layers, because the store, the pipeline, the debugger,
the precision tools and the console all speak it; the console implementation is report/console.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Step:
    """One pipeline step, Triton-Model-Navigator style: a status, its reason, and how to redo it."""

    name: str
    status: str = "ok"  # ok | fail | skipped
    reason: str = ""
    seconds: float = 0.0
    cached: bool = False
    artifact: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    reproduce: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "status": self.status, "reason": self.reason, "seconds": round(self.seconds, 3),
            "cached": self.cached, "artifact": self.artifact, "details": self.details, "reproduce": self.reproduce,
        }


class Progress:
    """Progress display interface; the console implementation shows a spinner per step."""

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        yield

    @contextmanager
    def part(self, index: int, total: int) -> Iterator[None]:
        """The steps inside belong to part `index` of `total` (a run's rows): a display numbers them."""
        yield

    def note(self, message: str) -> None:
        pass

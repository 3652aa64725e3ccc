"""Cache cases of the reliability corpus: stale entries that must be rebuilt (STALE, verdict cases) and
damaged entries that must be moved aside and rebuilt (DAMAGED)."""

from __future__ import annotations

from corpus import Case

STALE: list[Case] = []
DAMAGED: list[Case] = []

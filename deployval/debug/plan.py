"""The plan of a PyTorch-model debug run: one row per compared layer output (and per final output),
the search state, and the chunks of consecutive layers whose exposed tensors fit the memory budget
(one backend run each; see run.py, step 4)."""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from .policy import NEIGHBOURS
from .report import PASS, LayerResult, Localization, Triage


@dataclass
class Row:
    result: LayerResult
    key: str | None  # call key; None for final outputs
    output_index: int = 0
    call_index: int = 1 << 60
    nbytes: int = 0


@dataclass
class Chunk:
    lo: int  # call indices covered (inclusive)
    hi: int
    tensors: list[str]
    last: bool = False


@dataclass
class SearchState:
    first: Row | None = None
    chain: list[str] = field(default_factory=list)  # call keys to search for the new error, in order
    neighbours_left: int = NEIGHBOURS
    localized: Localization | None = None
    triage: Triage | None = None
    own_done: set[str] = field(default_factory=set)
    search_done: bool = False


def selected(name: str, patterns: Sequence[str] | None) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def plan_chunks(all_rows: Sequence[Row], budget: int) -> list[Chunk]:
    """Consecutive compared layers, cut where their tensors' bytes would pass `budget` (never inside
    one call); the chunks cover every call index, the last one the final outputs too."""
    rows = sorted((r for r in all_rows if r.result.status == PASS and r.key is not None),
                  key=lambda r: r.call_index)
    chunks: list[Chunk] = []
    current: list[Row] = []
    size = 0
    seen: set[str] = set()
    for row in rows:
        tensor = row.result.tensor or ""
        extra = 0 if tensor in seen else row.nbytes
        if current and size + extra > budget and current[-1].call_index != row.call_index:
            chunks.append(Chunk(current[0].call_index, current[-1].call_index,
                                list(dict.fromkeys(r.result.tensor or "" for r in current))))
            current, size, seen = [], 0, set()
            extra = row.nbytes
        current.append(row)
        size += extra
        seen.add(tensor)
    if current:
        chunks.append(Chunk(current[0].call_index, current[-1].call_index,
                            list(dict.fromkeys(r.result.tensor or "" for r in current))))
    if not chunks:
        chunks.append(Chunk(0, -1, []))
    chunks[0].lo = 0
    for before, after in itertools.pairwise(chunks):
        after.lo = before.hi + 1
    chunks[-1].hi = 1 << 60
    chunks[-1].last = True
    return chunks

"""Minimal proposals: the exclusion search keeps the shortest passing prefix of the sensitivity ranking,
which assumes errors add up. They need not (a decoder that feeds its argmax back, a layer whose error a
later saturation hides), so a prefix can hold exclusions the others make redundant. Backward elimination
drops each exclusion whose removal still passes (least sensitive first, judged on the same inputs or
data set), then says what each one left buys: the error with it, and without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol


class _Trial(Protocol):
    passed: bool
    score: float
    failures: list[str]


@dataclass
class Exclusion:
    """One exclusion of the minimal proposal and what it buys."""

    layer: str
    score_with: float  # worst rel L2 with the whole minimal proposal
    score_without: float  # worst rel L2 with every other exclusion of it, but not this one
    failure_without: str  # what fails without it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def minimize(proposal: Sequence[str], evaluate: Callable[[list[str]], _Trial], passing: _Trial,
             baseline: _Trial) -> tuple[list[str], list[str], list[Exclusion], list[_Trial]]:
    """(minimal proposal, the exclusions dropped, what each kept one buys, the trials run here).
    `proposal` is most sensitive first and passes (`passing` is its trial); `baseline` is the trial with
    nothing excluded; `evaluate(kept)` judges the model with `kept` at full precision."""
    known: dict[tuple[str, ...], _Trial] = {tuple(proposal): passing, (): baseline}
    ran: list[_Trial] = []

    def judged(kept: Sequence[str]) -> _Trial:
        key = tuple(kept)
        if key not in known:
            known[key] = evaluate(list(kept))
            ran.append(known[key])
        return known[key]

    kept, dropped = list(proposal), []
    for layer in reversed(proposal):  # the least sensitive first: the likeliest to be redundant
        without = [k for k in kept if k != layer]
        if without and judged(without).passed:
            kept, dropped = without, [*dropped, layer]
    final = judged(kept)
    effects = []
    for layer in kept:
        without = judged([k for k in kept if k != layer])
        effects.append(Exclusion(layer, final.score, without.score, without.failures[0] if without.failures else ""))
    return kept, dropped, effects, ran

"""Non-finite cases of the reliability corpus: NaN and Inf in outputs, references and golden files. None
of them may end in PASS."""

from __future__ import annotations

from corpus import Case

CASES: list[Case] = []

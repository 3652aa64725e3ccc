"""Incomplete-work cases of the reliability corpus: partial reports, missing shards, merges and diffs of
work that did not finish. None of them may end in PASS."""

from __future__ import annotations

from corpus import Case

CASES: list[Case] = []

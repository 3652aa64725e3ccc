"""More bad inputs of the reliability corpus: each must exit 2 with one line, never 'internal error'."""

from __future__ import annotations

from corpus import Case

CASES: list[Case] = []

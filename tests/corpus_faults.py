"""Fault cases of the reliability corpus: interrupted and killed runs, crashes in the reference, output
paths that collide. Every requested report must survive, marked incomplete."""

from __future__ import annotations

from corpus import Case

CASES: list[Case] = []

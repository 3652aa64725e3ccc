"""Batch invariance: a batch of copies of one input must give each copy the same outputs.

A dynamic-shape engine that computes item 3 of a batch differently from item 0 (other kernels, other
tiling for the larger shape) is wrong in production while every single-input check passes. Each row
and the reference run the first input repeated along the batch dimension; every copy's outputs are
compared with the first copy's: beyond the row's tolerance the row fails, otherwise any difference
is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..backends.base import Runner
from ..judge.metrics import compare_output, difference_if_any
from ..model import inputs as inputs_mod
from ..model.spec import Tolerance
from .execution import infer_once


def batched(feeds: Mapping[str, np.ndarray], copies: int) -> dict[str, np.ndarray]:
    """`copies` copies of every input along its first dimension."""
    return {name: np.concatenate([value] * copies, axis=0) for name, value in feeds.items()}


def copies_differ(outputs: Mapping[str, np.ndarray], copies: int, batch: int,
                  tolerances: Mapping[str, Tolerance] | None = None) -> tuple[dict[str, float], list[str]]:
    """Per output (batch-major ones: first dimension copies x batch), the largest |difference| of any
    copy from the first; with `tolerances`, the failures of copies beyond them."""
    differences: dict[str, float] = {}
    failures: list[str] = []
    for name, value in outputs.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] != copies * batch:
            continue
        items = value.reshape(copies, batch, *value.shape[1:])
        worst = 0.0
        for index in range(1, copies):
            diff = difference_if_any(items[0], items[index])
            if diff is None:
                continue
            worst = max(worst, diff)
            if tolerances is not None and name in tolerances:
                judged = compare_output(name, items[0], items[index], tolerances[name])
                if not judged.passed and len(failures) < 3:
                    failures.append(f"copy {index + 1} of {copies}, output '{name}': {judged.failures[0]}")
        differences[name] = worst
    return differences, failures


def check_runner(runner: Runner, feeds: Mapping[str, np.ndarray], copies: int,
                 tolerances: Mapping[str, Tolerance] | None = None) -> dict[str, Any]:
    """Run `copies` copies of `feeds` as one batch on an active runner; what differs between copies."""
    batch = int(next(iter(feeds.values())).shape[0]) if feeds else 1
    prepared = inputs_mod.adapt_for_backend(batched(feeds, copies), runner.input_dtypes(), runner.name)
    outputs = runner.to_host(infer_once(runner, prepared))
    differences, failures = copies_differ(outputs, copies, batch, tolerances)
    return {"copies": copies, "identical": not any(differences.values()), "max_abs_difference": differences,
            "failures": failures}

"""Non-finite cases of the reliability corpus: NaN and Inf in outputs, references and golden files. None
of them may end in PASS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from corpus import Case, Outcome

SMALL = ["--input-shape", "x=1x3x8x8", "--iterations", "1"]


def _convs_golden(tmp: Path, change) -> list[str]:
    """convs' saved inputs and reference outputs, the outputs changed by `change`; the args that judge
    torch fp32 against them."""
    from deployval.cli import main

    assert main(["compare", "convs", "-b", "torch", "--iterations", "1", "--save-inputs", str(tmp / "in.npz"),
                 "--save-outputs", str(tmp / "gold.npz"), "-q"]) == 0
    with np.load(tmp / "gold.npz") as saved:
        arrays = {name: saved[name] for name in saved.files}
    change(arrays["y"])
    np.savez(tmp / "expected.npz", **arrays)
    return ["compare", "convs", "-b", "torch", "--inputs", str(tmp / "in.npz"), "--expected",
            str(tmp / "expected.npz"), "--iterations", "1", "--json", str(tmp / "r.json")]


def _one_nan(y: np.ndarray) -> None:
    y.flat[0] = np.nan


def _only_nan(y: np.ndarray) -> None:
    y[...] = np.nan


def _no_report(tmp: Path, outcome: Outcome) -> None:
    assert not (tmp / "r.json").exists(), "a refused run wrote a report"


def _row_failed_on(fragment: str):
    def check(tmp: Path, outcome: Outcome) -> None:
        rows = json.loads((tmp / "r.json").read_text())["results"]
        reasons = [r["reason"] for r in rows if r["status"] == "fail"]
        assert any(fragment in reason for reason in reasons), reasons
    return check


def _input_over_10(tmp: Path) -> Path:
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    x[0, 0, 4, 4] = 20.0
    np.save(tmp / "in.npy", x)
    return tmp / "in.npy"


CASES: list[Case] = [
    Case("nan-model", "a model whose outputs are NaN everywhere (once: every row PASS with max_abs 0 and cosine 1)",
         lambda t: ["compare", "dv_test_models:all_nan", "-b", "torch,torchscript", *SMALL], 2,
         "has 128 non-finite values of 128 (NaN 128, +Inf 0, -Inf 0)"),
    Case("nan-model-allowed", "the same model with --allow-nonfinite: nothing finite is left to judge",
         lambda t: ["compare", "dv_test_models:all_nan", "-b", "torch,torchscript", *SMALL, "--allow-nonfinite"], 2,
         "non-finite everywhere"),
    Case("nan-golden", "--expected holding one NaN (once: the NaN element was left out and the rest passed)",
         lambda t: _convs_golden(t, _one_nan), 2, "(NaN 1, +Inf 0, -Inf 0)", check=_no_report),
    Case("nan-golden-allowed", "the same file with --allow-nonfinite: the row has a finite value where it holds NaN",
         lambda t: [*_convs_golden(t, _one_nan), "--allow-nonfinite"], 1, "FAIL", error_line=False,
         check=_row_failed_on("1 of 1 positions where the reference is non-finite differ")),
    Case("nan-only-golden", "--expected holding only NaN, with --allow-nonfinite (once: PASS on zero compared "
         "elements)", lambda t: [*_convs_golden(t, _only_nan), "--allow-nonfinite"], 2, "non-finite everywhere",
         check=_no_report),
    Case("nan-where-reference-finite", "the exported graph computes NaN where torch's output is finite",
         lambda t: ["compare", "dv_test_models:nan_over_10_in_export", "-b", "torch,ort", "--inputs",
                    str(_input_over_10(t)), "--iterations", "1", "--json", str(t / "r.json")], 1, "FAIL",
         error_line=False, check=_row_failed_on("where the reference is finite")),
    Case("inf-became-finite", "with --allow-nonfinite, the exported graph is finite where torch's output is +Inf",
         lambda t: ["compare", "dv_test_models:inf_finite_in_export", "-b", "torch,ort", *SMALL,
                    "--allow-nonfinite", "--json", str(t / "r.json")], 1, "FAIL", error_line=False,
         check=_row_failed_on("16 of 48 positions where the reference is non-finite differ")),
]

"""What scripts/gpu_check.py and its gpu_check_*.py modules share: the repository root, the step
statuses, the step and result records, and the constants both the plan and the steps read. Standard
library only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A step's `r` is gpu_check.Runner, named here as Runner = Any: gpu_check imports this module, and an
# import back, even for annotations, would tie the modules in a circle.
Runner = Any

ROOT = Path(__file__).resolve().parent.parent

PASS, FAIL, NOT_RUN, PLANNED = "PASS", "FAIL", "NOT RUN", "PLANNED"

SHAPE_GRID = "image=1x3x32x32,2x3x48x64,1x3x16x16"
CUDA_BACKENDS = ("torch", "torchscript", "ort", "trt", "ort-trt")
OPTIONAL_CUDA = {"ort": "ORT CUDA provider (onnxruntime-gpu)", "trt": "TensorRT", "ort-trt": "ORT TensorRT provider"}


class NotRun(Exception):
    """A step that cannot run here; its message is the reason."""


@dataclass
class Result:
    name: str
    status: str
    device: str
    seconds: float
    detail: str
    budget: bool = False  # NOT RUN for lack of time: counts as a failure
    what: str = ""


@dataclass
class Step:
    name: str
    what: str
    device: str  # "cuda": a GPU step; "cpu"; "host": setup
    limit: int
    run: Callable[[Runner, Step, float], tuple[str, str]]
    smoke: bool = False  # a GPU step that --allow-cpu runs on the CPU as a smoke test
    min_s: int = 15
    args: tuple[Any, ...] = ()


def first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")

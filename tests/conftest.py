"""Shared fixtures: an isolated artifact cache, the test models on sys.path, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))  # dv_test_models


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["DEPLOYVAL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run the CLI in-process (fast); returns exit code, stdout and stderr."""
    from deployval.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_deployval(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    """Run the installed CLI in a fresh process, as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "deployval", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: CliResult, code: int, contains: str) -> None:
    """The bad-input contract: the exit code, one line on stderr, no traceback."""
    lines = [ln for ln in result.err.splitlines() if ln.startswith("deployval: error:")]
    assert result.code == code, (result.code, result.err[-2000:])
    assert len(lines) == 1, result.err
    assert contains in lines[0], lines[0]
    assert "Traceback" not in result.err and "Traceback" not in result.out


def unnamed_and_repeated_nodes() -> Any:
    """An ONNX model whose main graph has unnamed nodes, a name used twice and an If (whose branches
    Model Explorer's adapter inlines, their unnamed nodes sharing its naming counter): the cases
    node_ids() must name as the adapter does."""
    from onnx import TensorProto
    from onnx import helper as h

    x = h.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    cond = h.make_tensor_value_info("c", TensorProto.BOOL, [])
    body = h.make_graph([h.make_node("Neg", ["x"], ["n0"]), h.make_node("Abs", ["n0"], ["n1"])], "then", [],
                        [h.make_tensor_value_info("n1", TensorProto.FLOAT, [2])])
    other = h.make_graph([h.make_node("Relu", ["x"], ["r0"])], "else", [],
                         [h.make_tensor_value_info("r0", TensorProto.FLOAT, [2])])
    graph = h.make_graph([
        h.make_node("Relu", ["x"], ["a"]),
        h.make_node("If", ["c"], ["b"], name="branch", then_branch=body, else_branch=other),
        h.make_node("Abs", ["b"], ["d"], name="same"),
        h.make_node("Neg", ["d"], ["e"], name="same"),
        h.make_node("Sigmoid", ["e"], ["y"]),
    ], "main", [x, cond], [h.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])

"""The bad-input corpus and the injected faults: one place that both the tests (test_corpus.py) and
the generator of docs/reliability.md (scripts/reliability_table.py) read, so the table is the tests.

Each case builds its files in a scratch directory and returns the command-line arguments; the
expectation is the exit code and a fragment of the one error line.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Outcome:
    """What one case's command did: its exit code and what it printed."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.startswith("deployval: error:")]

    @property
    def verdict_line(self) -> str:
        """The last console line that states a verdict (PASS/FAIL/ERROR/INCOMPLETE ... exit code N)."""
        lines = [ln for ln in self.out.splitlines() if "exit code" in ln
                 and ln.split(" ", 1)[0] in ("PASS", "FAIL", "ERROR", "INCOMPLETE", "REGRESSION")]
        return lines[-1] if lines else ""


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the bad input or fault, for the table
    build: Callable[[Path], list[str]]
    code: int
    fragment: str  # must appear in the error line (or, for a verdict case, in the verdict line)
    fault: bool = False  # an injected fault rather than a bad input
    error_line: bool = True  # exactly one error line on stderr; False: a verdict case, judged by its verdict line
    run: Callable[[Path, list[str]], Outcome] | None = None  # how to run it when main() in-process cannot
    check: Callable[[Path, Outcome], None] | None = None  # what else must hold afterwards (reports, files)


def _onnx_model(tmp: Path, name: str, node_op: str = "Relu", domain: str = "", external: bool = False) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4,), np.float32), "w")
    nodes = [helper.make_node("Add", ["x", "w"], ["h"]), helper.make_node(node_op, ["h"], ["y"], domain=domain)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    path = tmp / name
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{name}.data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def _exported_convs(tmp: Path) -> bytes:
    from deployval.cli import main

    main(["export", "convs", "--out", str(tmp / "convs"), "--kinds", "onnx-raw", "-q"])
    return (tmp / "convs" / "exported.onnx").read_bytes()


def _file(tmp: Path, name: str, content: bytes) -> Path:
    (tmp / name).write_bytes(content)
    return tmp / name


def _npz(tmp: Path, name: str, **arrays: np.ndarray) -> Path:
    np.savez(tmp / name, **arrays)
    return tmp / name


def _missing_external_data(tmp: Path) -> list[str]:
    path = _onnx_model(tmp, "ext.onnx", external=True)
    (tmp / "ext.onnx.data").unlink()
    return ["compare", str(path), "--backends", "ort"]


def _checkpoint_with_wrong_keys(tmp: Path) -> list[str]:
    import torch

    from deployval.catalog.zoo.convs import build

    state = build().state_dict()
    state.pop("convs2.1.bias")
    state["head.weight"] = torch.zeros(1)
    state["convs1.0.weight"] = torch.zeros(4, 3, 3, 3)
    torch.save({"state_dict": state}, tmp / "ckpt.pt")
    return ["compare", "convs", "--checkpoint", str(tmp / "ckpt.pt")]


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /tmp/deployval-corpus-pwned",))


def _pickle_with_code(tmp: Path) -> list[str]:
    import torch

    torch.save({"state_dict": {}, "extra": _Payload()}, tmp / "evil.pt")
    return ["compare", "convs", "--checkpoint", str(tmp / "evil.pt")]


X = (1, 3, 32, 32)

CASES: list[Case] = [
    Case("missing-model-file", "a model path that does not exist",
         lambda t: ["compare", str(t / "nope.onnx")], 2, "file not found: "),
    Case("empty-onnx", "an empty .onnx file", lambda t: ["compare", str(_file(t, "e.onnx", b"")), "-b", "ort"],
         2, "is empty"),
    Case("random-bytes-onnx", "4 KiB of random bytes named .onnx",
         lambda t: ["compare", str(_file(t, "r.onnx", np.random.default_rng(0).bytes(4096))), "-b", "ort"],
         2, "not an ONNX model"),
    Case("truncated-onnx", "an exported ONNX cut in half",
         lambda t: ["compare", str(_file(t, "t.onnx", _exported_convs(t)[:20000])), "-b", "ort"],
         2, "t.onnx"),
    Case("missing-external-data", "an ONNX whose external-data file is gone", _missing_external_data,
         2, "external data file"),
    Case("unregistered-custom-op", "an ONNX with an op from a domain no runtime knows",
         lambda t: ["compare", str(_onnx_model(t, "custom.onnx", "MyOp", "com.example")), "-b", "ort", "-p",
                    "fp32,fp16"],
         2, "MyOp"),
    Case("inputs-missing-array", ".npz without the model's input",
         lambda t: ["compare", "convs", "--inputs", str(_npz(t, "i.npz", other=np.zeros(X, np.float32)))],
         2, "missing x"),
    Case("inputs-extra-array", ".npz with an array the model does not take",
         lambda t: ["compare", "convs", "--inputs",
                    str(_npz(t, "i.npz", x=np.zeros(X, np.float32), y=np.zeros(X, np.float32)))],
         2, "unexpected y"),
    Case("inputs-misnamed", ".npz with the input under another name",
         lambda t: ["compare", "convs", "--inputs", str(_npz(t, "i.npz", image=np.zeros(X, np.float32)))],
         2, "missing x; unexpected image"),
    Case("inputs-wrong-dtype", "float values for integer token ids",
         lambda t: ["compare", "tagger", "--inputs", str(_npz(t, "i.npz", tokens=np.zeros((1, 32), np.float32)))],
         2, "expects integers"),
    Case("inputs-wrong-rank", "a 3-D array for a 4-D input",
         lambda t: ["compare", "convs", "--inputs", str(_npz(t, "i.npz", x=np.zeros((3, 32, 32), np.float32)))],
         2, "rank 3"),
    Case("inputs-empty-tensor", "a tensor with a zero-sized dimension",
         lambda t: ["compare", "convs", "--inputs", str(_npz(t, "i.npz", x=np.zeros((1, 3, 0, 32), np.float32)))],
         2, "is empty"),
    Case("inputs-nonfinite", "NaN in the inputs (refused unless --allow-nonfinite-inputs)",
         lambda t: ["compare", "convs", "--inputs", str(_npz(t, "i.npz", x=np.full(X, np.nan, np.float32)))],
         2, "NaN/Inf"),
    Case("inputs-not-divisible", "fine_organs volume 40x80x80 (pooling needs multiples of 16)",
         lambda t: ["compare", "fine_organs", "--inputs",
                    str(_npz(t, "i.npz", input=np.zeros((1, 1, 40, 80, 80), np.float32)))],
         2, "not a multiple of 16"),
    Case("shape-not-divisible", "--input-shape 1x1x48x80x100 for fine_organs",
         lambda t: ["compare", "fine_organs", "--input-shape", "input=1x1x48x80x100"], 2, "not a multiple of 16"),
    Case("shape-does-not-fit", "4 channels for a 3-channel network",
         lambda t: ["compare", "convs", "--input-shape", "x=1x4x32x32"], 2, "the reference run failed"),
    Case("unknown-backend", "--backends torch,tflite", lambda t: ["compare", "convs", "-b", "torch,tflite"],
         2, "unknown backend 'tflite'"),
    Case("unknown-precision", "--precisions fp8", lambda t: ["compare", "convs", "-p", "fp8"],
         2, "unknown precision 'fp8'"),
    Case("unknown-option", "a misspelt option", lambda t: ["compare", "convs", "--bakends", "ort"], 2, "--bakends"),
    Case("unwritable-report", "--json into a directory that does not exist",
         lambda t: ["compare", "convs", "--json", str(t / "no" / "r.json")], 2, "does not exist"),
    Case("checkpoint-wrong-keys", "a checkpoint with missing, unexpected and misshapen keys",
         _checkpoint_with_wrong_keys, 2, "1 missing (convs2.1.bias); 1 unexpected (head.weight); 1 shape mismatch"),
    Case("checkpoint-pickle-code", "a checkpoint whose pickle runs os.system (refused, never executed)",
         _pickle_with_code, 2, "--trust-checkpoint"),
    Case("factory-raises", "a pkg.module:factory that raises",
         lambda t: ["compare", "dv_test_models:raises", "--input-shape", "x=1x3x8x8"], 2, "weights server unreachable"),
    Case("factory-not-a-module", "a factory that returns a dict",
         lambda t: ["compare", "dv_test_models:not_a_module", "--input-shape", "x=1x3x8x8"], 2,
         "not a torch.nn.Module"),
    Case("factory-missing", "a factory that does not exist",
         lambda t: ["compare", "dv_test_models:nothing_here", "--input-shape", "x=1x3x8x8"], 2, "no attribute"),
    Case("torch-save-as-model", "a torch.save checkpoint given as the model",
         lambda t: ["compare", str(_torch_save(t)), "--input-shape", "x=1x3"], 2, "not a TorchScript file"),
]


def _torch_save(tmp: Path) -> Path:
    import torch

    torch.save({"w": torch.zeros(1)}, tmp / "weights.pt")
    return tmp / "weights.pt"


# Faults injected into a run that is otherwise fine (see test_corpus.py for how each is injected).
FAULTS: list[Case] = [
    Case("backend-aborts", "a backend that calls abort() mid-inference (as a segfaulting runtime would)",
         lambda t: ["compare", "convs", "-b", "torch,aborting,ort", "--json", str(t / "r.json")], 3, "SIGABRT",
         fault=True),
    Case("backend-hangs", "a backend that never returns, with --timeout 5",
         lambda t: ["compare", "convs", "-b", "torch,hanging,ort", "--timeout", "5", "--json", str(t / "r.json")],
         3, "timed out after 5 s", fault=True),
    Case("disk-full-report", "the disk fills up while the JSON report is written (simulated ENOSPC)",
         lambda t: ["compare", "convs", "-b", "torch,ort", "--json", str(t / "r.json")], 3,
         "No space left on device", fault=True),
    Case("disk-full-cache", "the disk fills up while an ONNX artifact is written to the cache (simulated ENOSPC)",
         lambda t: ["compare", "convs", "-b", "torch,torchscript,ort", "--no-cache", "--json", str(t / "r.json")],
         3, "No space left on device", fault=True),
]


@contextmanager
def injected(case_id: str) -> Iterator[None]:
    """Set up the fault a FAULTS case needs (a registered faulty backend, a simulated full disk)."""
    from unittest import mock

    from faulty_backends import AbortingRunner, HangingRunner

    from deployval import _util
    from deployval.backends.base import _registered, register_backend

    if case_id in ("backend-aborts", "backend-hangs"):
        runner = AbortingRunner if case_id == "backend-aborts" else HangingRunner
        register_backend(runner)
        try:
            yield
        finally:
            _registered.pop(runner.name, None)
    elif case_id == "disk-full-report":
        real = _util.atomic_write_bytes

        def full_disk(path: Path, data: bytes) -> None:
            if Path(path).name == "r.json":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            real(path, data)

        with mock.patch.object(_util, "atomic_write_bytes", full_disk):
            yield
    elif case_id == "disk-full-cache":
        import onnx

        def full_disk(*args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with mock.patch.object(onnx, "save", full_disk):
            yield
    else:
        yield

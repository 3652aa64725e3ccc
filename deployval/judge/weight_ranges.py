"""Weights against fp16's range: parameters, buffers and ONNX initializers that fp16 cannot hold.

A weight beyond 65504 becomes inf in `module.half()` and is clamped to 65504 in the fp16 ONNX; a
BatchNorm's `running_var` of a trained audio CNN reaches 5e5, and the fp16 rows fail with nothing
but a count to show for it. Each such tensor is named here (module path, or the ONNX nodes that read
it in fp16), with the `--keep-fp32` value that keeps it in fp32, before anyone runs a sensitivity
search. Tiny weights are named too when more than FLUSH_SHARE of a tensor's non-zero values are below
fp16's smallest subnormal. Pure functions over numpy arrays; torch modules are read by duck typing.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .ranges import FLUSH_REPORT_SHARE, LIMITS

FP16_MAX = LIMITS["fp16"]["max"]  # 65504
FP16_TINY = LIMITS["fp16"]["min_subnormal"]  # 2**-24 ~ 5.96e-08
FP16_INF_FROM = 65520.0  # round to nearest: from here on a value becomes inf, below it rounds to 65504
# A tensor is named for its tiny values when more than this share of its non-zero values are below
# fp16's smallest subnormal (the activation check's threshold): a few stray tiny values cost nothing.
FLUSH_SHARE = FLUSH_REPORT_SHARE
TORCH, ONNX = "torch", "onnx"  # who lowers the tensor: module.half(), or deployval's fp16 ONNX pass


@dataclass(frozen=True)
class WeightFinding:
    """One weight tensor fp16 cannot hold, where it lives, and how to keep it in fp32."""

    tensor: str  # parameter/buffer name within its module, or the ONNX initializer / Constant output
    kind: str  # "overflow" (finite |w| > 65504) or "flush" (0 < |w| < 2**-24)
    max_abs: float  # largest finite |w| of the tensor
    count: int  # values beyond fp16's range, or below its smallest subnormal
    nonzero: int
    elements: int
    source: str = TORCH  # TORCH or ONNX
    module: str = ""  # the module holding it (PyTorch), or the module of the nodes reading it
    nodes: tuple[str, ...] = ()  # ONNX: the nodes that read it in fp16 (through reshapes and the like)
    ops: tuple[str, ...] = ()  # their op types
    keep_fp32: tuple[str, ...] = ()  # --keep-fp32 values that keep it fp32; empty when none can

    def place(self) -> str:
        if self.source == TORCH:
            return f"module '{self.module}' {self.tensor}" if self.module else f"the root module's {self.tensor}"
        readers = ""
        if self.nodes:
            readers = f" read by node '{self.nodes[0]}' ({self.ops[0]})" + (
                f" and {len(self.nodes) - 1} more nodes" if len(self.nodes) > 1 else "")
        return f"initializer '{self.tensor}'{readers}" + (f" in module '{self.module}'" if self.module else "")

    def describe(self) -> str:
        if self.kind == "overflow":
            what = (f"{self.count} of {self.elements} values beyond fp16's largest 65504 "
                    f"(max |w| {self.max_abs:.4g})")
            if self.source == ONNX:
                effect = "the fp16 ONNX clamps them to ±65504"
            else:
                effect = "half() makes them inf" if self.max_abs >= FP16_INF_FROM else "half() rounds them to 65504"
        else:
            share = self.count / max(self.nonzero, 1)
            what = (f"{self.count} of its {self.nonzero} non-zero values ({share:.0%}) below fp16's smallest "
                    f"subnormal {FP16_TINY:.3g}")
            effect = (f"the fp16 ONNX raises them to ±{FP16_TINY:.3g}" if self.source == ONNX else
                      "half() flushes them to zero or rounds them up to it")
        fix = (f"; --keep-fp32 {' --keep-fp32 '.join(self.keep_fp32)} keeps it fp32" if self.keep_fp32
               else "; no --keep-fp32 value keeps it fp32")
        return f"{self.place()}: {what}; {effect}{fix}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "finding": self.describe()}


def tensor_findings(values: Any, tensor: str, **where: Any) -> list[WeightFinding]:
    """The findings of one float array (none, overflow, flush or both); `where`: the WeightFinding
    fields that place it (source, module, nodes, ops, keep_fp32)."""
    a = np.abs(np.asarray(values))
    if a.size == 0 or not np.issubdtype(a.dtype, np.floating):
        return []
    finite = np.isfinite(a)
    peak = float(np.max(a, where=finite, initial=0.0))
    nonzero = int(np.count_nonzero(a))
    over = int(np.count_nonzero(finite & (a > FP16_MAX))) if peak > FP16_MAX else 0
    tiny = int(np.count_nonzero((a > 0) & (a < FP16_TINY)))
    found = []
    if over:
        found.append(WeightFinding(tensor, "overflow", peak, over, nonzero, int(a.size), **where))
    if tiny > FLUSH_SHARE * nonzero:
        found.append(WeightFinding(tensor, "flush", peak, tiny, nonzero, int(a.size), **where))
    return found


def ordered(found: Iterable[WeightFinding]) -> list[WeightFinding]:
    """Overflows first, the largest first; then flushes, the largest share first."""
    return sorted(found, key=lambda f: (f.kind != "overflow",
                                        -f.max_abs if f.kind == "overflow" else -f.count / max(f.nonzero, 1)))


def module_findings(module: Any, kept: Sequence[str] = ()) -> list[WeightFinding]:
    """Every float parameter and buffer of a torch module that `module.half()` cannot hold, named by
    module path; the modules in `kept` (exact names, as --keep-fp32 resolves them) and everything
    inside them stay fp32 and are exempt. A tied weight is named under every module holding it."""
    found: list[WeightFinding] = []
    for name, sub in module.named_modules():
        if any(name == k or name.startswith(k + ".") for k in kept):
            continue
        for tensor_name, t in [*sub.named_parameters(recurse=False), *sub.named_buffers(recurse=False)]:
            if t is None or not t.is_floating_point():
                continue
            values = t.detach().cpu()
            try:
                array = values.numpy()
            except TypeError:  # bfloat16: numpy has no such type
                array = values.float().numpy()
            keep = (glob.escape(name),) if name else ()  # the root module cannot be kept
            found += tensor_findings(array, tensor_name, source=TORCH, module=name, keep_fp32=keep)
    return ordered(found)


def name_onnx_findings(found: Iterable[WeightFinding], modules: Mapping[str, str]) -> list[WeightFinding]:
    """fp16 ONNX findings with their module and --keep-fp32 values: per reading node, its innermost
    module (`modules`: node name -> module, from the export's scopes; kept as a module pattern) or,
    for a node no module is known for, its op type (`op:TYPE`, which keeps every node of that type)."""
    named = []
    for f in found:
        keep = [glob.escape(modules[n]) if n in modules else f"op:{op}" for n, op in zip(f.nodes, f.ops)]
        owners = {modules.get(n, "") for n in f.nodes}
        named.append(replace(f, module=owners.pop() if len(owners) == 1 else "",
                             keep_fp32=tuple(dict.fromkeys(keep))))
    return ordered(named)

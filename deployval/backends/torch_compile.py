"""torch.compile (TorchInductor): the model as PyTorch users ship it now that TorchScript is in
maintenance, compiled from the reference's own module at fp32, fp16 (`module.half()`) or bf16.

Inductor compiles at the first call, for the shapes it sees (`dynamic=False`: the run's shapes are
fixed), so that call's time is the compile time, reported apart (`compile_s`); the timed runs that follow
run the compiled code. A graph break falls back to eager for that part, which torch.compile does
silently: the row records how many graphs it compiled and how many breaks it took (torch._dynamo's
counters), so a "compiled" row that mostly ran eager says so. On the CPU inductor needs a C++ compiler.
API checked against torch 2.13: torch.compile(model, backend="inductor", dynamic=False, fullgraph=False),
torch._dynamo.reset(), torch._dynamo.utils.counters["stats"]["unique_graphs"], counters["graph_break"].
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import BackendError, first_line
from ..export.artifacts import MODULE
from ..model.spec import HALF_DTYPES
from . import torch_common


class TorchCompileRunner(torch_common.TorchModuleRunner):
    name: ClassVar[str] = "compile"
    description: ClassVar[str] = "torch.compile (inductor) of the module; compile time apart from latency"
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": MODULE, "fp16": MODULE, "bf16": MODULE}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        return torch_common.inductor_available(device, "torch.compile's inductor")

    def load_module(self) -> Any:
        import torch

        module = self.artifact.obj
        if self.precision in ("fp16", "bf16"):
            module = copy.deepcopy(module).to(getattr(torch, HALF_DTYPES[self.precision]))
        else:
            module = copy.deepcopy(module)  # compiling wraps it: the reference's module stays as it is
        module = module.to(self.device).eval()
        from torch._dynamo.utils import counters

        torch._dynamo.reset()  # another row's compiled graphs and counters are not this row's
        counters.clear()
        self._compiled_once = False
        return torch.compile(module, backend="inductor", dynamic=False)

    def infer_impl(self, feeds: list[Any]) -> dict[str, Any]:
        if self._compiled_once:
            return super().infer_impl(feeds)
        from torch._dynamo.utils import counters

        start = time.perf_counter()
        try:
            outputs = super().infer_impl(feeds)
            self.synchronize()
        except Exception as exc:  # inductor's own reason (a missing compiler, an unsupported op) is the row's
            raise BackendError(f"torch.compile failed: {first_line(exc)}") from None
        self.details["compile_s"] = round(time.perf_counter() - start, 3)
        self.details["graphs"] = int(counters["stats"]["unique_graphs"])
        breaks = dict(counters["graph_break"])
        self.details["graph_breaks"] = sum(breaks.values())
        if breaks:
            reasons = "; ".join(f"{reason} ({count}x)" for reason, count in list(breaks.items())[:3])
            self.warnings.append(f"torch.compile broke the graph {sum(breaks.values())} time(s), running those "
                                 f"parts in eager: {reasons}")
        self._compiled_once = True
        return outputs

"""A torch.export.save archive as the reference module. Imported only for such a model (it needs torch)."""

from __future__ import annotations

from typing import Any

import torch


class ExportedModule(torch.nn.Module):
    """`ExportedProgram.module()` refuses eval() and train() (its mode was fixed when it was exported):
    this holder takes them for it, so the program runs wherever a module does."""

    def __init__(self, program: torch.nn.Module) -> None:
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self

    def forward(self, *args: Any) -> Any:
        return self.program(*args)

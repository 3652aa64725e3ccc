"""The driver's module in another process (an isolated row, a Ray actor), bit for bit.

A factory run again elsewhere need not build the same module: it may draw from an RNG the seed does not
reach, read a file that changed, or depend on the environment. So the driver ships what its module holds
(every parameter and buffer) with the module's digest; the other process builds the module from the
factory, loads those tensors into it and checks the digest. Anything that still differs (the structure, a
hyperparameter, a tensor's shape) is a `ReplicaMismatch`: one line naming the cause, never a verdict
judged against another model than the reference ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import DeployvalError, ExitCode
from ..model.spec import ModelSpec


class ReplicaMismatch(DeployvalError):
    """The module built in another process is not the driver's: nothing it computes may be judged."""

    exit_code = ExitCode.BACKEND


@dataclass(frozen=True)
class ModuleReplica:
    """What another process needs to rebuild the driver's module: its tensors by name (CPU copies; None
    for a TorchScript file, whose bytes are its identity) and its digest (deployval/model/digest.py)."""

    digest: str
    tensors: dict[str, Any] | None = None

    @property
    def nbytes(self) -> int:
        return sum(int(t.numel() * t.element_size()) for t in (self.tensors or {}).values())


def module_tensors(module: Any) -> dict[str, Any]:
    """Every parameter and buffer by every name it has (tied weights under each), as torch sees them."""
    tensors = dict(module.named_parameters(remove_duplicate=False))
    tensors.update(module.named_buffers(remove_duplicate=False))
    return tensors


def capture(spec: ModelSpec, module: Any, digest: str) -> ModuleReplica:
    """The driver's module as a replica: detached CPU copies of its tensors, and its digest."""
    if spec.kind == "torchscript":
        return ModuleReplica(digest)
    return ModuleReplica(digest, {name: t.detach().cpu().clone() for name, t in module_tensors(module).items()})


def rebuild(spec: ModelSpec, replica: ModuleReplica, *, trust_checkpoint: bool = False, seed: int = 0,
            where: str = "in its own process") -> Any:
    """The driver's module, built here: the factory's module with the driver's tensors loaded and its
    digest checked; a `ReplicaMismatch` names what differs and `where` it was built."""
    from ..model.loading import build_module, module_digest

    module = build_module(spec, trust_checkpoint=trust_checkpoint, seed=seed)
    if replica.tensors is not None:
        load_tensors(module, replica.tensors, where)
    digest = module_digest(spec, module)
    if digest != replica.digest:
        what = "the file changed since the run began" if spec.kind == "torchscript" else (
            "its structure or a non-tensor attribute differs (the factory builds another model in another process)")
        raise ReplicaMismatch(f"the model built {where} is not the one the reference ran: {what}; module digest "
                              f"{digest[:12]} there, {replica.digest[:12]} in the driver")
    return module


def load_tensors(module: Any, tensors: dict[str, Any], where: str = "in its own process") -> None:
    """Copy the driver's tensors into `module` in place; a name, shape or dtype that does not match is a
    `ReplicaMismatch` (the factory built another architecture here)."""
    import torch

    own = module_tensors(module)
    missing = sorted(set(tensors) - set(own))
    extra = sorted(set(own) - set(tensors))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} the driver's has (first: '{missing[0]}')")
        if extra:
            parts.append(f"has {len(extra)} the driver's lacks (first: '{extra[0]}')")
        raise ReplicaMismatch(f"the model built {where} is not the one the reference ran: it "
                              f"{' and '.join(parts)} among its parameters and buffers")
    with torch.no_grad():
        for name, source in tensors.items():
            target = own[name]
            if tuple(target.shape) != tuple(source.shape) or target.dtype != source.dtype:
                raise ReplicaMismatch(
                    f"the model built {where} is not the one the reference ran: '{name}' is "
                    f"{_describe(target)} there and {_describe(source)} in the driver")
            target.copy_(source.to(target.device))


def _describe(tensor: Any) -> str:
    return f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}"

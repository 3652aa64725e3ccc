"""Run in a subprocess against one version of the real TensorRT bindings (trt_bindings.py sets up the
import): every name deployval's TensorRT backend touches, resolved on the real module, and the calls
that work without a GPU made for real. Prints one JSON object: what is missing and what each check found.

    python trt_api_probe.py SOURCE.py [SOURCE.py ...]
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterable
from pathlib import Path

# The variables of the backend's code and the TensorRT class each one holds: a method or property
# used on one of them must exist on that class.
VARIABLE_CLASSES = {
    "builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser", "config": "IBuilderConfig",
    "profile": "IOptimizationProfile", "runtime": "Runtime", "engine": "ICudaEngine", "context": "IExecutionContext",
    "logger": "Logger", "t": "ITensor",
}
# Names the code reaches only under one `if`, where the build plan or the version says so: absent from a
# version, they pass only when used under that test and the test cannot hold on that version.
GUARDED = {
    "BuilderFlag.FP16": ("plan.fp16_flag", "fp16_flag"),  # the flag route, which plan_build refuses on 11
    "BuilderFlag.BF16": ("plan.bf16_flag", "bf16_flag"),  # bf16, which plan_build refuses on 11
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED": (
        "plan.strongly_typed and trt_major(trt.__version__) == 10", "major 10"),
}


def _chain(node: ast.AST) -> list[str] | None:
    """`trt.A.B` -> ['A', 'B']; `self.context.X` -> ['context', 'X']; else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _set_parents(trees: Iterable[ast.AST]) -> None:
    for tree in trees:
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                child.parent = node  # type: ignore[attr-defined]


def _resolve(trt: object, dotted: str) -> bool:
    obj = trt
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _guard_can_hold(guard: str, version: str) -> bool:
    from deployval.backends.tensorrt_plan import FP16_ROUTES, plan_build
    from deployval.errors import BackendUnavailable, UsageError

    if guard == "major 10":
        return version.split(".")[0] == "10"
    for precision in ("fp32", "fp16", "bf16", "int8"):
        for route in FP16_ROUTES:
            try:
                if getattr(plan_build(precision, version, fp16_route=route), guard):
                    return True
            except (UsageError, BackendUnavailable):
                continue
    return False


def main(sources: list[Path]) -> dict[str, object]:
    import tensorrt_bindings as trt

    sys.modules["tensorrt"] = trt
    version = trt.__version__
    trees = [ast.parse(Path(s).read_text()) for s in sources]
    _set_parents(trees)
    chains: dict[str, set[str]] = {}
    members: set[tuple[str, str]] = set()
    for tree in trees:
        found_chains, found_members = _used_in(tree)
        for chain, tests in found_chains.items():
            chains.setdefault(chain, set()).update(tests)
        members |= found_members
    result: dict[str, object] = {"version": version, "chains": sorted(chains),
                                 "members": sorted(f"{c}.{m}" for c, m in members)}

    def allowed_absent(chain: str) -> bool:  # every use under its guard, which cannot hold here
        return chain in GUARDED and "" not in chains[chain] and not _guard_can_hold(GUARDED[chain][1], version)

    missing = [c for c in sorted(chains) if not _resolve(trt, c) and not allowed_absent(c)]
    missing += [f"{c}.{m}" for c, m in sorted(members) if not _resolve(trt, f"{c}.{m}")]
    result["missing"] = missing
    result["guarded_absent"] = sorted(c for c in GUARDED if c in chains and not _resolve(trt, c))
    result["device_memory"] = [n for n in ("device_memory_size_v2", "device_memory_size")
                               if hasattr(trt.ICudaEngine, n)]
    result["strongly_typed_bit"] = (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
                                    if _resolve(trt, "NetworkDefinitionCreationFlag.STRONGLY_TYPED") else None)
    result["severities"] = {n: int(getattr(trt.Logger, n)) for n in ("INTERNAL_ERROR", "ERROR", "WARNING")}
    result.update(_calls(trt))
    return result


def _guards(node: ast.AST) -> set[str]:
    """The tests of the `if` statements whose body holds `node`."""
    tests: set[str] = set()
    child, parent = node, getattr(node, "parent", None)
    while parent is not None:
        if isinstance(parent, ast.If) and child in parent.body:
            tests.add(ast.unparse(parent.test))
        child, parent = parent, getattr(parent, "parent", None)
    return tests


def _used_in(tree: ast.AST) -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """`trt.X.Y` chains (each with the `if` tests around every use) and (class, attribute) uses on
    TensorRT objects; attributes read through getattr/hasattr by name are optional by construction."""
    chains: dict[str, set[str]] = {}
    members: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or isinstance(getattr(node, "parent", None), ast.Attribute):
            continue
        parts = _chain(node)
        if not parts:
            continue
        if parts[0] == "self" and len(parts) >= 3:
            parts = parts[1:]
        if parts[0] == "trt" and len(parts) >= 2:
            guarded = GUARDED.get(".".join(parts[1:3]), ("", ""))[0]
            # a use outside its guard counts as unguarded: one such use is enough
            chains.setdefault(".".join(parts[1:3]), set()).add(guarded if guarded in _guards(node) else "")
        elif parts[0] in VARIABLE_CLASSES and len(parts) == 2:
            members.add((VARIABLE_CLASSES[parts[0]], parts[1]))
    return chains, members


def _calls(trt: object) -> dict[str, object]:
    """The backend's calls that need no GPU, made on the real bindings."""
    from deployval.backends import tensorrt as backend
    from deployval.backends.tensorrt_plan import plan_build
    from deployval.errors import BackendError

    found: dict[str, object] = {}

    def logs_then_fails(logger: object) -> None:
        logger.log(trt.Logger.ERROR, "conformance probe: logged by the real trt.Logger")  # type: ignore[attr-defined]
        raise RuntimeError("the factory failed")

    for name, factory in (("logged", logs_then_fails), ("builder", trt.Builder), ("runtime", trt.Runtime)):
        try:
            backend.create(trt, factory, name)
            found[name] = "created"
        except BackendError as exc:
            found[name] = f"BackendError: {exc.one_line()}"
        except Exception as exc:  # anything else is what the row would have said instead
            found[name] = f"{type(exc).__name__}: {exc}"
    try:
        backend.build_engine(trt, Path("unused.onnx"), plan_build("fp32", trt.__version__), {}, 1 << 20)
        found["build_engine"] = "built"
    except BackendError as exc:
        found["build_engine"] = f"BackendError: {exc.one_line()}"
    except Exception as exc:
        found["build_engine"] = f"{type(exc).__name__}: {exc}"
    return found


if __name__ == "__main__":
    print(json.dumps(main([Path(a) for a in sys.argv[1:]])))

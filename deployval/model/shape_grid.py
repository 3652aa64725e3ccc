"""A grid of input shapes (`--shape-grid NAME=S1,S2,...`): one export with dynamic axes on the
dimensions that vary, every row judged at every shape.

Engines that are right at one shape and wrong at another are a recurring failure of dynamic-shape
deployments; a single-shape verdict cannot see it. The grid alone defines the shapes: the first is
the run's (exports, timing), the others are judged on seeded random inputs of their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UsageError
from . import inputs as inputs_mod
from .arguments import parse_shape
from .dataset import Sample
from .spec import ModelSpec, format_shape


@dataclass(frozen=True)
class ShapeGrid:
    """Per input, its shapes in grid order (every input has as many; zipped by position)."""

    shapes: dict[str, tuple[tuple[int, ...], ...]]

    @classmethod
    def parse(cls, entries: Sequence[str], spec: ModelSpec) -> ShapeGrid:
        shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
        for entry in entries:
            name, sep, rest = entry.partition("=")
            if not sep:
                name, rest = "", entry
            name = name.strip()
            if not name:
                if len(spec.inputs) != 1:
                    raise UsageError(f"--shape-grid '{entry}': '{spec.name}' has {len(spec.inputs)} inputs; name "
                                     f"them: --shape-grid NAME=S1,S2 ({', '.join(spec.input_names)})")
                name = spec.inputs[0].name
            spec.input(name)
            if name in shapes:
                raise UsageError(f"--shape-grid: input '{name}' is given twice; list all its shapes in one "
                                 f"--shape-grid {name}=S1,S2,...")
            grid = tuple(parse_shape(part) for part in rest.split(",") if part.strip())
            if len(grid) < 1:
                raise UsageError(f"--shape-grid '{entry}': give at least one shape, e.g. {name}=1x3x32x32,2x3x64x64")
            if len({len(s) for s in grid}) != 1:
                raise UsageError(f"--shape-grid '{entry}': every shape of input '{name}' needs the same rank")
            shapes[name] = grid
        lengths = {len(g) for g in shapes.values()}
        if len(lengths) != 1:
            raise UsageError("--shape-grid: every input needs as many shapes (they are zipped by position): "
                             + ", ".join(f"{n} has {len(g)}" for n, g in shapes.items()))
        missing = [i.name for i in spec.inputs if i.name not in shapes]
        if missing:
            raise UsageError(f"--shape-grid defines the shapes: give every input ({', '.join(missing)} missing)")
        return cls(shapes)

    def __len__(self) -> int:
        return len(next(iter(self.shapes.values())))

    def point(self, index: int) -> dict[str, tuple[int, ...]]:
        return {name: grid[index] for name, grid in self.shapes.items()}

    def label(self, index: int) -> str:
        return ", ".join(f"{name}={format_shape(grid[index])}" for name, grid in self.shapes.items())

    def dynamic_axes(self, batch: bool = False) -> dict[str, dict[int, str]]:
        """Per input, the dimensions that vary over the grid (and the batch dimension when `batch`)."""
        axes: dict[str, dict[int, str]] = {}
        for name, grid in self.shapes.items():
            varying = {d for d in range(len(grid[0])) if len({s[d] for s in grid}) > 1}
            if batch and grid[0]:
                varying.add(0)
            if varying:
                axes[name] = {d: f"{name}_dim{d}" for d in sorted(varying)}
        return axes

    def apply(self, spec: ModelSpec, batch: int = 0) -> ModelSpec:
        """The spec at the grid's first shape, exported with dynamic axes where the grid varies, each
        input's min/max shape spanning the grid (TensorRT's optimization profile); `batch`: a batch of
        that many copies of the first input must fit too."""
        spec = spec.with_input_shapes(self.point(0))
        for index in range(1, len(self)):
            spec.with_input_shapes(self.point(index))  # refuse shapes the network cannot take, before any work
        axes = {**(spec.export.dynamic_axes or {}), **self.dynamic_axes(bool(batch))}
        inputs = []
        for item in spec.inputs:
            grid = list(self.shapes[item.name])
            if batch and grid[0]:
                grid.append((grid[0][0] * batch, *grid[0][1:]))
            low, high = tuple(map(min, zip(*grid))), tuple(map(max, zip(*grid)))
            inputs.append(replace(item, min_shape=low, max_shape=high) if low != high else item)
        return replace(spec, inputs=tuple(inputs), export=replace(spec.export, dynamic_axes=axes or None))

    def samples(self, spec: ModelSpec, seed: int) -> Iterator[Sample]:
        """Seeded random inputs at every shape after the first (the run's own)."""
        for index in range(1, len(self)):
            at = spec.with_input_shapes(self.point(index))
            yield Sample(self.label(index), Path(self.label(index)), inputs_mod.make_inputs(at.inputs, seed))

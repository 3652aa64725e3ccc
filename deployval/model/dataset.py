"""A directory of samples: one array file (.npy/.npz/.pt, as --inputs) or image (through a declared
preprocessing) per sample, read one at a time.

`--dataset` judges every row over such a set and `--calibration` calibrates int8 on one; both read
files the same way. A sample that cannot be read, or does not fit the model's inputs, is a fault
named by its file, not the end of the run: the caller counts it and goes on with the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeployvalError, UsageError, first_line
from . import inputs as inputs_mod
from .preprocess import ImagePreprocess
from .spec import ModelSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SAMPLE_SUFFIXES = inputs_mod.INPUT_SUFFIXES + IMAGE_SUFFIXES


def sample_files(directory: Path, option: str, limit: int | None = None) -> list[Path]:
    """The sample files of `directory`, sorted by name, the first `limit`; a usage error (naming the
    `option` it came from) when there is no such directory or nothing in it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"{option} '{directory}' is not a directory")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, not {limit}")
    # Every entry named like a sample but a directory: a dangling link or a pipe is a sample that cannot
    # be used (load_sample says why), counted with the others, not silently passed over.
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES and not p.is_dir())[:limit]
    if not files:
        raise UsageError(f"{option} '{directory}' holds no .npy, .npz, .pt or image files")
    return files


def load_sample(path: Path, spec: ModelSpec, preprocess: ImagePreprocess | None = None, *,
                exact_shapes: bool = True, allow_nonfinite: bool = False) -> dict[str, np.ndarray]:
    """One sample as the model's feeds, checked against its input specs like --inputs."""
    if not path.is_file():
        raise UsageError(unusable_file(path))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        only = image_input(spec)
        loaded = {only.name: (preprocess or ImagePreprocess()).apply(path, only.shape)}
    else:
        loaded = inputs_mod.load_inputs(path, spec.inputs)
    return inputs_mod.check_inputs(loaded, spec.inputs, exact_shapes=exact_shapes, allow_nonfinite=allow_nonfinite,
                                   source=str(path))


def unusable_file(path: Path) -> str:
    """Why a directory entry named like a sample is not one (it is no regular file)."""
    if path.is_symlink() and not path.exists():
        return f"a symbolic link to '{os.readlink(path)}', which does not exist"
    return "not a regular file (a pipe, socket or device)"


def image_input(spec: ModelSpec) -> Any:
    """The one image-like input (N=1, C=1 or 3, H, W, float) images can stand for."""
    if len(spec.inputs) != 1:
        raise UsageError(f"images need a model with one input; {spec.name} has {len(spec.inputs)} "
                         "(use .npz files holding every input)")
    only = spec.inputs[0]
    if len(only.shape) != 4 or only.shape[0] != 1 or only.shape[1] not in (1, 3) or not only.dtype.startswith("float"):
        raise UsageError(f"images need a float input of shape 1x1xHxW or 1x3xHxW; input '{only.name}' "
                         f"is {'x'.join(map(str, only.shape))} {only.dtype} (use .npy files)")
    return only


@dataclass
class Sample:
    name: str  # the file's name: how the report, the worst list and --save-failing refer to it
    path: Path
    feeds: dict[str, np.ndarray] | None = None
    fault: str = ""  # why it cannot be judged (unreadable, another shape or dtype)


@dataclass
class Dataset:
    """The samples of a directory (`--dataset DIR [--limit N] [--preprocess SPEC]`)."""

    directory: Path
    limit: int | None = None
    preprocess: str | None = None
    allow_nonfinite: bool = False

    def files(self) -> list[Path]:
        return sample_files(self.directory, "--dataset", self.limit)

    def first(self, spec: ModelSpec) -> tuple[Path, list[Sample], Path | dict[str, np.ndarray]]:
        """The first sample that can be read (it defines the run's shapes, as --inputs would), the faults
        of the files before it, and what the run begins with (`run_inputs`). No usable sample at all is a
        usage error."""
        faults = []
        for path in self.files():
            sample = self._read(path, spec, exact_shapes=False)
            if not sample.fault:
                return path, faults, self.run_inputs(path, spec)
            faults.append(sample)
        reasons = "; ".join(f"{s.name}: {s.fault}" for s in faults[:3])
        raise UsageError(f"--dataset '{self.directory}': no sample can be used ({reasons})")

    def run_inputs(self, path: Path, spec: ModelSpec) -> Path | dict[str, np.ndarray]:
        """What the run begins with: the first sample's file (an array file defines the run as --inputs
        does), or an image's feeds after the preprocessing."""
        if path.suffix.lower() in inputs_mod.INPUT_SUFFIXES:
            return path
        preprocess = ImagePreprocess.parse(self.preprocess, "--preprocess") if self.preprocess else None
        return load_sample(path, spec, preprocess, exact_shapes=False, allow_nonfinite=self.allow_nonfinite)

    def samples(self, spec: ModelSpec, after: Path | None = None) -> Iterator[Sample]:
        """Every sample after `after` (the one the run began with), read when it is reached; each must
        have exactly the run's input shapes and dtypes."""
        files = self.files()
        start = files.index(after) + 1 if after in files else 0
        for path in files[start:]:
            yield self._read(path, spec, exact_shapes=True)

    def _read(self, path: Path, spec: ModelSpec, exact_shapes: bool) -> Sample:
        preprocess = ImagePreprocess.parse(self.preprocess, "--preprocess") if self.preprocess else None
        try:
            feeds = load_sample(path, spec, preprocess, exact_shapes=exact_shapes,
                                allow_nonfinite=self.allow_nonfinite)
        except DeployvalError as exc:
            return Sample(path.name, path, fault=exc.one_line())
        except Exception as exc:  # a damaged file is a fault of that sample
            return Sample(path.name, path, fault=first_line(exc))
        return Sample(path.name, path, feeds)

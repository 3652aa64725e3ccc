"""int8 calibration data from a directory: arrays (.npy/.npz/.pt, one sample per file) or images
turned into the model's input by a declared preprocessing (resize, scale, mean/std, channel order).

Calibration decides every activation scale of an int8 model; it has to look like production data,
which is why images go through the same preprocessing the deployed pipeline applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import inputs as inputs_mod
from .errors import UsageError
from .preprocess import ImagePreprocess
from .spec import ModelSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def load_calibration(directory: Path, spec: ModelSpec, limit: int | None = None,
                     preprocess: ImagePreprocess | None = None) -> list[dict[str, np.ndarray]]:
    """Every array file or image in `directory` (sorted by name, the first `limit`) is one sample,
    checked against the input spec like --inputs."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"--calibration '{directory}' is not a directory")
    suffixes = inputs_mod.INPUT_SUFFIXES + IMAGE_SUFFIXES
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in suffixes)[:limit]
    if not files:
        raise UsageError(f"--calibration '{directory}' holds no .npy, .npz, .pt or image files")
    samples = []
    for path in files:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            loaded = {_image_input(spec).name: (preprocess or ImagePreprocess()).apply(path, _image_input(spec).shape)}
        else:
            loaded = inputs_mod.load_inputs(path, spec.inputs)
        samples.append(inputs_mod.check_inputs(loaded, spec.inputs, source=str(path)))
    return samples


def _image_input(spec: ModelSpec) -> Any:
    """The one image-like input (N=1, C=1 or 3, H, W, float) images can stand for."""
    if len(spec.inputs) != 1:
        raise UsageError(f"calibration images need a model with one input; {spec.name} has {len(spec.inputs)} "
                         "(use .npz files holding every input)")
    only = spec.inputs[0]
    if len(only.shape) != 4 or only.shape[0] != 1 or only.shape[1] not in (1, 3) or not only.dtype.startswith("float"):
        raise UsageError(f"calibration images need a float input of shape 1x1xHxW or 1x3xHxW; input '{only.name}' "
                         f"is {'x'.join(map(str, only.shape))} {only.dtype} (use .npy files)")
    return only

"""int8 calibration data from a directory: arrays (.npy/.npz/.pt, one sample per file) or images
turned into the model's input by a declared preprocessing (resize, scale, mean/std, channel order).

Calibration decides every activation scale of an int8 model; it has to look like production data,
which is why images go through the same preprocessing the deployed pipeline applies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import IMAGE_SUFFIXES, load_sample, sample_files
from .preprocess import ImagePreprocess
from .spec import ModelSpec

__all__ = ["IMAGE_SUFFIXES", "load_calibration"]


def load_calibration(directory: Path, spec: ModelSpec, limit: int | None = None,
                     preprocess: ImagePreprocess | None = None) -> list[dict[str, np.ndarray]]:
    """Every array file or image in `directory` (sorted by name, the first `limit`) is one sample,
    checked against the input spec like --inputs."""
    return [load_sample(path, spec, preprocess) for path in sample_files(directory, "--calibration", limit)]

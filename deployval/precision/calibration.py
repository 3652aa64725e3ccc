"""int8 calibration data from a directory: arrays (.npy/.npz/.pt, one sample per file) or images
turned into the model's input by a declared preprocessing (resize, scale, mean/std, channel order).

Calibration decides every activation scale of an int8 model; it has to look like production data,
which is why images go through the same preprocessing the deployed pipeline applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import inputs as inputs_mod
from ..errors import UsageError
from ..spec import ModelSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _floats(key: str, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--calibration-preprocess {key}={text}: expected a number or numbers joined by '/'") from None
    if not values:
        raise UsageError(f"--calibration-preprocess {key}: no value")
    return values


@dataclass(frozen=True)
class ImagePreprocess:
    """How an image becomes a model input: resize to H×W (bilinear; default the input's own size),
    x * scale, then (x - mean) / std per channel, in RGB or BGR order, NCHW."""

    resize: tuple[int, int] | None = None
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    order: str = "rgb"

    @classmethod
    def parse(cls, text: str) -> ImagePreprocess:
        """'resize=224x224,scale=0.0039,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,order=bgr'."""
        settings: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not value:
                raise UsageError(f"--calibration-preprocess '{part}': expected KEY=VALUE "
                                 "(keys: resize, scale, mean, std, order)")
            if key == "resize":
                try:
                    height, width = (int(v) for v in value.lower().split("x"))
                except ValueError:
                    raise UsageError(f"--calibration-preprocess resize={value}: expected HxW, e.g. 224x224") from None
                if height <= 0 or width <= 0:
                    raise UsageError(f"--calibration-preprocess resize={value}: sizes must be positive")
                settings["resize"] = (height, width)
            elif key == "scale":
                settings["scale"] = _floats(key, value)[0]
            elif key in ("mean", "std"):
                settings[key] = _floats(key, value)
            elif key == "order":
                if value.lower() not in ("rgb", "bgr"):
                    raise UsageError(f"--calibration-preprocess order={value}: rgb or bgr")
                settings["order"] = value.lower()
            else:
                raise UsageError(f"--calibration-preprocess: unknown key '{key}' (resize, scale, mean, std, order)")
        if any(s == 0 for s in settings.get("std", (1.0,))):
            raise UsageError("--calibration-preprocess std: must not be 0")
        return cls(**settings)

    def apply(self, path: Path, shape: tuple[int, ...]) -> np.ndarray:
        """The image at `path` as a float32 array of `shape` (N=1, C in 1 or 3, H, W)."""
        from PIL import Image, UnidentifiedImageError

        channels, height, width = shape[1], shape[2], shape[3]
        size = self.resize or (height, width)
        if size != (height, width):
            raise UsageError(f"--calibration-preprocess resize={size[0]}x{size[1]} does not give the model's "
                             f"input size {height}x{width}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise UsageError(f"--calibration-preprocess {name}: {len(values)} values for {channels} channels")
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32)
        except (OSError, UnidentifiedImageError) as exc:
            raise UsageError(f"calibration image '{path}' cannot be read: {exc}") from None
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        if self.order == "bgr":
            pixels = pixels[:, :, ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        normalized = (pixels * np.float32(self.scale) - mean) / std
        return np.ascontiguousarray(normalized.transpose(2, 0, 1)[None], dtype=np.float32)


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

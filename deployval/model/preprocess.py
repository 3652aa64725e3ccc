"""How images become model inputs (--calibration-preprocess, --preprocess: resize, scale, mean/std,
channel order). Plain data parsed without numpy, so that spec.py validates the string when a run is
configured, before any work; numpy and Pillow are imported only to apply it to an image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    import numpy as np


def _floats(key: str, text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"{option} {key}={text}: expected a number or numbers joined by '/'") from None
    if not values:
        raise UsageError(f"{option} {key}: no value")
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
    option: str = field(default="--calibration-preprocess", compare=False, repr=False)  # for error messages

    @classmethod
    def parse(cls, text: str, option: str = "--calibration-preprocess") -> ImagePreprocess:
        """'resize=224x224,scale=0.0039,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,order=bgr'."""
        settings: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not value:
                raise UsageError(f"{option} '{part}': expected KEY=VALUE "
                                 "(keys: resize, scale, mean, std, order)")
            if key == "resize":
                try:
                    height, width = (int(v) for v in value.lower().split("x"))
                except ValueError:
                    raise UsageError(f"{option} resize={value}: expected HxW, e.g. 224x224") from None
                if height <= 0 or width <= 0:
                    raise UsageError(f"{option} resize={value}: sizes must be positive")
                settings["resize"] = (height, width)
            elif key == "scale":
                settings["scale"] = _floats(key, value, option)[0]
            elif key in ("mean", "std"):
                settings[key] = _floats(key, value, option)
            elif key == "order":
                if value.lower() not in ("rgb", "bgr"):
                    raise UsageError(f"{option} order={value}: rgb or bgr")
                settings["order"] = value.lower()
            else:
                raise UsageError(f"{option}: unknown key '{key}' (resize, scale, mean, std, order)")
        if any(s == 0 for s in settings.get("std", (1.0,))):
            raise UsageError(f"{option} std: must not be 0")
        return cls(**settings, option=option)

    def apply(self, path: Path, shape: tuple[int, ...]) -> np.ndarray:
        """The image at `path` as a float32 array of `shape` (N=1, C in 1 or 3, H, W)."""
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        channels, height, width = shape[1], shape[2], shape[3]
        size = self.resize or (height, width)
        if size != (height, width):
            raise UsageError(f"{self.option} resize={size[0]}x{size[1]} does not give the model's "
                             f"input size {height}x{width}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise UsageError(f"{self.option} {name}: {len(values)} values for {channels} channels")
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

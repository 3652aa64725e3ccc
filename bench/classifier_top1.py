"""Top-1 of a trained CNN classifier over a labelled image set, per precision and per weight bit width.

The experiment the fake-quantization notes ran on ImageNet (top-1 per bit width of the weights),
here on what can be shipped: the MNIST CNN whose trained weights digit-recognizer-py ships, and
handwriting-like digit images generated with their labels (tests/real_models.py: strokes jittered,
slanted and blurred). Precision rows come from `deployval compare --dataset --labels` (ONNX Runtime
CPU at fp32, fp16 and int8 calibrated on other generated digits); bit-width rows fake-quantize the
weights of every Conv and Linear (symmetric, per tensor or per output channel), activations in fp32.

    python bench/classifier_top1.py [--images 500]

Prints two Markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def top1(model, images: np.ndarray, labels: np.ndarray) -> float:
    import torch

    with torch.inference_mode():
        predicted = model(torch.from_numpy(images)).argmax(-1).numpy()
    return float(np.mean(predicted == labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    options = parser.parse_args()
    from real_models import digit_images, digits

    from deployval.precision.sweep import SCHEMES, fake_quantize_weight, quantizable_layers

    images, labels = digit_images(options.images, seed=11)
    model = digits()
    print(f"MNIST CNN (digit-recognizer-py weights), {options.images} generated digit images")
    print()
    with tempfile.TemporaryDirectory() as tmp:
        data, calib = Path(tmp) / "digits", Path(tmp) / "calibration"
        data.mkdir()
        calib.mkdir()
        for i, image in enumerate(images):
            np.save(data / f"d{i:04d}.npy", image[None])
        (Path(tmp) / "labels.csv").write_text("".join(f"d{i:04d}.npy,{int(y)}\n" for i, y in enumerate(labels)))
        for i, image in enumerate(digit_images(32, seed=12)[0]):
            np.save(calib / f"c{i:02d}.npy", image[None])
        report = Path(tmp) / "r.json"
        proc = subprocess.run(
            [sys.executable, "-m", "deployval", "compare", "real_models:digits", "--dataset", str(data), "--labels",
             str(Path(tmp) / "labels.csv"), "--backends", "torch,ort", "--precisions", "fp32,fp16,int8",
             "--calibration", str(calib), "--iterations", "1", "--no-cache", "--json", str(report), "-q"],
            capture_output=True, text=True, env={"PYTHONPATH": f"{ROOT / 'tests'}", "PATH": "/usr/bin:/bin"}, cwd=ROOT)
        if proc.returncode not in (0, 1):
            raise SystemExit(proc.stderr[-2000:])
        result = json.loads(report.read_text())
    reference = result["analysis"]["dataset"]["labels"]["reference"]
    print("| row | top-1 | top-5 | top-1 drop | verdict |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(f"| torch fp32 (reference) | {reference['top1']:.2%} | {reference['top5']:.2%} | - | - |")
    for row in result["results"][1:]:
        if "dataset" not in row["details"]:
            print(f"| {row['backend']} {row['precision']} | - | - | - | {row['status'].upper()}: {row['reason']} |")
            continue
        scores = row["details"]["dataset"]["labels"]
        print(f"| {row['backend']} {row['precision']} | {scores['scores']['top1']:.2%} | "
              f"{scores['scores']['top5']:.2%} | {scores['drop']['top1']:+.2%} | {row['status'].upper()} |")
    print()
    print("| weight bits | " + " | ".join(f"top-1 {scheme}" for scheme in SCHEMES) + " |")
    print("| ---: | " + " | ".join("---:" for _ in SCHEMES) + " |")
    for bits in range(8, 1, -1):
        cells = []
        for scheme in SCHEMES:
            work = copy.deepcopy(model)
            for _, layer, axis in quantizable_layers(work):
                layer.weight.data = fake_quantize_weight(layer.weight.data, bits, scheme == "per-channel", axis)
            cells.append(f"{top1(work, images, labels):.2%}")
        print(f"| {bits} | " + " | ".join(cells) + " |")
    print(f"| fp32 | {top1(model, images, labels):.2%} | |")


if __name__ == "__main__":
    main()

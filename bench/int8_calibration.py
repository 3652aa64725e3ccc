"""int8 quality of fine_organs with structured vs random calibration data.

Calibrates the Q/DQ int8 model on (a) organ-like synthetic CT volumes and (b) i.i.d. uniform noise
in the input's declared range (what random inputs give), with each calibration method, then runs
held-out organ volumes through ONNX Runtime's CPU provider and compares them with torch eager fp32:
argmax agreement, mean and worst per-class Dice of the label maps, and relative L2 of the logits.

    .venv/bin/python bench/int8_calibration.py [--shape 48x80x80] [--calibration 8] [--eval 4]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="48x80x80", help="D x H x W of the volumes")
    parser.add_argument("--calibration", type=int, default=8, help="calibration volumes per source")
    parser.add_argument("--eval", type=int, default=4, help="held-out evaluation volumes")
    parser.add_argument("--methods", default="minmax,entropy,percentile")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))

    import torch

    from deployval.catalog.registry import resolve_model
    from deployval.export import int8, onnx_io
    from deployval.export.artifacts import ONNX
    from deployval.export.store import ArtifactStore
    from deployval.judge.metrics import error_metrics, task_metrics
    from deployval.model.arguments import InputShapeArg
    from deployval.model.loading import build_module, module_digest
    from deployval.model.spec import RunConfig
    from deployval.precision.synthetic import organ_volumes

    spec = resolve_model("fine_organs", input_shapes=[InputShapeArg("input", (1, 1, *shape))])
    module = build_module(spec)
    low, high = spec.inputs[0].low, spec.inputs[0].high
    evaluation = organ_volumes(args.eval, shape, seed=1000)  # other seeds than the calibration volumes
    rng = np.random.default_rng(0)
    sources = {
        "organ volumes": [{"input": v} for v in organ_volumes(args.calibration, shape, seed=0)],
        "uniform noise": [{"input": rng.uniform(low, high, (1, 1, *shape)).astype(np.float32)}
                          for _ in range(args.calibration)],
    }
    with torch.inference_mode():
        references = [module(torch.from_numpy(v)).numpy() for v in evaluation]

    with tempfile.TemporaryDirectory(prefix="deployval-bench-") as tmp:
        feeds = {"input": evaluation[0]}
        store = ArtifactStore(spec, feeds, RunConfig(use_cache=False), module=lambda: module,
                              output_names=("logits",), model_digest=module_digest(spec, module),
                              inputs_digest="bench")
        try:
            onnx_path = Path(tmp) / "model.onnx"
            onnx_path.write_bytes(Path(store.get(ONNX).path).read_bytes())
        finally:
            store.close()
        rows = []
        for source, samples in sources.items():
            for method in args.methods.split(","):
                start = time.perf_counter()
                out = Path(tmp) / f"{method}.int8.onnx"
                int8.quantize_int8(onnx_path, samples, out, method=method)
                calibrate_s = time.perf_counter() - start
                agreement, dice_mean, dice_min, rel = [], [], [], []
                for volume, reference in zip(evaluation, references):
                    logits = onnx_io.run_onnxruntime(out, {"input": volume})["logits"]
                    task = task_metrics(reference, logits, spec.task)
                    agreement.append(task["argmax_agreement"])
                    dice_mean.append(task["dice_mean"])
                    dice_min.append(task["dice_min"])
                    rel.append(error_metrics(reference, logits)["rel_l2"])
                rows.append((source, method, float(np.mean(agreement)), float(np.min(agreement)),
                             float(np.mean(dice_mean)), float(np.min(dice_min)), float(np.mean(rel)), calibrate_s))
                print(f"  done: {source} / {method} ({calibrate_s:.0f} s)", flush=True)

    import onnxruntime

    print(f"\nfine_organs, input 1x1x{args.shape}, seeded weights; {args.calibration} calibration volumes per source, "
          f"{args.eval} held-out organ volumes; ONNX Runtime {onnxruntime.__version__} CPU, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores\n")
    print("| calibration data | method | argmax agreement (mean / worst) | mean Dice | worst class Dice "
          "| logits rel L2 | calibration s |")
    print("|---|---|---|---|---|---|---|")
    for source, method, agree, agree_min, dice, dice_worst, rel_l2, seconds in rows:
        print(f"| {source} | {method} | {agree:.2%} / {agree_min:.2%} | {dice:.4f} | {dice_worst:.4f} | {rel_l2:.3f} "
              f"| {seconds:.0f} |")


if __name__ == "__main__":
    main()

"""The 2026 backends beside ONNX Runtime: every zoo model through torch eager, ort, openvino, compile
(torch.compile) and export (torch.export -> AOTInductor) at fp32, fp16, bf16 and int8, printing per row the
verdict, rel L2, the median latency and its ratio to ORT fp32's (the same inputs, one process, the
same timing harness), and the one-time cost each needs before its first run (compile, AOTI build).

    python bench/backends.py [--models convs,srcnn] [--iterations 50]

Prints a Markdown table. Ratios, not absolute times, are what carries from this noisy 2-core machine.
"""

from __future__ import annotations

import argparse

import deployval

SHAPES = {"fine_organs": {"input": (1, 1, 48, 80, 80)}, "srcnn": {"image": (1, 3, 128, 128)}}
BACKENDS = ["torch", "ort", "openvino", "compile", "export"]


def _one_time(result: object, steps: list) -> str:
    details = getattr(result, "details", {})
    if "compile_s" in details:
        return f"compile {details['compile_s']:.1f} s"
    artifact = (getattr(result, "artifact", None) or {}).get("kind", "")
    step = next((s for s in steps if s.details.get("compiler") == "AOTInductor"
                 and s.details.get("precision") == getattr(result, "precision", None)), None)
    if artifact.startswith("pt2") and step is not None:
        return f"AOTI build {step.seconds:.1f} s" + (" (cached)" if step.cached else "")
    return "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="convs,srcnn,fine_organs")
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args()
    print("| model | backend | precision | verdict | rel L2 | median ms | / ort fp32 | one-time cost |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | --- |")
    for model in args.models.split(","):
        report = deployval.compare(model, backends=BACKENDS, precisions=["fp32", "fp16", "bf16", "int8"],
                                   input_shapes=SHAPES.get(model, {}), iterations=args.iterations)
        ort = next((r for r in report.results if (r.backend, r.precision) == ("ort", "fp32") and r.latency), None)
        for result in report.results:
            if result.status == "skipped":
                continue
            rel = max((o.metrics.get("rel_l2", 0.0) for o in result.outputs), default=None)
            median = result.latency.median_ms if result.latency else None
            ratio = f"{median / ort.latency.median_ms:.2f}" if median and ort is not None else "-"
            print(f"| {model} | {result.backend} | {result.precision} | {result.status} | "
                  f"{'-' if rel is None else f'{rel:.3g}'} | {'-' if median is None else f'{median:.3g}'} | {ratio} | "
                  f"{_one_time(result, report.steps)} |", flush=True)


if __name__ == "__main__":
    main()

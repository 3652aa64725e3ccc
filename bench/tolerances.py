"""The measurements behind the default tolerances: every zoo model through every CPU backend and
precision, printing the error statistics that the defaults must accept (fp32) or bound (fp16, int8).

    python bench/tolerances.py [--full]     # --full: fine_organs at 96x160x160 (minutes)

Prints a Markdown table. int8 is calibrated on the run's own (random) inputs, so its numbers are an
upper bound of what real calibration data gives.
"""

from __future__ import annotations

import argparse

import deployval

CASES = {
    "convs": {},
    "srcnn": {},
    "tagger": {},
    "fine_organs": {"input": (1, 1, 48, 80, 80)},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="fine_organs at its full 96x160x160 input")
    args = parser.parse_args()
    if args.full:
        CASES["fine_organs"] = {}
    print("| model | backend | precision | output | max abs | mean abs | rel L2 | cosine | task | verdict |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |")
    for model, shapes in CASES.items():
        report = deployval.compare(model, backends=["torch", "torchscript", "ort"],
                                   precisions=["fp32", "fp16", "int8"], input_shapes=shapes, iterations=0)
        for result in report.results:
            for output in result.outputs:
                m = output.metrics
                task = output.task.get("argmax_agreement")
                task_text = f"argmax {task:.4%}" if task is not None else "-"
                if "mismatch" in m:
                    print(f"| {model} | {result.backend} | {result.precision} | {output.name} | - | "
                          f"{m['mismatch']:.4%} differ | - | - | - | {result.status} |")
                    continue
                print(f"| {model} | {result.backend} | {result.precision} | {output.name} | {m['max_abs']:.3g} | "
                      f"{m['mean_abs']:.3g} | {m['rel_l2']:.3g} | {m['cosine']:.7f} | {task_text} | {result.status} |",
                      flush=True)


if __name__ == "__main__":
    main()

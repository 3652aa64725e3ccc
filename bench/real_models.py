"""The trained-model corpus (tests/real_models.py) through torch, TorchScript and ONNX Runtime at fp32,
fp16 and int8: prints the Markdown table of docs/precision.md.

    .venv/bin/python bench/real_models.py [--slow] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import real_models

COLUMNS = (("torchscript", "fp32"), ("ort", "fp32"), ("torch", "fp16"), ("ort", "fp16"), ("ort", "int8"))


def _cell(row: dict | None) -> str:
    """'PASS 1.4e-03' (status and the worst output's relative L2), with the task metric where there is one."""
    if row is None:
        return "-"
    status = row["status"].upper() + ("*" if not row.get("faithful", True) and row["status"] in ("pass", "fail")
                                      else "")
    outputs = [o for o in row["outputs"] if o.get("metrics")]
    if row["status"] in ("reference", "skipped", "error") or not outputs:
        return status
    worst = max(outputs, key=lambda o: o["metrics"].get("rel_l2", 0.0) or 0.0)
    text = f"{status} {worst['metrics']['rel_l2']:.2g}"
    task = worst.get("task") or {}
    for key, label in (("dice_min", "Dice min"), ("argmax_agreement", "argmax")):
        if key in task:
            return f"{text}, {label} {task[key]:.4f}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slow", action="store_true", help="also the full-size entries")
    parser.add_argument("--only", nargs="*", help="entry names")
    args = parser.parse_args()
    entries = [e for e in real_models.CORPUS if (args.slow or not e.slow) and (not args.only or e.name in args.only)]
    header = " | ".join(f"{backend} {precision}" for backend, precision in COLUMNS)
    print(f"| model | {header} | int8 quantized | s |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in entries:
            start = time.perf_counter()
            report = real_models.run_corpus_model(entry, Path(tmp), cache_dir=Path(tmp) / "cache").to_dict()
            seconds = time.perf_counter() - start
            rows = {(r["backend"], r["precision"]): r for r in report["results"]}
            steps = {s["name"]: s for s in report.get("steps", [])}
            int8 = steps.get("int8", {})
            quantized = ", ".join(f"{n} {t}" for t, n in sorted(int8.get("details", {}).get("quantized_per_op_type", {})
                                                                   .items())) or "-"
            cells = " | ".join(_cell(rows.get(column)) for column in COLUMNS)
            print(f"| {entry.name} | {cells} | {quantized} | {seconds:.0f} |", flush=True)
            kept = steps.get("fp16", {}).get("details", {}).get("kept_fp32_reasons", {})
            if kept:
                reasons = ", ".join(sorted(set(kept.values())))
                notes.append(f"{entry.name}: fp16 kept {len(kept)} nodes fp32 ({reasons})")
            for row in report["results"]:
                if row["status"] in ("skipped", "error") and row["backend"] == "ort":
                    notes.append(f"{entry.name} {row['backend']}:{row['precision']}: {row['reason']}")
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()

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


def _cell(row: dict) -> tuple[str, str, str]:
    """(rel L2, cosine, task) of a row's worst output."""
    outputs = [o for o in row["outputs"] if o.get("metrics")]
    if not outputs:
        return "-", "-", "-"
    worst = max(outputs, key=lambda o: o["metrics"].get("rel_l2", 0.0) or 0.0)
    metrics = worst["metrics"]
    task = worst.get("task") or {}
    task_text = ", ".join(f"{k} {v:.4g}" for k, v in task.items() if isinstance(v, (int, float)))
    return f"{metrics.get('rel_l2', float('nan')):.3g}", f"{metrics.get('cosine', float('nan')):.6f}", task_text or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slow", action="store_true", help="also the full-size entries")
    parser.add_argument("--only", nargs="*", help="entry names")
    args = parser.parse_args()
    entries = [e for e in real_models.CORPUS if (args.slow or not e.slow) and (not args.only or e.name in args.only)]
    print("| model | backend | precision | status | rel L2 | cosine | task | kept in fp32 / excluded from int8 | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for entry in entries:
            start = time.perf_counter()
            report = real_models.run_corpus_model(entry, Path(tmp), cache_dir=Path(tmp) / "cache").to_dict()
            seconds = time.perf_counter() - start
            steps = {s["name"]: s for s in report.get("steps", [])}
            for row in report["results"]:
                rel, cos, task = _cell(row)
                kept = "-"
                if row["precision"] == "fp16" and "fp16" in steps:
                    kept = ", ".join(steps["fp16"].get("details", {}).get("kept_fp32", [])[:4]) or "-"
                if row["precision"] == "int8" and "int8" in steps:
                    details = steps["int8"].get("details", {})
                    kept = str(details.get("quantized_op_types", "-"))
                status = row["status"].upper() + ("*" if not row.get("faithful", True) else "")
                if row["status"] in ("error", "skipped"):
                    status += f": {row['reason'][:90]}"
                print(f"| {entry.name} | {row['backend']} | {row['precision']} | {status} | {rel} | {cos} | {task} "
                      f"| {kept} | {seconds:.0f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()

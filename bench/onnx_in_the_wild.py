"""fp16 (and, read-only, int8) rows on ONNX files deployval did not export.

Runs `deployval compare FILE --backends ort --precisions fp32,fp16[,int8]` through the Python API over
every model the onnx package ships under onnx/backend/test/data (pytorch-converted,
pytorch-operator, simple, light; `real` holds only download links and is skipped) plus the Silero
VAD files of the silero-vad package, with the inputs of test_data_set_0 where present, and prints
the status counts per precision and the reason of every row that did not end judged (pass/fail).
"light" models carry ConstantOfShape dummy weights: their architecture is real, their numbers not.

    .venv/bin/python bench/onnx_in_the_wild.py [--precisions fp32,fp16,int8] [--only GLOB] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from onnx_wild import corpus, model_and_inputs


def run_one(label: str, path: Path, data_dir: Path | None, precisions: tuple[str, ...],
            cache: Path) -> dict[str, dict[str, str]]:
    from deployval import api

    path, inputs = model_and_inputs(label, path, data_dir, cache)
    if isinstance(inputs, str):
        return {p: {"status": "not run", "reason": inputs} for p in precisions}
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            shapes = {k: v.shape for k, v in (inputs or {}).items() if v.ndim}  # dynamic dims follow the data
            report = api.compare(str(path), backends=("ort",), precisions=precisions, inputs=inputs,
                                 input_shapes=shapes, iterations=1, warmup=1, cache_dir=cache / label.replace("/", "_"))
    except Exception as exc:  # the model itself cannot be run (bad file, missing shapes): no rows
        line = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        return {p: {"status": "not run", "reason": f"{type(exc).__name__}: {line[:200]}"} for p in precisions}
    rows = {r.precision: {"status": r.status, "reason": r.reason} for r in report.results}
    return {p: rows.get(p, {"status": "no row", "reason": ""}) for p in precisions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    parser.add_argument("--only", default="*", help="fnmatch pattern over labels (suite/name)")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    models = [m for m in corpus() if fnmatch.fnmatch(m[0], args.only)]
    table: dict[str, dict[str, dict[str, str]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dv-wild-") as tmp:
        for label, path, data_dir in models:
            table[label] = run_one(label, path, data_dir, precisions, Path(tmp))
            print(f"{label:60s} " + " ".join(f"{p}={table[label][p]['status']}" for p in precisions), flush=True)
    print(f"\n{len(models)} models in {time.perf_counter() - started:.0f} s")
    for precision in precisions:
        counts = Counter(rows[precision]["status"] for rows in table.values())
        judged = counts.get("pass", 0) + counts.get("fail", 0) + counts.get("reference", 0)
        spread = "  ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"{precision:5s} judged {judged:3d}/{len(table)}  {spread}")
    print("\nrows not judged:")
    for label, rows in table.items():
        if all(row["status"] == "not run" for row in rows.values()):  # the model itself, not a precision
            print(f"  {label} (model) not run: {rows[precisions[0]]['reason'][:240]}")
            continue
        for precision in precisions:
            row = rows[precision]
            if row["status"] not in ("pass", "fail", "reference"):
                print(f"  {label} {precision} {row['status']}: {row['reason'][:240]}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()

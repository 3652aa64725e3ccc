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
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

SUITES = ("pytorch-converted", "pytorch-operator", "simple", "light")


def corpus() -> list[tuple[str, Path, Path | None]]:
    """(label, model file, test_data_set_0 directory or None)."""
    import onnx

    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    found = []
    for suite in SUITES:
        for entry in sorted((root / suite).iterdir()):
            if entry.is_dir() and (entry / "model.onnx").is_file():
                data = entry / "test_data_set_0"
                found.append((f"{suite}/{entry.name}", entry / "model.onnx", data if data.is_dir() else None))
            elif entry.suffix == ".onnx":
                found.append((f"{suite}/{entry.stem}", entry, None))
    with contextlib.suppress(ImportError):
        import silero_vad

        for path in sorted((Path(silero_vad.__file__).parent / "data").glob("*.onnx")):
            found.append((f"silero/{path.stem}", path, None))
    return found


def pb_inputs(model_path: Path, data_dir: Path) -> dict[str, np.ndarray] | str:
    """test_data_set_0/input_*.pb keyed by graph input name, or why they cannot be fed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    feeds: dict[str, np.ndarray] = {}
    files = sorted(data_dir.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    for index, path in enumerate(files):
        tensor = onnx.TensorProto()
        tensor.ParseFromString(path.read_bytes())
        if not tensor.dims and not tensor.raw_data and tensor.data_type == 0:
            return "non-tensor input (sequence or optional)"
        name = tensor.name if tensor.name in names else (names[index] if index < len(names) else "")
        if not name:
            return f"input_{index}.pb matches no graph input"
        feeds[name] = numpy_helper.to_array(tensor)
    return feeds


def silero_inputs(model_path: Path) -> dict[str, np.ndarray]:
    """Speech-like audio, zero recurrent state, 16 kHz."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        dims = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        if value.name == "sr":
            feeds["sr"] = np.array(16000, dtype=np.int64)
        elif value.name == "input":
            length = dims[-1] if len(dims) > 1 and dims[-1] > 1 else 512
            t = np.arange(length) / 16000.0
            audio = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=length)
            feeds["input"] = audio.reshape(1, length).astype(np.float32)
        else:
            feeds[value.name] = np.zeros(dims, dtype=np.float32)
    for value in model.graph.input:  # silero_vad_half.onnx takes fp16
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16:
            feeds[value.name] = feeds[value.name].astype(np.float16)
    return feeds


def run_one(label: str, path: Path, data_dir: Path | None, precisions: tuple[str, ...],
            cache: Path) -> dict[str, dict[str, str]]:
    from deployval import api

    inputs: dict[str, np.ndarray] | str | None = None
    if label.startswith("silero/"):
        inputs = silero_inputs(path)
    elif data_dir is not None:
        inputs = pb_inputs(path, data_dir)
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

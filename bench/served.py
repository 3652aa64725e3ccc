"""The model as served beside the model run in process: a zoo model's simplified ONNX served by a real
Triton server on 127.0.0.1 (the tests' server: PyTriton's tritonserver, its Python backend running ONNX
Runtime, from .venv-triton that `make install` makes), asked over HTTP and gRPC, against ONNX Runtime
run directly on the same inputs. What the ratio shows is what serving adds per request: the protocol,
(de)serialization and the server's scheduling, on loopback.

    python bench/served.py [--model srcnn] [--shape image=1x3x128x128] [--iterations 50]

Prints a Markdown table. Ratios, not absolute times, are what carries from this noisy 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import deployval

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from triton_server import TritonServer, add_model, locate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="srcnn")
    parser.add_argument("--shape", default="image=1x3x128x128", help="NAME=DIMS of the model's input")
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args()
    files, why = locate()
    if files is None:
        raise SystemExit(f"no Triton server here: {why}")
    name, _, dims = args.shape.partition("=")
    shapes = {name: tuple(int(d) for d in dims.split("x"))}
    with tempfile.TemporaryDirectory(prefix="deployval-served-") as work:
        written = deployval.export_artifacts(args.model, Path(work) / "artifacts", kinds=["onnx"],
                                                 input_shapes=shapes)
        add_model(Path(work) / "models", args.model, written["onnx"])
        server = TritonServer(files, Path(work) / "models", Path(work)).start()
        try:
            rows = []  # (route, row, ORT fp32's median in the same run): ratios within one run, not across two
            for url in (server.http_url, server.grpc_url):
                report = deployval.compare(args.model, backends=["torch", "ort", "triton"], precisions=["fp32"],
                                           input_shapes=shapes, iterations=args.iterations,
                                           backend_options={"triton": {"url": url, "model": args.model}})
                ort = next(r for r in report.results if r.backend == "ort")
                served = next(r for r in report.results if r.backend == "triton")
                rows += [("ONNX Runtime in process", ort, ort.latency.median_ms)] if not rows else []
                rows.append((f"Triton over {url.split(':')[0].upper()}", served, ort.latency.median_ms))
        finally:
            server.stop()
    print("| model | route | verdict | rel L2 | median ms | p90 ms | / ort fp32 (same run) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for route, result, ort_median in rows:
        rel = max((o.metrics.get("rel_l2", 0.0) for o in result.outputs), default=0.0)
        median, p90 = result.latency.median_ms, result.latency.p90_ms
        print(f"| {args.model} | {route} | {result.status} | {rel:.2e} | {median:.2f} | {p90:.2f} | "
              f"{median / ort_median:.2f} |")

if __name__ == "__main__":
    main()

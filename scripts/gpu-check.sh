#!/usr/bin/env bash
# The GPU validation of docs/gpu-validation.md as one command, fit for a lent GPU machine that has only
# python3 with torch (CUDA), onnx, onnxruntime (CPU build) and numpy, no network, and returns at most
# 8 files. The runner is scripts/gpu_check.py, the steps scripts/gpu_check_steps.py (standard library only).
#
#   scripts/gpu-check.sh prepare         HERE, with network: download into .whl/ the wheels that machine
#                                        lacks (typer, rich, pydantic, onnxsim, onnxscript, onnx-ir,
#                                        pytest, ... pinned by requirements/constraints.txt, for CPython
#                                        3.12 manylinux x86_64); refuses (exit 2) over 60 MiB; adds /.whl/
#                                        to .git/info/exclude, so the device tool carries it only by name
#   scripts/gpu-check.sh                 THERE: install the carried wheels it lacks into $SITE, run the
#                                        steps on that python3 with the repository on PYTHONPATH
#   scripts/gpu-check.sh --allow-cpu     the same without a GPU: the GPU steps meant as smoke tests
#                                        (cuda-compare-*, cuda-repeat, cuda-shape-grid) run on the CPU,
#                                        the other GPU-only ones are NOT RUN; nothing is a GPU result
#   scripts/gpu-check.sh --plan          the setup steps, then what would run or not, and why
#
# On the device tool: run `OUT="$OUT" bash scripts/gpu-check.sh` with carry [".whl"], timeout_s 420.
#
# Every step ends PASS, FAIL or NOT RUN with its reason: a step whose tool or hardware is missing
# (TensorRT, onnxruntime-gpu's providers, Ray, pytest, a GPU without --allow-cpu) is NOT RUN, never
# PASS. Steps, in order (a failing step does not stop the later ones):
#   wheels, environment, backends          setup: always run
#   cuda-compare-MODEL                     torch + torchscript (+ ort/trt/ort-trt where present) on CUDA
#   cuda-memory-fields                     details.memory.cuda_peak_allocated_bytes on those CUDA rows
#   cuda-repeat                            convs --repeat 2 on CUDA
#   cuda-shape-grid                        srcnn --shape-grid ... --batch-invariance on CUDA
#   ort-cpu-MODEL, ort-cpu-shape-grid      the same models on torch + ORT CPU: the rows beside them
#   debug-onnx                             deployval debug of convs.onnx on trt fp16 (cuda), else ort
#                                          on cuda, else ort on the CPU: only providers present
#   pytest-gpu                             pytest -m "gpu or tensorrt" (all skipped: NOT RUN)
#   cuda-rows-ort, cuda-rows-trt, cuda-rows-ort-trt   the optional CUDA backends' rows
#   ray                                    --ray against the local run (where Ray is installed)
#
# Output: $OUT/gpu-check.tar.gz (everything: results.md, summary.txt, steps.json, environment.json,
# backends.json, reports/*.json, logs/*.log, pytest-gpu.xml), $OUT/results.md, $OUT/summary.txt;
# nothing else. results.md and summary.txt are rewritten after every step.
#
# Environment (all optional):
#   OUT        output folder (default build/gpu-check, emptied first; another OUT only loses our 3 files)
#   PYTHON     the python to run on (default python3)
#   BUDGET     seconds for the whole command (default 300): a step gets at most what is left; one that
#              would start with too little time is NOT RUN "out of time" and counts as a failure
#   MODELS     "model:precisions ..." (default "convs:fp32,fp16,int8 srcnn:fp32,fp16,int8 tagger:fp32,fp16")
#   STEPS      only these steps (names or prefixes, e.g. "cuda-compare ort-cpu"); the others are NOT RUN
#              "not selected"; wheels, environment and backends always run
#   WHEEL_DIR  the carried wheels (default .whl); prepare: where to put them
#   WHEEL_PYTHON  prepare: the target CPython version (default 3.12)
#   SITE       where the wheels are installed (default /tmp/site), put on PYTHONPATH after the repository
#   LATENCY_S  seconds of timed runs per row (deployval --time-budget; default 1)
#   WORK       the evidence folder before packing (default a temporary one, removed; KEEP_WORK=1 keeps it)
#
# Exit code: 0 every step that could run passed (NOT RUN steps are listed, never counted as passed);
# 1 a step failed, timed out or had no time left; 2 bad usage, or prepare refused; 3 no CUDA GPU
# without --allow-cpu (the CPU steps ran).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
export GPU_CHECK_START=${GPU_CHECK_START:-${EPOCHREALTIME:-$(date +%s)}}

MODE=run
ARGS=()
for arg in "$@"; do
    case $arg in
        prepare) MODE=prepare ;;
        --allow-cpu | --plan) ARGS+=("$arg") ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu-check: unknown argument $arg (prepare, --allow-cpu, --plan, --help)" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null; then
    echo "gpu-check: no python at '$PYTHON' (set PYTHON)" >&2
    exit 2
fi

if [[ $MODE == prepare ]]; then
    if ((${#ARGS[@]})); then
        echo "gpu-check: prepare takes no options (WHEEL_PYTHON, WHEEL_DIR)" >&2
        exit 2
    fi
    exec "$PYTHON" scripts/gpu_check.py prepare
fi

SITE=${SITE:-/tmp/site}
export PYTHON SITE
export PYTHONPATH=$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}
exec "$PYTHON" scripts/gpu_check.py run "${ARGS[@]}"

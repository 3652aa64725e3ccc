#!/usr/bin/env bash
# The GPU validation of docs/gpu-validation.md in one go, on a machine with an NVIDIA GPU:
#
#   scripts/gpu-check.sh               from the repository root; everything goes to $OUT
#   scripts/gpu-check.sh --allow-cpu   without a GPU: the same steps on the CPU (to try the script)
#
# It needs python3 with torch (a CUDA build), onnx and onnxruntime (onnxruntime-gpu for the CUDA and
# TensorRT providers), and tensorrt for the trt backend; typer and rich for the command line, onnxsim
# and polygraphy where present, pytest for the tests. It installs nothing from the network and leaves
# the environment as it is: deployval runs from this checkout (PYTHONPATH), and what is missing is
# reported. Steps, each under a timeout; a failing step does not stop the later ones:
#
#   environment   nvidia-smi; Python, torch/CUDA/cuDNN, onnx, onnxruntime and its providers, tensorrt
#   backends      `deployval backends`, and which backends can run on the device (the compares use those)
#   pytest-gpu    pytest -m "gpu or tensorrt" on the test files with those markers (what make test-gpu runs)
#   compare-*     the zoo models on every available backend (torch, torchscript, ort, trt, ort-trt)
#   shape-grid, debug-convs-onnx, ray-*   the "Not yet run" checks of docs/gpu-validation.md that fit
#   results.md    one table of every JSON report: model, backend, precision, verdict, errors, latency
#
# Environment (all optional):
#   OUT         output directory (default build/gpu-check; emptied first)
#   PYTHON      the Python to use (default python3)
#   BUDGET      seconds for all the steps (default 450): a step gets at most what is left, and one
#               that would get under 20 s is skipped
#   MODELS      "model:precisions ..." (default "convs:fp32,fp16,int8 srcnn:fp32,fp16,int8
#               fine_organs:fp32,fp16 tagger:fp32,fp16")
#   WHEELHOUSE  a directory of wheels: missing typer/rich/onnxsim/polygraphy/pytest are installed from
#               it with pip --no-index (still nothing from the network)
#
# Exit code: 0 every step passed; 1 a step failed, timed out or was skipped for lack of time; 3 no
# CUDA GPU (without --allow-cpu), after the steps that need none.
set -uo pipefail

ALLOW_CPU=0
for arg in "$@"; do
    case $arg in
        --allow-cpu) ALLOW_CPU=1 ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu-check: unknown argument $arg (--allow-cpu, --help)" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
OUT=${OUT:-build/gpu-check}
PYTHON=${PYTHON:-python3}
BUDGET=${BUDGET:-450}
MODELS=${MODELS:-convs:fp32,fp16,int8 srcnn:fp32,fp16,int8 fine_organs:fp32,fp16 tagger:fp32,fp16}

rm -rf "$OUT"
mkdir -p "$OUT/logs" "$OUT/reports"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export DEPLOYVAL_CACHE_DIR=$OUT/cache   # a fresh cache: every export and engine is built in this run
export PYTHONUNBUFFERED=1
START=$SECONDS
STEPS=()
FAILED=0

log() { printf '[gpu-check] %s\n' "$*" | tee -a "$OUT/gpu-check.log" >&2; }
dv() { "$PYTHON" -m deployval "$@"; }

record() {  # record NAME STATUS SECONDS
    STEPS+=("| $1 | $2 | $3 |")
    LAST_STATUS=$2 LAST_SECONDS=$3
    [[ $2 == pass ]] || FAILED=1
}

# run_step NAME TIMEOUT COMMAND...: the command's output goes to $OUT/logs/NAME.log
run_step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 20)); then
        log "$name: skipped, ${left} s of the ${BUDGET} s budget left"
        record "$name" "skipped (out of time)" 0
        return 0
    fi
    ((limit > left)) && limit=$left
    log "$name (timeout ${limit} s): $*"
    local t0=$SECONDS rc=0
    # through bash, so that a step can be a function of this script (exported with export -f)
    timeout --kill-after=15 "$limit" bash -c '"$@"' "$name" "$@" > "$OUT/logs/$name.log" 2>&1 || rc=$?
    local took=$((SECONDS - t0)) status
    case $rc in
        0) status=pass ;;
        124 | 137) status="timed out after ${limit} s" ;;
        1) status="fail (exit 1)" ;;
        2) status="fail (exit 2: bad input)" ;;
        3) status="fail (exit 3: could not run)" ;;
        *) status="fail (exit $rc)" ;;
    esac
    log "$name: $status in ${took} s (log: $OUT/logs/$name.log)"
    [[ $status == pass ]] || tail -n 8 "$OUT/logs/$name.log" | sed 's/^/    /' >&2
    record "$name" "$status" "$took"
}

# --- environment ------------------------------------------------------------------------------------
environment() {
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
    else
        echo "nvidia-smi: not found"
    fi
    "$PYTHON" - "$OUT/environment.json" <<'EOF'
import importlib
import importlib.metadata
import json
import platform
import sys

env = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
missing = []
for module in ("torch", "numpy", "onnx", "onnxruntime", "tensorrt", "onnxscript", "onnxsim", "polygraphy",
               "typer", "rich", "matplotlib", "pytest", "ray"):
    try:
        mod = importlib.import_module(module)
        env[module] = getattr(mod, "__version__", "?")
    except Exception as exc:  # noqa: BLE001 - any failure to import is what is reported
        env[module] = None
        missing.append(f"{module} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
for dist in ("onnxruntime-gpu", "onnxruntime"):
    try:
        env[f"dist:{dist}"] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pass
if env["torch"]:
    import torch

    env["torch_cuda"] = torch.version.cuda
    env["cuda_available"] = torch.cuda.is_available()
    env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env["gpus"] = [
        {"name": torch.cuda.get_device_name(i), "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
        for i in range(torch.cuda.device_count())
    ] if env["cuda_available"] else []
if env["onnxruntime"]:
    import onnxruntime

    env["onnxruntime_providers"] = onnxruntime.get_available_providers()
env["missing"] = missing
json.dump(env, open(sys.argv[1], "w"), indent=2)
for key, value in env.items():
    if key != "missing":
        print(f"{key}: {value}")
print("missing: " + ("; ".join(missing) if missing else "nothing"))
EOF
}

export OUT PYTHON
export -f dv environment
log "output: $OUT; budget ${BUDGET} s; $PYTHON: $(command -v "$PYTHON")"
if [[ -n ${WHEELHOUSE:-} ]]; then
    for module in typer rich onnxsim polygraphy pytest; do
        "$PYTHON" -c "import $module" 2>/dev/null && continue
        log "installing $module from $WHEELHOUSE (pip --no-index)"
        "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" "$module" >> "$OUT/logs/wheelhouse.log" 2>&1 \
            || log "could not install $module from $WHEELHOUSE (see $OUT/logs/wheelhouse.log)"
    done
fi
run_step environment 120 environment
grep -E '^(python|torch|torch_cuda|cuda_available|cudnn|gpus|onnxruntime|dist:onnxruntime.*|onnxruntime_providers|tensorrt|missing):' \
    "$OUT/logs/environment.log" | sed 's/^/    /' >&2
for module in typer rich onnxsim polygraphy; do
    "$PYTHON" -c "import $module" 2>/dev/null || log "missing: $module (pip install $module, or WHEELHOUSE=DIR with its wheel)"
done

DEVICE=cuda
HAVE_GPU=1
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    HAVE_GPU=0
    if ((ALLOW_CPU)); then
        DEVICE=cpu
        log "no CUDA GPU (torch.cuda.is_available() is false): --allow-cpu, so the steps run on the CPU and no GPU result is recorded"
    else
        log "no CUDA GPU (torch.cuda.is_available() is false): skipping every CUDA step (--allow-cpu runs them on the CPU)"
    fi
fi

# --- backends ---------------------------------------------------------------------------------------
available_backends() {  # comma-separated backends that can run on $DEVICE, in the order below
    "$PYTHON" - "$DEVICE" <<'EOF'
import sys

from deployval.backends.base import backend_entries, check_available

device = sys.argv[1]
entries = backend_entries()
usable = []
for name in ("torch", "torchscript", "ort", "trt", "ort-trt"):
    try:
        ok, reason = check_available(entries[name].load(), device)
    except Exception as exc:  # noqa: BLE001 - a backend that cannot even be imported is unavailable
        ok, reason = False, f"{type(exc).__name__}: {exc}"
    print(f"{name} on {device}: {'yes' if ok else 'no: ' + reason}", file=sys.stderr)
    if ok:
        usable.append(name)
print(",".join(usable))
EOF
}

run_step backends 120 dv backends
BACKENDS=$(available_backends 2> "$OUT/backends.txt") || BACKENDS=
sed 's/^/    /' "$OUT/backends.txt" >&2
log "backends on $DEVICE: ${BACKENDS:-none}"

if ((HAVE_GPU || ALLOW_CPU)); then
    has() { [[ ,$BACKENDS, == *,$1,* ]]; }
    pick() {  # the available ones of the given backends, comma-separated
        local out=() b
        for b in "$@"; do has "$b" && out+=("$b"); done
        (IFS=,; echo "${out[*]}")
    }

    # --- tests ----------------------------------------------------------------------------------------
    mapfile -t gpu_tests < <(grep -l -E 'mark\.(gpu|tensorrt)' tests/test_*.py)
    run_step pytest-gpu 300 "$PYTHON" -m pytest -q -m "gpu or tensorrt" -p no:cacheprovider \
        --junitxml "$OUT/pytest-gpu.xml" "${gpu_tests[@]}"
    # the step's row also says how many tests ran and were skipped (a skip names what is missing)
    pytest_summary=$(tail -n 1 "$OUT/logs/pytest-gpu.log" | tr -d '=|' | sed 's/^ *//; s/ *$//')
    log "pytest: $pytest_summary"
    last=$((${#STEPS[@]} - 1))
    STEPS[last]="| pytest-gpu | $LAST_STATUS: $pytest_summary | $LAST_SECONDS |"

    # --- the zoo models -------------------------------------------------------------------------------
    for item in $MODELS; do
        model=${item%%:*}
        precisions=${item#*:}
        [[ $precisions == "$item" ]] && precisions=fp32,fp16
        run_step "compare-$model" 150 dv compare "$model" --device "$DEVICE" --backends "$BACKENDS" \
            --precisions "$precisions" --json "$OUT/reports/$model.json" -q
    done

    # --- checks of docs/gpu-validation.md, "Not yet run" ------------------------------------------------
    # The optimization profile spans a shape grid; one engine judges every shape and a batch of 4 copies.
    run_step shape-grid 120 dv compare srcnn --device "$DEVICE" --backends "$(pick torch ort trt)" \
        --shape-grid image=1x3x32x32,2x3x48x64,1x3x16x16 --batch-invariance --json "$OUT/reports/srcnn-shape-grid.json" -q
    # --repeat 2: engines are built a second time without the engine cache (details.repeat.engine_builds).
    if has trt || has ort-trt; then
        run_step repeat-engine-builds 120 dv compare convs --device "$DEVICE" --backends "$(pick trt ort-trt)" \
            --precisions fp32,fp16 --repeat 2 --json "$OUT/reports/convs-repeat.json" -q
    fi
    # debug of an ONNX file on TensorRT: node outputs exposed in chunks, one engine per chunk.
    debug_convs_onnx() {  # debug_convs_onnx DEVICE BACKEND PRECISION
        dv export convs --out "$OUT/convs-export" --kinds onnx -q \
            && dv debug "$OUT/convs-export/model.onnx" --device "$1" --backend "$2" --precision "$3" -q
    }
    export -f debug_convs_onnx
    if has trt; then
        run_step debug-convs-onnx 120 debug_convs_onnx "$DEVICE" trt fp16
    else
        run_step debug-convs-onnx 120 debug_convs_onnx "$DEVICE" ort fp32
    fi
    # --ray: one actor per GPU with every row loaded must give the verdicts of the run without Ray.
    if "$PYTHON" -c 'import ray' 2>/dev/null; then
        "$PYTHON" -c 'import numpy as np, sys
for i in range(4):
    np.save(f"{sys.argv[1]}/sample{i}.npy", np.random.default_rng(i).standard_normal((1, 3, 64, 64), dtype=np.float32))' \
            "$(mkdir -p "$OUT/srcnn-samples" && echo "$OUT/srcnn-samples")"
        ray_backends=$(pick torch trt)
        [[ $ray_backends == torch ]] && ray_backends=$(pick torch ort)
        run_step ray-without 120 dv compare srcnn --dataset "$OUT/srcnn-samples" --device "$DEVICE" \
            --backends "$ray_backends" --json "$OUT/reports/srcnn-dataset.json" -q
        run_step ray-with 180 dv compare srcnn --dataset "$OUT/srcnn-samples" --device "$DEVICE" \
            --backends "$ray_backends" --ray --ray-workers 1 --json "$OUT/reports/srcnn-dataset-ray.json" -q
        run_step ray-equal 30 "$PYTHON" - "$OUT/reports/srcnn-dataset.json" "$OUT/reports/srcnn-dataset-ray.json" <<'EOF'
import json
import sys

def rows(path):
    report = json.load(open(path))
    return {(r["backend"], r["precision"]): (r["status"], [o["metrics"]["max_abs"] for o in r["outputs"]])
            for r in report["results"]}

local, ray = rows(sys.argv[1]), rows(sys.argv[2])
for key in sorted(set(local) | set(ray)):
    print(key, "local", local.get(key), "ray", ray.get(key))
sys.exit(0 if local == ray else "the Ray run differs from the local run")
EOF
    else
        log "ray is not installed: the --ray check is skipped"
    fi
fi

# --- the results table ------------------------------------------------------------------------------
"$PYTHON" - "$OUT/reports" "$DEVICE" > "$OUT/results.md" <<'EOF'
import json
import pathlib
import sys

reports = sorted(pathlib.Path(sys.argv[1]).glob("*.json"))
if not reports:
    sys.exit(print("No JSON report was written."))
first = json.loads(reports[0].read_text()) if reports else {}
device = first.get("device", {})
versions = first.get("versions", {})
gpu = device.get("gpu") or device.get("cpu") or sys.argv[2]
print(f"Device: {gpu}" + (f", compute capability {device['compute_capability']}" if device.get("compute_capability")
                          else "") + f" ({sys.argv[2]}). Versions: "
      + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".\n")
print("| run | backend | precision | verdict | max abs | rel L2 | median latency (ms) | device median (ms) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")


def number(value, fmt):
    return format(value, fmt) if isinstance(value, (int, float)) else "–"


for path in reports:
    report = json.loads(path.read_text())
    for row in report.get("results", []):
        if row["status"] == "skipped":  # a precision the backend does not offer
            continue
        metrics = [o.get("metrics") or {} for o in row.get("outputs") or []]
        max_abs = max((m["max_abs"] for m in metrics if isinstance(m.get("max_abs"), (int, float))), default=None)
        rel_l2 = max((m["rel_l2"] for m in metrics if isinstance(m.get("rel_l2"), (int, float))), default=None)
        latency = row.get("latency") or {}
        verdict = row["status"].upper() + ("" if row.get("faithful", True) else "*")
        if row["status"] not in ("pass", "reference") and row.get("reason"):
            verdict += f" ({row['reason'].splitlines()[0][:80]})"
        print(f"| {path.stem} | {row['backend']} | {row['precision']} | {verdict} | {number(max_abs, '.3g')} | "
              f"{number(rel_l2, '.3g')} | {number(latency.get('median_ms'), '.3f')} | "
              f"{number(latency.get('device_median_ms'), '.3f')} |")
EOF
[[ -s $OUT/results.md ]] || record results-table "fail (see $OUT/results.md)" 0

{
    echo "| step | status | seconds |"
    echo "| --- | --- | --- |"
    printf '%s\n' "${STEPS[@]}"
} > "$OUT/steps.md"

echo
cat "$OUT/steps.md"
echo
cat "$OUT/results.md"
echo
log "total $((SECONDS - START)) s; everything is in $OUT (steps.md, results.md, environment.json, reports/, logs/)"
if ((!HAVE_GPU)); then
    if ((ALLOW_CPU)); then
        log "ran on the CPU (--allow-cpu): nothing here is a GPU result"
    else
        log "no CUDA GPU: the CUDA steps were skipped (exit code 3)"
        exit 3
    fi
fi
if ((FAILED)); then
    log "FAILED: see the steps above"
    exit 1
fi
log "every step passed"

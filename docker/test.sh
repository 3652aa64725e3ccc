#!/usr/bin/env bash
# Smoke test of the CPU image (make docker-test): runs `deployval backends` and
# `deployval compare convs --json /work/reports/convs.json` inside the image, as its non-root user and
# without network, with $DOCKER_BUILD_DIR/test-reports mounted at /work/reports, then checks the JSON
# report on the host: summary.exit_code 0, a complete report, and rows for torch, torchscript and ort.
#
#   IMAGE    the image to test (default deployval:cpu)
#   PYTHON   the host Python that reads the report (default python3)
#   ENGINE, DOCKER_BUILD_DIR   see docker/engine.sh
set -euo pipefail
# shellcheck source=docker/engine.sh
source "$(dirname "${BASH_SOURCE[0]}")/engine.sh"

IMAGE=${IMAGE:-deployval:cpu}
PYTHON=${PYTHON:-python3}
detect_engine
image_exists "$IMAGE" || die "no image $IMAGE: run make docker-build first"

out=$DOCKER_BUILD_DIR/test-reports
rm -rf "$out"
mkdir -p "$out"
chmod 0777 "$out"   # the image runs as uid 10001, which owns nothing on the host

run=(run --rm --network none)
log "deployval backends"
engine "${run[@]}" "$IMAGE" backends

log "deployval compare convs --json /work/reports/convs.json"
t0=$SECONDS
rc=0
engine "${run[@]}" -v "$out:/work/reports" "$IMAGE" compare convs --json /work/reports/convs.json || rc=$?
log "compare exited $rc after $((SECONDS - t0)) s"
((rc == 0)) || die "deployval compare convs exited $rc inside $IMAGE"

report=$out/convs.json
[[ -f $report ]] || die "no report at $report"
if [[ ! -r $report ]]; then
    # deployval writes reports with mode 0600 (mkstemp, then rename), owned by the container's uid:
    # a host user other than root cannot read them, so read this one through the image.
    report=$DOCKER_BUILD_DIR/convs.host.json
    engine "${run[@]}" -v "$out:/work/reports" --entrypoint cat "$IMAGE" /work/reports/convs.json > "$report"
fi

"$PYTHON" - "$report" <<'EOF'
import json
import sys

report = json.load(open(sys.argv[1]))
backends = {row["backend"] for row in report["results"]}
problems = []
if report["summary"]["exit_code"] != 0:
    problems.append(f"summary.exit_code is {report['summary']['exit_code']}")
if not report.get("complete"):
    problems.append("the report is not complete")
if missing := {"torch", "torchscript", "ort"} - backends:
    problems.append(f"no results for {sorted(missing)}")
if problems:
    sys.exit(f"[docker] {sys.argv[1]}: " + "; ".join(problems))
print(f"[docker] {sys.argv[1]}: {report['summary']['verdict']}, exit code 0, backends {sorted(backends)}")
EOF
log "docker-test passed: $IMAGE"

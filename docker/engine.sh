# shellcheck shell=bash
# Sourced by docker/build.sh and docker/test.sh: picks the container engine and the host-specific
# settings it needs. Everything host-specific lives here (and in the files it writes under
# $DOCKER_BUILD_DIR), never in the Dockerfiles.
#
#   ENGINE=docker|podman   force an engine (default: docker if its daemon answers, else podman)
#   DOCKER_BUILD_DIR       generated files: containers.conf, pip.conf, the local base's rootfs, test reports
#
# With podman these settings are applied; without them `podman run` fails with "error setting rlimit
# type 7" where podman's default nofile limit is above the host's hard limit (docker/README.md, "A
# fresh Debian host without docker"):
#   --storage-driver overlay            global option, every podman call
#   CONTAINERS_CONF                      $DOCKER_BUILD_DIR/containers.conf (written if absent, or taken
#                                        from the caller's CONTAINERS_CONF): runc as the runtime and
#                                        ulimits the host's defaults would not give a build
#   --isolation chroot --format docker  build options (docker format: OCI images drop SHELL)

_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$_here/.." && pwd)
DOCKER_BUILD_DIR=${DOCKER_BUILD_DIR:-$ROOT/build/docker}
mkdir -p "$DOCKER_BUILD_DIR"
DOCKER_BUILD_DIR=$(cd "$DOCKER_BUILD_DIR" && pwd)

log() { printf '[docker] %s\n' "$*" >&2; }
die() { printf '[docker] error: %s\n' "$*" >&2; exit 1; }

detect_engine() {
    if [[ -n ${ENGINE:-} ]]; then
        command -v "$ENGINE" >/dev/null || die "ENGINE=$ENGINE is not installed"
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        ENGINE=docker          # a docker client alone is not enough: its daemon must answer
    elif command -v podman >/dev/null; then
        ENGINE=podman
    else
        die "no container engine: install docker, or podman (apt-get install -y podman buildah runc)"
    fi
    ENGINE_CMD=("$ENGINE")
    BUILD_OPTS=()
    if [[ $ENGINE == podman ]]; then
        if [[ -z ${CONTAINERS_CONF:-} ]]; then
            CONTAINERS_CONF=$DOCKER_BUILD_DIR/containers.conf
            if [[ ! -f $CONTAINERS_CONF ]]; then
                cat > "$CONTAINERS_CONF" <<'EOF'
# Written by docker/engine.sh for podman on this host (runc as the runtime, ulimits a build needs).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
                log "wrote $CONTAINERS_CONF"
            fi
        fi
        # absolute: buildah's copier runs elsewhere and fails on a relative path ("stat ...: no such file")
        CONTAINERS_CONF=$(readlink -f "$CONTAINERS_CONF")
        [[ -f $CONTAINERS_CONF ]] || die "CONTAINERS_CONF $CONTAINERS_CONF is not a file"
        export CONTAINERS_CONF
        ENGINE_CMD+=(--storage-driver "${PODMAN_STORAGE_DRIVER:-overlay}")
        BUILD_OPTS+=(--isolation chroot --format docker)
    fi
    log "engine: ${ENGINE_CMD[*]}${CONTAINERS_CONF:+ (CONTAINERS_CONF=$CONTAINERS_CONF)}"
}

engine() { "${ENGINE_CMD[@]}" "$@"; }

image_exists() {
    if [[ $ENGINE == podman ]]; then
        engine image exists "$1"
    else
        engine image inspect "$1" >/dev/null 2>&1
    fi
}

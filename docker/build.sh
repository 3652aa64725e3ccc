#!/usr/bin/env bash
# Builds deployval's container image with docker or podman:
#
#   docker/build.sh cpu      docker/Dockerfile.cpu -> deployval:cpu   (make docker-build)
#   docker/build.sh gpu      docker/Dockerfile     -> deployval:gpu   (make docker-gpu)
#
# Environment (all optional):
#   IMAGE            tag to build (default deployval:cpu / deployval:gpu)
#   BASE_IMAGE       base image; default: the Dockerfile's own default
#   TORCH_INDEX_URL  passed as the build argument of that name when set (even to "")
#   LOCAL_WHEELS     a directory of wheels for pip (podman only: mounted read-only at /wheels)
#   CA_BUNDLE        a CA bundle for pip inside the build (podman only: mounted read-only)
#   PULL_TIMEOUT     seconds to wait for a base image pull (default 120)
#   LOCALBASE        tag of the locally made Debian base (default localhost/localbase:bookworm)
#   LOCALBASE_SUITE, LOCALBASE_MIRROR   debootstrap's suite (bookworm) and mirror (default: apt's)
#   ENGINE, DOCKER_BUILD_DIR, PYTHON    see docker/engine.sh
#   extra arguments are passed to the engine's build command
# The build arguments VERSION (deployval/_version.py) and VCS_REF (git HEAD, "-dirty" with changes)
# become the image's org.opencontainers.image.version and .revision labels.
#
# Host adaptations, all made here and none in the Dockerfiles:
# - With podman, the settings of docker/engine.sh.
# - The host's pip configuration (pip's cert and find-links, from PIP_CERT / PIP_FIND_LINKS or
#   `pip config`) is carried into the build: the CA bundle and a local wheel directory holding
#   torch are mounted read-only and named in a generated pip.conf, mounted at /etc/pip.conf. The
#   bundle is mounted beside /etc/ssl/certs, not over it: a read-only /etc/ssl/certs makes the
#   ca-certificates package (pulled in by python3-venv on a bare Debian) fail to configure.
# - When the PyTorch index is unreachable and such a wheel directory has torch, TORCH_INDEX_URL=""
#   (torch then comes from that directory).
# - When the base image is neither present nor pullable, the CPU image is built on a Debian base
#   made here with debootstrap from apt's configured mirror (needs root and debootstrap).
set -euo pipefail
# shellcheck source=docker/engine.sh
source "$(dirname "${BASH_SOURCE[0]}")/engine.sh"

FLAVOR=${1:-cpu}
shift || true
case $FLAVOR in
    cpu) DOCKERFILE=$ROOT/docker/Dockerfile.cpu; IMAGE=${IMAGE:-deployval:cpu} ;;
    gpu) DOCKERFILE=$ROOT/docker/Dockerfile; IMAGE=${IMAGE:-deployval:gpu} ;;
    *) die "usage: docker/build.sh cpu|gpu [extra build arguments]" ;;
esac
PYTHON=${PYTHON:-python3}
PULL_TIMEOUT=${PULL_TIMEOUT:-120}
LOCALBASE=${LOCALBASE:-localhost/localbase:bookworm}
LOCALBASE_SUITE=${LOCALBASE_SUITE:-bookworm}

detect_engine

# --- the base image -------------------------------------------------------------------------------

dockerfile_arg_default() {  # the default of `ARG NAME=...` in the Dockerfile
    sed -n "s/^ARG $1=//p" "$DOCKERFILE" | head -n 1
}

apt_mirror() {  # the first mirror apt is configured with for $LOCALBASE_SUITE
    local files=()
    [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    shopt -s nullglob
    files+=(/etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    shopt -u nullglob
    local f
    for f in "${files[@]}"; do
        if [[ $f == *.sources ]]; then   # deb822: blank-line separated stanzas
            awk -v suite="$LOCALBASE_SUITE" '
                function flush() { if (deb && ok && uri != "") { print uri; found = 1; exit } deb = ok = 0; uri = "" }
                /^[ \t]*$/ { flush(); next }
                /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
                /^URIs:/ { uri = $2 }
                /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
                END { if (!found) flush() }' "$f"
        else                              # one-line style: deb [options] URI SUITE COMPONENTS
            awk -v suite="$LOCALBASE_SUITE" '
                $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                              if ($(i + 1) == suite) { print $i; exit } }' "$f"
        fi
    done | head -n 1
}

make_localbase() {
    command -v debootstrap >/dev/null || die "debootstrap is needed to make $LOCALBASE (apt-get install -y debootstrap)"
    [[ $(id -u) == 0 ]] || die "making $LOCALBASE with debootstrap needs root; or set BASE_IMAGE to an image you have"
    local mirror=${LOCALBASE_MIRROR:-$(apt_mirror)}
    mirror=${mirror:-http://deb.debian.org/debian}
    local rootfs=$DOCKER_BUILD_DIR/rootfs-$LOCALBASE_SUITE
    rm -rf "$rootfs"
    log "making $LOCALBASE: debootstrap --variant=minbase $LOCALBASE_SUITE from $mirror"
    local t0=$SECONDS
    debootstrap --variant=minbase "$LOCALBASE_SUITE" "$rootfs" "$mirror" > "$DOCKER_BUILD_DIR/debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $DOCKER_BUILD_DIR/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    # What an official debian image's config has: a PATH, and a shell as the command.
    tar -C "$rootfs" -c . | engine import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$LOCALBASE" >/dev/null
    rm -rf "$rootfs"
    log "made $LOCALBASE in $((SECONDS - t0)) s"
}

explicit_base=${BASE_IMAGE:+1}
BASE_IMAGE=${BASE_IMAGE:-$(dockerfile_arg_default BASE_IMAGE)}
[[ -n $BASE_IMAGE ]] || die "no BASE_IMAGE and no default in $DOCKERFILE"
if image_exists "$BASE_IMAGE"; then
    log "base image: $BASE_IMAGE (present)"
elif [[ $BASE_IMAGE == "$LOCALBASE" ]]; then
    make_localbase
elif log "pulling $BASE_IMAGE (up to ${PULL_TIMEOUT} s)" \
        && timeout "$PULL_TIMEOUT" "${ENGINE_CMD[@]}" pull "$BASE_IMAGE" >&2; then
    log "base image: $BASE_IMAGE (pulled)"
elif [[ $FLAVOR == cpu && -z $explicit_base ]]; then
    log "cannot pull $BASE_IMAGE: using a local Debian $LOCALBASE_SUITE base, $LOCALBASE"
    BASE_IMAGE=$LOCALBASE
    image_exists "$BASE_IMAGE" || make_localbase
else
    die "cannot pull $BASE_IMAGE; log in to its registry (nvcr.io: docker login nvcr.io) or set BASE_IMAGE"
fi
BUILD_ARGS=(--build-arg "BASE_IMAGE=$BASE_IMAGE")

# For the image's labels (org.opencontainers.image.version and .revision): deployval's version and
# the commit built, with "-dirty" when the tree has changes git knows of.
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/deployval/_version.py")
vcs_ref=unknown
if git -C "$ROOT" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    vcs_ref=$(git -C "$ROOT" rev-parse HEAD)
    git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || vcs_ref+=-dirty
fi
BUILD_ARGS+=(--build-arg "VERSION=${version:-unknown}" --build-arg "VCS_REF=$vcs_ref")

# --- the host's pip configuration -----------------------------------------------------------------

pip_setting() {  # pip's value for option $1 (cert, find-links): the environment first, then pip config
    local var
    var=PIP_$(tr 'a-z-' 'A-Z_' <<< "$1")
    if [[ -n ${!var:-} ]]; then
        printf '%s\n' "${!var}"
    else
        "$PYTHON" -m pip config get "global.$1" 2>/dev/null || true
    fi
}

torch_version=$(dockerfile_arg_default TORCH_VERSION)
if [[ -z ${LOCAL_WHEELS:-} ]]; then
    for entry in $(pip_setting find-links); do
        entry=${entry#file://}
        if [[ -d $entry ]] && compgen -G "$entry/torch-${torch_version}-*.whl" >/dev/null; then
            LOCAL_WHEELS=$entry
            break
        fi
    done
fi
CA_BUNDLE=${CA_BUNDLE:-$(pip_setting cert)}

if [[ -z ${TORCH_INDEX_URL+set} ]]; then
    index=$(dockerfile_arg_default TORCH_INDEX_URL)
    if [[ -n $index ]] && ! "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)' \
            "${index%/}/torch/" >/dev/null 2>&1; then
        [[ -n ${LOCAL_WHEELS:-} && $ENGINE == podman ]] \
            || die "the PyTorch index $index is unreachable and no local torch $torch_version wheel can be mounted; set TORCH_INDEX_URL"
        log "PyTorch index unreachable: torch $torch_version from $LOCAL_WHEELS"
        TORCH_INDEX_URL=
    fi
fi
[[ -n ${TORCH_INDEX_URL+set} ]] && BUILD_ARGS+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")

MOUNTS=()
pip_conf=()
if [[ $ENGINE == podman ]]; then
    if [[ -n $CA_BUNDLE ]]; then
        [[ -f $CA_BUNDLE ]] || die "CA_BUNDLE $CA_BUNDLE is not a file"
        MOUNTS+=(-v "$(readlink -f "$CA_BUNDLE"):/run/host-ca/ca-bundle.crt:ro")
        pip_conf+=("cert = /run/host-ca/ca-bundle.crt")
    fi
    if [[ -n ${LOCAL_WHEELS:-} ]]; then
        MOUNTS+=(-v "$(readlink -f "$LOCAL_WHEELS"):/wheels:ro")
        pip_conf+=("find-links = /wheels")
    fi
    if ((${#pip_conf[@]})); then
        printf '# Written by docker/build.sh: the host pip settings a build needs.\n[global]\n' > "$DOCKER_BUILD_DIR/pip.conf"
        printf '%s\n' "${pip_conf[@]}" >> "$DOCKER_BUILD_DIR/pip.conf"
        MOUNTS+=(-v "$DOCKER_BUILD_DIR/pip.conf:/etc/pip.conf:ro")
        log "host pip settings for the build: ${pip_conf[*]}"
    fi
elif [[ -n $CA_BUNDLE || -n ${LOCAL_WHEELS:-} ]]; then
    log "note: docker build cannot mount host files, so pip's cert/find-links ($CA_BUNDLE ${LOCAL_WHEELS:-}) are not used"
fi

# --- build ----------------------------------------------------------------------------------------

cmd=(build "${BUILD_OPTS[@]}" "${MOUNTS[@]}" "${BUILD_ARGS[@]}" -t "$IMAGE" -f "$DOCKERFILE" "$@" "$ROOT")
log "${ENGINE_CMD[*]} ${cmd[*]}"
t0=$SECONDS
engine "${cmd[@]}"
log "built $IMAGE in $((SECONDS - t0)) s"
engine image ls "$IMAGE" >&2

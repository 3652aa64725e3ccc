"""Print the sizes of deployval's built container images as a markdown table, so that the figures in
README.md and docker/README.md are measured, not typed.

    python3 scripts/image_sizes.py                  # deployval:cpu, and deployval:gpu if it was built
    python3 scripts/image_sizes.py IMAGE [IMAGE...]  # (make image-sizes)

It asks the engine docker/engine.sh would pick (ENGINE=docker|podman, else docker when its daemon
answers, else podman with --storage-driver $PODMAN_STORAGE_DRIVER, default overlay) for each image's
size (`image inspect`) and its layers (`history`). The layers are grouped by the step that made them:
the base image's own (those of the image in the org.opencontainers.image.base.name label, when it is
present), the Python/venv step, torch, and deployval with its dependencies. Sizes are uncompressed, in
decimal units (1 GB = 10^9 bytes), as `podman image ls` and `docker image ls` show them.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys

DEFAULT_IMAGES = ("deployval:cpu", "deployval:gpu")


def engine_command() -> list[str]:
    """The engine and its global options, chosen as docker/engine.sh chooses them."""
    engine = os.environ.get("ENGINE")
    if not engine:
        docker_up = shutil.which("docker") and subprocess.run(
            ["docker", "info"], capture_output=True).returncode == 0
        engine = "docker" if docker_up else "podman" if shutil.which("podman") else ""
    if not engine or not shutil.which(engine):
        sys.exit("image_sizes: no container engine (docker with a running daemon, or podman)")
    if engine == "podman":
        return [engine, "--storage-driver", os.environ.get("PODMAN_STORAGE_DRIVER", "overlay")]
    return [engine]


def query(engine: list[str], *args: str) -> str | None:
    """The engine's stdout, or None when the command fails (an image that is not there)."""
    done = subprocess.run([*engine, *args], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def history(engine: list[str], image: str) -> list[tuple[str, int]]:
    """(created by, size in bytes) of each layer of the image, oldest first."""
    out = query(engine, "history", "--no-trunc", "--human=false", "--format", "{{.CreatedBy}}\t{{.Size}}", image)
    layers = []
    for line in (out or "").splitlines():
        created_by, _, size = line.rpartition("\t")
        layers.append((created_by, parse_size(size)))
    return layers[::-1]


def parse_size(text: str) -> int:
    """Bytes from `history --human=false` (a plain number; docker may print e.g. "12.3MB" anyway)."""
    text = text.strip()
    try:
        return int(float(text))
    except ValueError:
        pass
    units = {"kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return 0


def step(created_by: str, other: str) -> str:
    """The part of the Dockerfile a layer comes from, by the command that made it."""
    if "torch==" in created_by:
        return "torch"
    if "deployval-requirements.txt" in created_by and "pip install" in created_by:
        return "deployval and its dependencies"
    if "venv" in created_by:
        return "Python and the venv"
    return other


def human(size: float) -> str:
    if size >= 1e9:
        return f"{size / 1e9:.2f} GB"
    if size >= 1e6:
        return f"{size / 1e6:.0f} MB"
    return f"{size / 1e3:.0f} kB"


def describe(engine: list[str], image: str) -> tuple[list[str], list[str]] | None:
    """The image's summary row and its per-step rows, or None when it is not there."""
    size = query(engine, "image", "inspect", "--format", "{{.Size}}", image)
    if size is None:
        return None
    label = query(engine, "image", "inspect", "--format", "{{json .Config.Labels}}", image) or "null"
    labels = json.loads(label) or {}
    layers = history(engine, image)
    base = labels.get("org.opencontainers.image.base.name", "")
    base_layers = history(engine, base) if base else []
    groups: dict[str, int] = {}
    other = "base image, COPY and metadata"
    if base_layers and [c for c, _ in layers[: len(base_layers)]] == [c for c, _ in base_layers]:
        groups[f"base image ({base})"] = sum(s for _, s in layers[: len(base_layers)])
        layers = layers[len(base_layers):]
        other = "COPY and metadata"
    for created_by, layer_size in layers:
        name = step(created_by, other)
        groups[name] = groups.get(name, 0) + layer_size
    total = int(size.strip())
    version = labels.get("org.opencontainers.image.version", "?")
    revision = labels.get("org.opencontainers.image.revision", "?")
    revision = revision[:12] + ("-dirty" if revision.endswith("-dirty") else "")
    summary = f"| `{image}` | **{human(total)}** | {version} | {labels.get('io.deployval.torch', '?')} | `{revision}` |"
    rows = [f"| `{image}` | {name} | {human(group_size)} |" for name, group_size in groups.items() if group_size]
    return [summary], rows


def main(argv: list[str]) -> int:
    engine = engine_command()
    images = argv or list(DEFAULT_IMAGES)
    version = (query(engine, "--version") or "").strip()
    summaries: list[str] = []
    parts: list[str] = []
    for image in images:
        found = describe(engine, image)
        if found is None:
            if argv or image == DEFAULT_IMAGES[0]:
                print(f"image_sizes: no image {image} (build it first: make docker-build)", file=sys.stderr)
            continue
        summaries += found[0]
        parts += found[1]
    if not summaries:
        return 1
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    print(f"Measured {today} with `python3 scripts/image_sizes.py` ({version}); uncompressed, 1 GB = 10^9 bytes.\n")
    print("| image | size | deployval | torch | revision |\n| --- | --- | --- | --- | --- |")
    print("\n".join(summaries))
    print("\n| image | layers | size |\n| --- | --- | --- |")
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

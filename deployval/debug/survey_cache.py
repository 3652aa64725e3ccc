"""The cached survey of a model (its module calls and marks, in execution order) on given inputs, so
that an exact replay of `debug` saves one eager pass."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._util import atomic_write_json
from ..model.spec import ModelSpec, RunConfig

SURVEY_FORMAT = 1


def survey_cache_path(config: RunConfig, spec: ModelSpec, model_digest: str, inputs_digest: str) -> Path | None:
    """Where the survey of this model on these very inputs is kept (the call structure can depend on
    the values, so only an exact replay reuses it)."""
    if not config.use_cache:
        return None
    from .._util import sha256_json
    from .._version import __version__
    from ..export.store import default_cache_dir

    key = sha256_json([SURVEY_FORMAT, __version__, model_digest, inputs_digest, config.device,
                       [(i.name, list(i.shape), i.dtype) for i in spec.inputs]])
    root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    return root / "debug-surveys" / f"{key[:32]}.json"


def load_survey(path: Path | None) -> tuple[Any, dict[str, tuple[list[int], str]]] | None:
    if path is None or not path.exists():
        return None
    from .capture import Survey

    try:
        data = json.loads(path.read_text())
        return Survey.from_json(data["calls"]), {k: (list(v[0]), v[1]) for k, v in data["outputs"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_survey(path: Path | None, surveyed: Any, outputs: Mapping[str, tuple[list[int], str]]) -> None:
    if path is None:
        return
    with contextlib.suppress(OSError):
        atomic_write_json(path, {"calls": surveyed.calls_to_json(),
                                 "outputs": {k: list(v) for k, v in outputs.items()}})


"""Golden outputs: the reference's outputs written once (`compare --save-outputs`) and every later
row judged against them (`compare --expected`), as Polygraphy's --save-outputs/--load-outputs.

A release keeps the outputs its model computed and the next release is judged against those, not
against whatever today's torch computes. The file is a plain .npz, one array per output, so a
reproduction (`debug --repro`) or another tool can write one. deployval's own files also record the
digest of the inputs they were computed from: judging outputs of other inputs is refused.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._util import atomic_write_bytes
from ..errors import UsageError
from ..judge.judging import check_task, judge_outputs, row_tolerance, settle_verdict
from ..judge.nonfinite import check_reference
from ..judge.results import BackendResult, Report
from ..model.inputs import npz_bytes
from ..model.spec import ModelSpec, RunConfig

if TYPE_CHECKING:
    from .session import Session

INPUTS_KEY = "__deployval_inputs__"  # JSON {"sha256": ..., "names": [...]}: what the outputs were computed from


def check_save_path(path: Path) -> None:
    """Before any work: a .npz name in a directory that can be written."""
    from .._util import check_writable

    if Path(path).suffix.lower() != ".npz":
        raise UsageError(f"--save-outputs '{path}': use a .npz file name")
    check_writable(Path(path), "golden outputs")


def save_outputs(path: Path, outputs: Mapping[str, np.ndarray], inputs_sha256: str) -> None:
    """Write `outputs` as .npz with the digest of their inputs."""
    path = Path(path)
    check_save_path(path)
    if INPUTS_KEY in outputs:
        raise UsageError(f"--save-outputs: the model has an output named '{INPUTS_KEY}'")
    meta = json.dumps({"sha256": inputs_sha256})
    atomic_write_bytes(path, npz_bytes({**outputs, INPUTS_KEY: np.array(meta)}))


def load_expected(path: Path, inputs_sha256: str) -> dict[str, np.ndarray]:
    """The outputs in `path` (.npz, one array per output); a file recorded from other inputs is refused."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--expected '{path}' does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"--expected '{path}' cannot be read as .npz: {exc}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UsageError(f"--expected '{path}': not an .npz file of named outputs (one array per output)")
    try:
        with data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"--expected '{path}' cannot be read as .npz: {exc}") from None
    meta = arrays.pop(INPUTS_KEY, None)
    if not arrays:
        raise UsageError(f"--expected '{path}' holds no outputs")
    if meta is not None:
        try:
            recorded = json.loads(str(meta)).get("sha256")
        except (ValueError, AttributeError):
            recorded = None
        if recorded and recorded != inputs_sha256:
            raise UsageError(f"--expected '{path}' was computed from other inputs (sha256 {recorded[:12]}…, these "
                             f"are {inputs_sha256[:12]}…): give the inputs it was saved with (--inputs or --seed; "
                             "in a manifest, inputs or seed)")
    return arrays


def check_names(expected: Mapping[str, np.ndarray], output_names: tuple[str, ...], path: Path) -> dict[str, np.ndarray]:
    """`expected` in the model's output order; a missing or unknown output name is a usage error."""
    missing = [name for name in output_names if name not in expected]
    extra = [name for name in expected if name not in output_names]
    if missing or extra:
        problems = ([f"lacks {', '.join(repr(n) for n in missing)}"] if missing else []) + (
            [f"has {', '.join(repr(n) for n in extra)}, which the model does not output"] if extra else [])
        raise UsageError(f"--expected '{path}' {' and '.join(problems)} (the model's outputs: "
                         f"{', '.join(output_names)})")
    return {name: expected[name] for name in output_names}


def golden_outputs(session: Session, expected: Path | None, save_outputs: Path | None,
                   over_many_inputs: bool) -> dict[str, np.ndarray] | None:
    """The --expected outputs, checked against the inputs they were saved from and for NaN/Inf (refused
    without --allow-nonfinite, as a reference's); for an ONNX or TorchScript file they become the
    session's reference (no reference run)."""
    if expected is None and save_outputs is None:
        return None
    if over_many_inputs:
        raise UsageError("--expected and --save-outputs are outputs of one input: they do not combine with "
                         "--dataset, --shape-grid or --batch-invariance")
    if expected is not None and save_outputs is not None:
        raise UsageError("--save-outputs and --expected: give one (the expected outputs are saved already)")
    if expected is None:
        check_save_path(Path(save_outputs))  # before the reference run, not after it
        return None
    golden = load_expected(Path(expected), session.inputs_digest)
    check_reference(golden, f"--expected '{expected}'", session.config.allow_nonfinite)
    if session.spec.kind != "module":
        session.use_reference(check_names(golden, tuple(session.spec.output_names or golden), Path(expected)))
    return golden


def judge_against_expected(report: Report, golden: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                           reference_row: BackendResult | None, spec: ModelSpec, config: RunConfig,
                           path: Path, inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The outputs every row is judged against. For a PyTorch model the reference ran: it is judged
    against the golden outputs too (today's torch against the release's), as a row when it is one."""
    replaced = spec.kind != "module"
    report.analysis["expected_outputs"] = {"path": str(path), "replaces_reference_run": replaced}
    if replaced:
        return dict(reference)
    golden = check_names(golden, tuple(reference), path)
    if reference_row is not None:
        row = reference_row
        judge_outputs(row, golden, reference, lambda name: row_tolerance(spec, row.backend, "fp32", name, config),
                      spec.task, allow_nonfinite=config.allow_nonfinite, slices=config.slices)
        check_task(row, config, golden, reference, inputs or {})
        settle_verdict(row, config.judging)
    return dict(golden)

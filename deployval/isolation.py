"""Run a backend in its own process, so that a segfault, an out-of-memory kill or a hang costs that
backend's row and nothing else.

The parent writes the job (backend class, artifact, inputs, settings) to a file, starts
`python -m deployval.isolation JOB RESULT` in a new process group, waits at most `timeout`
seconds, and reads the `Execution` back. A child that dies by a signal, exits abnormally or runs out
of time becomes an `Execution.error` naming the signal or the timeout, with the last lines the child
printed. The files are written by this process for its own child (never loaded from elsewhere).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import Runner
from .execution import Execution
from .export.artifacts import MODULE, Artifact
from .progress import Progress
from .spec import ModelSpec, RunConfig

LOG_TAIL_LINES = 6


def execute_isolated(
    runner_cls: type[Runner], artifact: Artifact, precision: str, device: str, options: Mapping[str, Any],
    feeds: Mapping[str, np.ndarray], config: RunConfig, spec: ModelSpec, *, timeout_s: float | None,
    progress: Progress | None = None, label: str = "", trust_checkpoint: bool = False,
) -> Execution:
    progress = progress or Progress()
    label = label or f"{runner_cls.name} {precision}"
    job = {
        "runner": f"{runner_cls.__module__}:{runner_cls.__qualname__}",
        "artifact": replace(artifact, obj=None),
        "precision": precision,
        "device": device,
        "options": dict(options),
        "feeds": dict(feeds),
        "config": config,
        "spec": spec if artifact.kind == MODULE else None,
        "trust_checkpoint": trust_checkpoint,
    }
    with tempfile.TemporaryDirectory(prefix="deployval-isolated-") as tmp:
        job_path, result_path, log_path = Path(tmp) / "job.pkl", Path(tmp) / "result.pkl", Path(tmp) / "child.log"
        try:
            job_path.write_bytes(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as exc:
            return Execution(error=f"cannot isolate {label}: its job does not serialize ({exc}); "
                                   "run without --isolate or give the model as pkg.module:factory")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        start = time.perf_counter()
        with progress.step(f"{label} in its own process"), open(log_path, "wb") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "deployval.isolation", str(job_path), str(result_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
            try:
                code = child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(child)
                return Execution(error=f"{label} timed out after {timeout_s:g} s and was killed"
                                       f"{_tail(log_path)}")
        elapsed = time.perf_counter() - start
        if code != 0 or not result_path.exists():
            return Execution(error=f"{label} {_describe_exit(code)}{_tail(log_path)}")
        execution: Execution = pickle.loads(result_path.read_bytes())
        execution.seconds["isolated_process"] = elapsed
        execution.details["isolated"] = True
        return execution


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
    child.wait()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"crashed: killed by {name}{hint}"
    return f"crashed: its process exited with code {code}"


def _tail(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f"; last output: {' | '.join(lines[-LOG_TAIL_LINES:])}" if lines else ""


def _child(job_path: Path, result_path: Path) -> int:
    from .execution import execute
    from .loading import build_module, resolve_callable

    job = pickle.loads(job_path.read_bytes())
    runner_cls = resolve_callable(job["runner"], "backend")
    artifact: Artifact = job["artifact"]
    if artifact.kind == MODULE:
        artifact = replace(artifact, obj=build_module(job["spec"], trust_checkpoint=job["trust_checkpoint"]))
    execution = execute(runner_cls, artifact, job["precision"], job["device"], job["options"], job["feeds"],
                        job["config"])
    tmp = result_path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(execution, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    status = _child(Path(sys.argv[1]), Path(sys.argv[2]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # the result is on disk; skip the slow interpreter teardown of torch

"""Run a backend in its own process, so that a segfault, an out-of-memory kill or a hang costs that
backend's row and nothing else.

The parent writes the job (backend class, artifact, inputs, settings) to a file, starts
`python -m deployval.run.isolation JOB RESULT` in a new process group, waits at most `timeout`
seconds, and reads the `Execution` back. A child that dies by a signal, exits abnormally or runs out
of time becomes an `Execution.error` naming the signal or the timeout, with the last lines the child
printed. The files are written by this process for its own child (never loaded from elsewhere).

The reference gets the same protection (`probe_reference`): the model's factory and its first forward
pass run in a child first, so that a crash or hang there is a `ReferenceCrashed` error and not the end
of this process; the reference then runs in this process as well, where its trace and activation
ranges are recorded for the rows.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
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

from ..backends.base import Runner
from ..errors import DeployvalError, ExitCode, UsageError
from ..export.artifacts import MODULE, Artifact
from ..model.spec import ModelSpec, RunConfig
from ..progress import Progress
from .execution import Execution

LOG_TAIL_LINES = 6


class ReferenceCrashed(DeployvalError):
    """The reference run, in its own process, died by a signal, exited without a result or ran out of
    time: nothing can be judged, and the run says so instead of dying with it."""

    exit_code = ExitCode.BACKEND


# Children running now (process group id -> their scratch directory): a run that is stopped at once
# (interrupt.py) ends them first, so no isolated backend outlives its run.
RUNNING: dict[int, Path] = {}


def stop_children() -> None:
    """Kill every isolated child still running (its whole process group) and remove its files."""
    for pid, tmp in list(RUNNING.items()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
        RUNNING.pop(pid, None)


def execute_isolated(
    runner_cls: type[Runner], artifact: Artifact, precision: str, device: str, options: Mapping[str, Any],
    feeds: Mapping[str, np.ndarray], config: RunConfig, spec: ModelSpec, *, timeout_s: float | None,
    progress: Progress | None = None, label: str = "", trust_checkpoint: bool = False,
    replica: Any = None,
) -> Execution:
    """A row's execution in a child process. For the in-memory module, `replica` (replica.py) carries the
    driver's tensors and digest: the child judges the module the reference ran, or says why it cannot."""
    progress = progress or Progress()
    label = label or f"{runner_cls.name} {precision}"
    job = {
        "kind": "backend",
        "runner": f"{runner_cls.__module__}:{runner_cls.__qualname__}",
        "artifact": replace(artifact, obj=None),
        "precision": precision,
        "device": device,
        "options": dict(options),
        "feeds": dict(feeds),
        "config": config,
        "spec": spec if artifact.kind == MODULE else None,
        "trust_checkpoint": trust_checkpoint,
        "replica": replica if artifact.kind == MODULE else None,
    }
    start = time.perf_counter()
    try:
        with progress.step(f"{label} in its own process"):
            execution: Execution = _run_child(job, label, timeout_s)
    except _ChildFailed as exc:
        return Execution(error=str(exc))
    execution.seconds["isolated_process"] = time.perf_counter() - start
    execution.details["isolated"] = True
    return execution


def probe_reference(spec: ModelSpec, feeds: Mapping[str, np.ndarray], config: RunConfig, *,
                    trust_checkpoint: bool = False, progress: Progress | None = None) -> None:
    """Build the model and run the reference's first forward pass in a process of its own, before this
    process does: a segfault or a hang there (in the factory or the forward) raises `ReferenceCrashed`
    naming the signal or the timeout. An ordinary error is left for the run in this process to raise
    the same way it always does."""
    progress = progress or Progress()
    label = f"the reference run ({'onnxruntime' if spec.kind == 'onnx' else 'torch eager'} fp32)"
    job = {"kind": "reference", "spec": spec, "feeds": dict(feeds), "config": config,
           "trust_checkpoint": trust_checkpoint}
    try:
        with progress.step(f"{label} in its own process"):
            _run_child(job, label, config.timeout_s)
    except _ChildFailed as exc:
        if exc.serializes:
            raise ReferenceCrashed(str(exc)) from None
        progress.note(f"{label} runs in this process only: {exc}")


class _ChildFailed(Exception):
    def __init__(self, message: str, serializes: bool = True) -> None:
        super().__init__(message)
        self.serializes = serializes


def _run_child(job: dict[str, Any], label: str, timeout_s: float | None) -> Any:
    """Run `job` in `python -m deployval.run.isolation` (its own process group) and return what it wrote
    back; a crash, an exit without a result or the timeout raise `_ChildFailed` with the reason."""
    with tempfile.TemporaryDirectory(prefix="deployval-isolated-") as tmp:
        job_path, result_path, log_path = Path(tmp) / "job.pkl", Path(tmp) / "result.pkl", Path(tmp) / "child.log"
        try:
            job_path.write_bytes(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as exc:
            raise _ChildFailed(f"cannot isolate {label}: its job does not serialize ({exc}); run without "
                               "--isolate or give the model as pkg.module:factory", serializes=False) from None
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        with open(log_path, "wb") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "deployval.run.isolation", str(job_path), str(result_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
            RUNNING[child.pid] = Path(tmp)
            try:
                code = child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(child)
                raise _ChildFailed(f"{label} timed out after {timeout_s:g} s and was killed{_tail(log_path)}") from None
            except BaseException:  # interrupted (Ctrl-C, SIGTERM): the child must not outlive the run
                _kill_group(child)
                raise
            finally:
                RUNNING.pop(child.pid, None)
        if code != 0 or not result_path.exists():
            raise _ChildFailed(f"{label} {_describe_exit(code, result_path.exists())}{_tail(log_path)}")
        return pickle.loads(result_path.read_bytes())


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
    child.wait()


def _describe_exit(code: int, has_result: bool = False) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"crashed: killed by {name}{hint}"
    if code == 0 and not has_result:  # e.g. sys.exit(0) or os._exit(0) in the backend or the model
        return "crashed: its process exited with code 0 without a result"
    return f"crashed: its process exited with code {code}"


def _tail(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f"; last output: {' | '.join(lines[-LOG_TAIL_LINES:])}" if lines else ""


def _child(job_path: Path, result_path: Path) -> int:
    from ..model.loading import build_module, resolve_callable
    from .execution import execute
    from .replica import rebuild

    job = pickle.loads(job_path.read_bytes())
    if job["kind"] == "reference":
        _write_result(result_path, _reference_child(job))
        return 0
    runner_cls = resolve_callable(job["runner"], "backend")
    artifact: Artifact = job["artifact"]
    if artifact.kind == MODULE:
        try:
            if job.get("replica") is not None:
                module = rebuild(job["spec"], job["replica"], trust_checkpoint=job["trust_checkpoint"],
                                 seed=job["config"].seed)
            else:
                module = build_module(job["spec"], trust_checkpoint=job["trust_checkpoint"], seed=job["config"].seed)
        except DeployvalError as exc:  # never judge another module than the reference ran
            _write_result(result_path, Execution(error=exc.one_line(), usage_error=isinstance(exc, UsageError)))
            return 0
        artifact = replace(artifact, obj=module)
    execution = execute(runner_cls, artifact, job["precision"], job["device"], job["options"], job["feeds"],
                        job["config"])
    _write_result(result_path, execution)
    return 0


def _reference_child(job: dict[str, Any]) -> str:
    """The model's factory and the reference's first forward pass, as the run in the parent does them:
    '' when they worked, else the error (the parent raises it itself, the same way as without isolation)."""
    from ..errors import first_line
    from ..model.loading import build_module
    from .reference import reference_runner, run_reference

    spec: ModelSpec = job["spec"]
    try:
        module = None if spec.kind == "onnx" else build_module(spec, trust_checkpoint=job["trust_checkpoint"],
                                                                         seed=job["config"].seed)
        runner = reference_runner(spec, lambda: module, job["config"])
        run_reference(runner, spec, job["feeds"], Progress())
    except DeployvalError as exc:
        return exc.one_line()
    except Exception as exc:
        return first_line(exc)
    return ""


def _write_result(result_path: Path, value: Any) -> None:
    tmp = result_path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(tmp, result_path)


if __name__ == "__main__":
    status = _child(Path(sys.argv[1]), Path(sys.argv[2]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # the result is on disk; skip the slow interpreter teardown of torch

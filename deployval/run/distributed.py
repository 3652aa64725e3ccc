"""Judging a data set on Ray (`--ray`, `--ray-address ADDR`): the distributed engine users already
run, not a scheduler of deployval's own.

The driver builds every artifact once (the compare run on the first sample) and puts each file in
Ray's object store once, keyed by its content hash; Ray Data reads the sample files and hands them to
a pool of actors, each of which loads the reference and every row once (one actor per GPU with
`num_gpus=1` on CUDA) and returns, per sample, the same `SampleVerdict` a local run computes. The
driver applies the verdicts as they stream back, so the result equals the single-process run's; a
sample whose worker was lost is retried by Ray Data, and a verdict that arrives twice counts once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import sys
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeployvalError, UsageError, first_line
from ..export.artifacts import MODULE, Artifact
from ..model.spec import ModelSpec, RunConfig, TaskSpec, Tolerance


@dataclass
class RowPlan:
    """One row as a worker rebuilds it: its backend, precision and artifact (by content hash)."""

    label: str
    backend: str
    precision: str
    kind: str
    artifact: str | None  # sha256 of the file, None for the in-memory module
    suffix: str
    options: dict[str, Any]
    tolerances: dict[str, Tolerance]


@dataclass
class JudgePlan:
    spec: ModelSpec
    config: RunConfig
    rows: list[RowPlan]
    files: dict[str, Any]  # sha256 -> object reference of the file's bytes
    task: TaskSpec | None
    scorer: Any = None
    preprocess: str | None = None
    allow_nonfinite: bool = False
    trust_checkpoint: bool = False
    output_names: tuple[str, ...] = field(default_factory=tuple)
    # torch's intra-op threads on the driver: Ray gives each actor OMP_NUM_THREADS=1, and another thread
    # count sums fp16 convolutions in another order; the same count gives the local run's numbers.
    torch_threads: int | None = None
    # the driver's module (replica.py), in the object store: every actor judges the module the reference ran
    replica: Any = None


def start(address: str | None, workers: int, logs: bool = False) -> tuple[Any, bool]:
    """Connect to the cluster at `address` ('auto' for the one `ray start` made), or start a local one
    (no dashboard); with whether this call did, and so must shut it down (`Verdicts`). Without `logs`,
    Ray keeps to errors: its INFO lines, Ray Data's progress logs and its C++ warnings would bury the
    run's own lines on stderr."""
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'deployval[ray]'") from None
    if not logs:
        quiet_ray()
    if ray.is_initialized():  # the caller's (the Python API's user) to shut down
        return ray, False
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # factories importable on the workers
    if not logs:  # the workers' C++ side too, at the level quiet_ray set (or the user's own)
        env["RAY_BACKEND_LOG_LEVEL"] = os.environ["RAY_BACKEND_LOG_LEVEL"]
    level = logging.INFO if logs else logging.ERROR
    try:
        if address:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False, logging_level=level)
        else:
            # The actors take one CPU each; reading the files needs one more, or the read never runs.
            ray.init(num_cpus=max(workers + 1, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env}, logging_level=level)
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        with contextlib.suppress(Exception):
            ray.shutdown()  # whatever the failed start left running
        raise UsageError(f"cannot start {where}: {first_line(exc)}") from None
    if not logs:
        quiet_ray()
    return ray, True


def quiet_ray() -> None:
    """Ray's and Ray Data's loggers to errors only, and no progress output (it logs a progress table every
    few seconds when stderr is not a terminal); the C++ side reads RAY_BACKEND_LOG_LEVEL at start-up."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    for name in ("ray", "ray.data", "ray._private", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.suppress(Exception):
        from ray.data import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        if hasattr(context, "enable_operator_progress_bars"):
            context.enable_operator_progress_bars = False


class Verdicts:
    """The verdicts streamed back, then Ray shut down when this process started (or joined) it: a local
    instance's GCS, raylet, dashboard and runtime-env agents and idle workers would otherwise outlive
    deployval, whose CLI leaves with os._exit and so skips Ray's own exit hook. Shut down when the
    stream ends, fails or is dropped unread."""

    def __init__(self, ray: Any, started: bool, stream: Iterable[Any]) -> None:
        self.stream = stream
        self._finalizer = weakref.finalize(self, ray.shutdown) if started else None

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self.stream
        finally:
            self.close()

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()


def plan_rows(ray: Any, rows: Sequence[tuple[str, type, str, Artifact, Mapping[str, Any], Mapping[str, Tolerance]]]
              ) -> tuple[list[RowPlan], dict[str, Any]]:
    """Each row's plan, every artifact file put in the object store once (rows sharing a file share it)."""
    files: dict[str, Any] = {}
    plans = []
    for label, cls, precision, artifact, options, tolerances in rows:
        sha = None
        if artifact.kind != MODULE and artifact.path is not None:
            path = Path(artifact.path)
            from .._util import sha256_file

            sha = artifact.sha256 or sha256_file(path)
            if sha not in files:
                files[sha] = ray.put(path.read_bytes())
        worker_options = {k: v for k, v in options.items() if k != "engine_cache_dir"}  # the driver's disk
        plans.append(RowPlan(label, cls.name, precision, artifact.kind, sha,
                             Path(artifact.path).suffix if artifact.path else "", worker_options, dict(tolerances)))
    return plans, files


class SampleJudge:
    """A Ray Data actor: the reference and every row, loaded once; a verdict per sample file."""

    def __init__(self, plan: JudgePlan) -> None:
        import ray

        from ..backends.base import get_backend
        from ..model.loading import build_module
        from .reference import reference_runner
        from .replica import rebuild

        self.plan = plan
        self.failure: DeployvalError | None = None
        self.directory = Path(tempfile.mkdtemp(prefix="deployval-worker-"))
        if plan.torch_threads:
            import torch

            torch.set_num_threads(plan.torch_threads)
        module: list[Any] = []

        def get_module() -> Any:
            if not module:
                if plan.replica is not None:
                    module.append(rebuild(plan.spec, ray.get(plan.replica), trust_checkpoint=plan.trust_checkpoint,
                                          seed=plan.config.seed, where="on a Ray worker"))
                else:
                    module.append(build_module(plan.spec, trust_checkpoint=plan.trust_checkpoint,
                                               seed=plan.config.seed))
            return module[0]

        if plan.replica is not None:
            try:
                get_module()
            except DeployvalError as exc:  # said for every sample: the driver stops the run with it
                self.failure = exc
                return
        self.reference = reference_runner(plan.spec, get_module, plan.config)
        self.reference.activate()
        self.rows = []
        for row in plan.rows:
            if row.artifact is None:
                artifact = Artifact(MODULE, obj=get_module(), input_names=plan.spec.input_names,
                                    output_names=plan.output_names)
            else:
                path = self.directory / f"{row.artifact[:16]}{row.suffix}"
                if not path.exists():
                    path.write_bytes(ray.get(plan.files[row.artifact]))
                artifact = Artifact(row.kind, path=path, sha256=row.artifact, input_names=plan.spec.input_names,
                                    output_names=plan.output_names)
            runner = get_backend(row.backend)(artifact, row.precision, plan.config.device, row.options)
            runner.activate()
            self.rows.append((row.label, runner, row.tolerances))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..model.dataset import Sample, load_sample
        from ..model.preprocess import ImagePreprocess
        from .dataset_run import SampleVerdict, verdict_of

        if self.failure is not None:
            return {"verdict": np.array([pickle.dumps(self.failure) for _ in batch["path"]], dtype=object)}
        preprocess = ImagePreprocess.parse(self.plan.preprocess, "--preprocess") if self.plan.preprocess else None
        verdicts = []
        for path, data in zip(batch["path"], batch["bytes"]):
            name = Path(str(path)).name
            local = self.directory / f"sample{Path(name).suffix}"
            local.write_bytes(bytes(data))
            try:
                feeds = load_sample(local, self.plan.spec, preprocess, allow_nonfinite=self.plan.allow_nonfinite)
            except DeployvalError as exc:
                verdicts.append(pickle.dumps((name, exc.one_line().replace(str(local), str(path)))))
                continue
            except Exception as exc:
                verdicts.append(pickle.dumps((name, first_line(exc))))
                continue
            verdict: SampleVerdict = verdict_of(Sample(name, Path(str(path)), feeds), self.reference, self.rows,
                                                self.plan.task, self.plan.scorer,
                                                allow_nonfinite=self.plan.config.allow_nonfinite,
                                                slices=self.plan.config.slices, check=self.plan.config.task_check)
            verdicts.append(pickle.dumps(verdict))
        return {"verdict": np.array(verdicts, dtype=object)}


def verdicts(ray: Any, paths: Sequence[Path], plan: JudgePlan, workers: int) -> Iterator[Any]:
    """Every sample's verdict (or (name, fault)), streamed back from the actor pool, each once."""
    dataset = ray.data.read_binary_files([str(p) for p in paths], include_paths=True, num_cpus=0.5)
    gpu = plan.config.device == "cuda"
    # Ray Data restarts a lost actor and retries its samples (its actor pools default to max_restarts=-1
    # and max_task_retries=-1); a verdict delivered twice is counted once below.
    results = dataset.map_batches(SampleJudge, fn_constructor_args=(replace(plan),), batch_size=1,
                                  compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=1 if gpu else 0,
                                  num_cpus=0 if gpu else 1)
    rows = iter(results.iter_rows())
    try:
        yield from once_per_sample(worker_failures_raised(pickle.loads(row["verdict"]) for row in rows))
    finally:  # closed while Ray is still up: left to the garbage collector, it reports to a Ray shut down
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def worker_failures_raised(delivered: Iterable[Any]) -> Iterator[Any]:
    """The verdicts, until a worker says it cannot judge at all (its module is not the driver's): that
    error is raised here, in the driver, and ends the run with its one line."""
    for verdict in delivered:
        if isinstance(verdict, DeployvalError):
            raise verdict
        yield verdict


def once_per_sample(delivered: Iterable[Any]) -> Iterator[Any]:
    """Each sample's first verdict (or (name, fault)): a retried block may deliver some twice."""
    seen: set[str] = set()
    for verdict in delivered:
        name = verdict[0] if isinstance(verdict, tuple) else verdict.sample
        if name not in seen:
            seen.add(name)
            yield verdict


def judge_remotely(session: Any, dataset: Any, first: Any, rows: Sequence[tuple[Any, Any, Mapping[str, Tolerance]]],
                   progress: Any) -> Verdicts:
    """The data set's samples after `first`, judged by a pool of Ray actors: their verdicts, streamed.
    `rows` are the judged rows (result, its runner as loaded here, tolerances): each actor rebuilds
    the runner from its class, precision, artifact and options."""
    from ..model.dataset import unusable_file
    from .dataset_run import Scorer

    if dataset.dataset is None:
        raise UsageError("--ray distributes a --dataset; a shape grid or batch check runs in this process")
    spec, config = session.spec, session.config
    with progress.step("starting Ray" if not dataset.ray_address else f"joining Ray at {dataset.ray_address}"):
        ray, started = start(dataset.ray_address, dataset.workers, dataset.ray_logs)
    try:  # Ray is shut down if what follows fails
        with progress.step("shipping the artifacts to Ray (once, by content hash)"):
            row_plans, files = plan_rows(ray, [(result.label, type(runner), runner.precision, runner.artifact,
                                                runner.options, tolerances)
                                               for result, runner, tolerances in rows if runner is not None])
        torch = sys.modules.get("torch")
        plan = JudgePlan(spec, config, row_plans, files, spec.task,
                         scorer=Scorer.of(dataset.labels, spec) if dataset.labels is not None else None,
                         preprocess=dataset.dataset.preprocess, allow_nonfinite=dataset.dataset.allow_nonfinite,
                         trust_checkpoint=session.trust_checkpoint, output_names=tuple(session.reference().outputs),
                         torch_threads=torch.get_num_threads() if torch is not None else None)
        if spec.kind != "onnx":
            with progress.step("shipping the module's weights to Ray (checked against its digest on each worker)"):
                plan.replica = ray.put(session.replica())
        paths = [p for p in dataset.dataset.files() if p != first.path]
        # What is no regular file (a dangling link, a pipe) Ray cannot read: a fault of that sample, named here.
        faults = [(p.name, unusable_file(p)) for p in paths if not p.is_file()]
        readable = [p for p in paths if p.is_file()]
        stream = verdicts(ray, readable, plan, dataset.workers) if readable else iter(())
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return Verdicts(ray, started, itertools.chain(faults, stream))

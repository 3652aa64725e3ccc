"""One model with one input set: what every analysis (compare, export, debug, precision, the sweep)
sets up before it starts.

Each entry point used to resolve its inputs, build the module and digest it on its own, and the copies
drifted (some dropped `allow_nonfinite`). A `Session` does that once, the same way for all of them:
the resolved spec, the feeds with their source, seed and digests, the lazily built module and its
digest, device and versions, calibration data and the artifact store.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._util import library_versions, timed_import
from ..errors import first_line
from ..export.store import ArtifactStore
from ..judge.record import RunRecord
from ..model import inputs as inputs_mod
from ..model.dataset import Dataset
from ..model.spec import ModelSpec, RunConfig
from ..progress import Progress
from .reference import ReferenceRun


class Session:
    """A model and its inputs, resolved once. The spec follows the shapes of given inputs; the module
    is built on first use (ONNX specs never need it), so a run that only reads files stays cheap."""

    def __init__(
        self,
        spec: ModelSpec,
        config: RunConfig | None = None,
        inputs: Mapping[str, np.ndarray] | Path | str | None = None,
        *,
        allow_nonfinite: bool = False,
        trust_checkpoint: bool = False,
        progress: Progress | None = None,
        calibration: list[dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.config = config or RunConfig()
        # int8 calibration samples where the config names no --calibration directory (debug of a data
        # set's sample: the set's first sample, which compare calibrates on); None: the run's inputs
        self._calibration_samples = calibration
        self.progress = progress or Progress()
        self.trust_checkpoint = trust_checkpoint
        self.timings: dict[str, Any] = {}
        self.parameters: int | None = None  # set when the module is built
        self._module: Any = None
        self._built = False
        self._model_digest: str | None = None
        self._replica: Any = None
        self._reference: ReferenceRun | None = None
        self.spec, self.feeds, self.inputs_source, self.seed = resolve_inputs(spec, self.config, inputs,
                                                                             allow_nonfinite)
        self.inputs_digest = inputs_mod.digest(self.feeds)

    @property
    def input_digests(self) -> dict[str, str]:
        """Each input's own sha256, for reports that list the inputs one by one."""
        return {i.name: inputs_mod.digest({i.name: self.feeds[i.name]}) for i in self.spec.inputs}

    def inputs_info(self) -> list[dict[str, Any]]:
        """The input specs as reports record them, each with its digest."""
        digests = self.input_digests
        return [{**i.to_dict(), "sha256": digests[i.name]} for i in self.spec.inputs]

    def module(self) -> Any:
        """The PyTorch module, built (and timed) on first call; torch's import is counted as an import."""
        if not self._built:
            from ..model.loading import build_module, parameter_count

            timed_import("torch")
            with self.progress.step(f"building {self.spec.name}"):
                start = time.perf_counter()
                self._module = build_module(self.spec, trust_checkpoint=self.trust_checkpoint, seed=self.config.seed)
                self.timings["model_build_s"] = time.perf_counter() - start
            self._built = True
            self.parameters = parameter_count(self._module)
        return self._module

    @property
    def model_digest(self) -> str:
        """What the cached artifacts are keyed by: the module's digest, or the ONNX file's with its
        external data files (deployval/model/digest.py)."""
        if self._model_digest is None:
            if self.spec.kind != "onnx":
                from ..model.loading import module_digest

                start = time.perf_counter()
                self._model_digest = module_digest(self.spec, self.module())
                self.timings["model_digest_s"] = time.perf_counter() - start
            else:
                from ..export.onnx_io import onnx_file_digest

                self._model_digest = onnx_file_digest(Path(self.spec.path or ""))
        return self._model_digest

    def replica(self) -> Any:
        """The module as another process must rebuild it (replica.py): its tensors and digest, captured
        once; None for an ONNX file, which other processes read as it is."""
        if self.spec.kind == "onnx":
            return None
        if self._replica is None:
            from .replica import capture

            self._replica = capture(self.spec, self.module(), self.model_digest)
        return self._replica

    def device_info(self) -> dict[str, Any]:
        return device_info(self.config.device)

    def library_versions(self) -> dict[str, str | None]:
        return library_versions()

    def run_record(self, command: str) -> RunRecord:
        """The header every report starts with, filled here for all of them: the model (with its
        parameter count once the module is built), the inputs with their digests, device and versions."""
        model = self.spec.to_dict()
        if self.parameters is not None:
            model["parameters"] = self.parameters
        return RunRecord(command=command, model=model, inputs=self.inputs_info(), seed=self.seed,
                         inputs_source=self.inputs_source, device=self.device_info(),
                         versions=self.library_versions())

    def calibration(self) -> list[dict[str, np.ndarray]]:
        """The int8 calibration samples the config names, or those the session was given."""
        if self.config.calibration is None and self._calibration_samples is not None:
            return list(self._calibration_samples)
        return load_calibration(self.spec, self.config)

    def store(self, output_names: tuple[str, ...], reproduce: str | None = None) -> ArtifactStore:
        """The artifact store for this model and these inputs; the caller closes it."""
        extra: dict[str, Any] = {} if reproduce is None else {"reproduce": reproduce}
        return ArtifactStore(
            self.spec, self.feeds, self.config, module=self.module, output_names=output_names,
            model_digest=self.model_digest, inputs_digest=self.inputs_digest, progress=self.progress,
            calibration=self.calibration if self.config.calibration is not None or self._calibration_samples is not None
            else None, **extra,
        )

    def backend_options(self, store: ArtifactStore) -> dict[str, Any]:
        return backend_options(self.spec, self.config, store)

    def reference(self, *, ranges: list[Any] | None = None, trace: bool = False,
                  then: Callable[[Any, Mapping[str, np.ndarray], float], None] | None = None) -> ReferenceRun:
        """The reference run every row is judged against, run once and kept: its outputs, and what the
        first call asked the same pass to record (see reference.run_reference). With --isolate or
        --timeout the factory and the first forward pass run in a process of their own first, so a
        crash or a hang there raises isolation.ReferenceCrashed instead of ending this process."""
        if self._reference is None:
            from .reference import reference_runner, run_reference

            if self.config.isolate or self.config.timeout_s is not None:
                from .isolation import probe_reference

                probe_reference(self.spec, self.feeds, self.config, trust_checkpoint=self.trust_checkpoint,
                                progress=self.progress)
            start = time.perf_counter()
            runner = reference_runner(self.spec, self.module, self.config)
            self._reference = run_reference(runner, self.spec, self.feeds, self.progress, ranges=ranges, trace=trace,
                                            then=then, repeat=self.config.repeat)
            self.timings["reference_s"] = self._reference.seconds
            self.timings["reference_total_s"] = time.perf_counter() - start
        return self._reference

    @property
    def reference_outputs(self) -> dict[str, np.ndarray]:
        return self.reference().outputs

    def use_reference(self, outputs: Mapping[str, np.ndarray]) -> None:
        """Judge against these outputs (golden outputs of a file) instead of running the reference."""
        from .reference import ReferenceRun

        self._reference = ReferenceRun(dict(outputs), 0.0)


def resolve_inputs(spec: ModelSpec, config: RunConfig, inputs: Mapping[str, np.ndarray] | Path | str | None,
                   allow_nonfinite: bool = False) -> tuple[ModelSpec, dict[str, np.ndarray], str, int | None]:
    """(spec, feeds, source, seed): a file is loaded and checked, a mapping checked, and the spec follows
    their shapes; without inputs, seeded random ones of the spec's (checked) shapes."""
    if isinstance(inputs, (str, Path)):
        loaded = inputs_mod.load_inputs(Path(inputs), spec.inputs)
        feeds = inputs_mod.check_inputs(loaded, spec.inputs, exact_shapes=False, allow_nonfinite=allow_nonfinite,
                                        source=str(inputs))
        source, seed = str(inputs), None
    elif inputs is not None:
        feeds = inputs_mod.check_inputs(inputs, spec.inputs, exact_shapes=False, allow_nonfinite=allow_nonfinite,
                                        source="inputs")
        source, seed = "given", None
    else:
        for input_spec in spec.inputs:
            input_spec.check_shape(input_spec.shape)
        return spec, inputs_mod.make_inputs(spec.inputs, config.seed), f"random (seed {config.seed})", config.seed
    spec = spec.with_input_shapes({k: tuple(v.shape) for k, v in feeds.items()})
    return spec, feeds, source, seed


def backend_options(spec: ModelSpec, config: RunConfig, store: ArtifactStore) -> dict[str, Any]:
    """What runners may need beyond their artifact: the user's backend settings, the input specs
    (shape profiles) and where to cache engines."""
    options: dict[str, Any] = dict(config.backend_options)
    options["input_specs"] = spec.inputs
    options["keep_fp32"] = config.keep_fp32  # torch eager fp16 keeps the same modules in fp32 as the ONNX artifact
    options["engine_cache_dir"] = store.directory / "engines" if config.use_cache else None
    if spec.kind == "torchscript" and spec.arguments:
        options["forward_arguments"] = dict(spec.arguments)  # the file as shipped, called with --arg values
    return options


def load_calibration(spec: ModelSpec, config: RunConfig) -> list[dict[str, np.ndarray]]:
    """The int8 calibration samples `config` names (arrays, or images through its preprocessing)."""
    from ..model.calibration import load_calibration as load
    from ..model.preprocess import ImagePreprocess

    preprocess = ImagePreprocess.parse(config.calibration_preprocess) if config.calibration_preprocess else None
    return load(Path(config.calibration or ""), spec, limit=config.calibration_limit, preprocess=preprocess)


def device_info(device: str) -> dict[str, Any]:
    """Where the run happened, for the report: platform, CPU, and on CUDA the GPU and its capability."""
    info: dict[str, Any] = {"device": device, "platform": platform.platform(), "machine": platform.machine(),
                            "cpu": _cpu_name(), "cpu_count": os.cpu_count()}
    if device == "cuda":
        try:
            import torch

            index = torch.cuda.current_device()
            info["gpu"] = torch.cuda.get_device_name(index)
            info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(index)))
            info["cuda"] = torch.version.cuda
        except Exception as exc:
            info["gpu_error"] = first_line(exc)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def dataset_calibration(dataset: Dataset, spec: ModelSpec, config: RunConfig,
                        allow_nonfinite: bool = False) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """What `compare --dataset` calibrates int8 on when no --calibration is given: the run's inputs, that
    is the data set's first usable sample (Dataset.first), read as the run reads it. Returns its file
    and the samples, so that `debug` of any sample builds the same int8 artifact as compare."""
    path, _faults, run_inputs = dataset.first(spec)
    _spec, feeds, _source, _seed = resolve_inputs(spec, config, run_inputs, allow_nonfinite)
    return path, [feeds]

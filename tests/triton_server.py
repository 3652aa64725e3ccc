"""A real Triton Inference Server on 127.0.0.1 for the triton backend's tests.

PyTriton's wheel bundles Triton's `tritonserver` with its Python backend (no ONNX Runtime backend), and
needs numpy<2, so the server runs from its own environment (`make install` makes `.venv-triton`;
`DEPLOYVAL_TRITON_ENV` points elsewhere). Each served model is a Python-backend model that runs an ONNX
file with ONNX Runtime, optionally with a planted error. Free ports are chosen at start, the server listens
on loopback only, and it is stopped by its process group, its shared-memory leftovers removed.

Two facts this rests on (PyTriton 0.7.0, Triton 2.51): the Python backend's stub embeds the interpreter
found first on PATH (so the environment's bin/ goes first), and it loads that interpreter's libpython, so
the environment's LIBDIR goes first on LD_LIBRARY_PATH (a distribution's libpython of another patch
release fails with "'_thread.RLock' object has no attribute '_recursion_count'").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_ENV = Path(os.environ.get("DEPLOYVAL_TRITON_ENV", ROOT / ".venv-triton"))
SHM = Path("/dev/shm")

ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16", 6: "TYPE_INT32", 7: "TYPE_INT64",
              9: "TYPE_BOOL", 2: "TYPE_UINT8", 3: "TYPE_INT8"}

MODEL_PY = '''\
"""Serves an ONNX file with ONNX Runtime; `planted_error` (a config parameter) adds a constant to the
first half of the first output's last axis, as a deployment bug would."""
import json
from pathlib import Path

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime

        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        self.planted = float(parameters.get("planted_error", {}).get("string_value", "0"))
        here = Path(args["model_repository"]) / args["model_version"]
        self.session = onnxruntime.InferenceSession(str(here / "model.onnx"), providers=["CPUExecutionProvider"])
        self.inputs = [(i["name"], s.name) for i, s in zip(config["input"], self.session.get_inputs())]
        self.outputs = [(o["name"], s.name) for o, s in zip(config["output"], self.session.get_outputs())]

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {ours: pb_utils.get_input_tensor_by_name(request, served).as_numpy()
                     for served, ours in self.inputs}
            results = self.session.run([ours for _, ours in self.outputs], feeds)
            if self.planted:
                first = results[0].copy()
                first[..., : max(1, first.shape[-1] // 2)] += self.planted
                results[0] = first
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(served, result) for (served, _), result in zip(self.outputs, results)]))
        return responses
'''


@dataclass(frozen=True)
class ServerFiles:
    """What the server environment provides, read from its own interpreter."""

    python: Path
    tritonserver: Path
    backend: Path  # the Python backend's directory in the wheel
    stub: Path  # the stub built for the environment's Python version
    libraries: tuple[Path, ...]  # the wheel's bundled libraries and the interpreter's LIBDIR


PROBE = """
import json, sys, sysconfig
from pathlib import Path
import pytriton
root = Path(pytriton.__file__).parent
print(json.dumps({"root": str(root / "tritonserver"), "libs": str(root.parent / "nvidia_pytriton.libs"),
                  "version": f"{sys.version_info[0]}.{sys.version_info[1]}",
                  "libdir": sysconfig.get_config_var("LIBDIR") or "",
                  "shared": bool(sysconfig.get_config_var("Py_ENABLE_SHARED"))}))
"""


def locate() -> tuple[ServerFiles | None, str]:
    """The server's files, or why there are none (the tests skip with it)."""
    python = SERVER_ENV / "bin" / "python"
    if not python.exists():
        return None, f"no Triton server environment at {SERVER_ENV} (make install makes it)"
    probe = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return None, f"the Triton server environment cannot import pytriton: {probe.stderr.strip()[-300:]}"
    found = json.loads(probe.stdout)
    if not found["shared"]:
        return None, "the server environment's Python has no shared libpython, which Triton's Python backend loads"
    root = Path(found["root"])
    files = ServerFiles(python, root / "bin" / "tritonserver", root / "backends" / "python",
                        root / "python_backend_stubs" / found["version"] / "triton_python_backend_stub",
                        (Path(found["libdir"]), Path(found["libs"])))
    missing = [p for p in (files.tritonserver, files.backend, files.stub) if not p.exists()]
    if missing:
        return None, f"PyTriton's server files are missing: {', '.join(map(str, missing))}"
    return files, ""


def config_pbtxt(name: str, onnx_path: Path, planted_error: float = 0.0, renamed: dict[str, str] | None = None) -> str:
    """A Python-backend model's config, its tensors read from the ONNX file (dynamic dims as -1) and named
    as `renamed` says (a served model's names need not be the exporter's)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def tensors(values) -> str:
        items = []
        for value in values:
            tensor = value.type.tensor_type
            dims = [str(d.dim_value) if d.HasField("dim_value") else "-1" for d in tensor.shape.dim]
            served = (renamed or {}).get(value.name, value.name)
            items.append(f'{{ name: "{served}" data_type: {ONNX_TYPES[tensor.elem_type]} '
                         f'dims: [ {", ".join(dims)} ] }}')
        return ",\n  ".join(items)

    inputs = [v for v in graph.input if v.name not in initializers]
    text = (f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
            f"input [\n  {tensors(inputs)}\n]\noutput [\n  {tensors(graph.output)}\n]\n"
            "instance_group [ { kind: KIND_CPU count: 1 } ]\n")
    if planted_error:
        text += f'parameters: {{ key: "planted_error" value: {{ string_value: "{planted_error}" }} }}\n'
    return text


def add_model(repository: Path, name: str, onnx_path: Path, planted_error: float = 0.0,
              renamed: dict[str, str] | None = None) -> None:
    """`name` in `repository`, version 1, serving `onnx_path`."""
    version = repository / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, version / "model.onnx")
    (version / "model.py").write_text(MODEL_PY)
    (repository / name / "config.pbtxt").write_text(config_pbtxt(name, onnx_path, planted_error, renamed))


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class TritonServer:
    """`tritonserver --model-repository DIR` on 127.0.0.1, HTTP and gRPC on free ports, metrics off."""

    def __init__(self, files: ServerFiles, repository: Path, workdir: Path) -> None:
        self.files, self.repository, self.workdir = files, repository, workdir
        self.process: subprocess.Popen | None = None
        self.log = workdir / "tritonserver.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    def _backends(self) -> Path:
        """The Python backend with the stub for the environment's Python beside it, as Triton expects."""
        backends = self.workdir / "backends" / "python"
        backends.mkdir(parents=True, exist_ok=True)
        for item in self.files.backend.iterdir():
            if item.is_file() and not (backends / item.name).exists():
                (backends / item.name).symlink_to(item)
        stub = backends / self.files.stub.name
        if not stub.exists():
            stub.symlink_to(self.files.stub)
        return backends.parent

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.files.python.parent}:{env.get('PATH', '')}"
        libraries = ":".join(str(p) for p in self.files.libraries)
        env["LD_LIBRARY_PATH"] = f"{libraries}:{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else libraries
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(name, None)  # the test runner's own environment is not the server's
        return env

    def start(self, timeout_s: float = 90.0) -> TritonServer:
        self.shm_before = set(SHM.glob("triton_python_backend_shm_region_*")) if SHM.exists() else set()
        self.http_port, self.grpc_port = free_ports(2)
        command = [str(self.files.tritonserver), "--model-repository", str(self.repository),
                   "--backend-directory", str(self._backends()), "--http-address", "127.0.0.1",
                   "--http-port", str(self.http_port), "--grpc-address", "127.0.0.1", "--grpc-port",
                   str(self.grpc_port), "--allow-metrics", "false", "--exit-timeout-secs", "5"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self._environment(),
                                            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"tritonserver was not ready in {timeout_s:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if SHM.exists():
            for leftover in set(SHM.glob("triton_python_backend_shm_region_*")) - self.shm_before:
                leftover.unlink(missing_ok=True)

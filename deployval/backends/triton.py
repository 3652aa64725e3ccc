"""The model as served: a Triton Inference Server (or any server of the KServe V2 protocol that Triton,
KServe and MLServer share), asked over HTTP or gRPC with NVIDIA's `tritonclient`.

The last question a release pipeline asks is whether the model in staging computes what the PyTorch
model computes; this row answers it with the run's own inputs, judged like any other row, its latency
the request's round trip. Nothing is built here: the server serves what it was given, so the row's
precision names the tolerance it is judged by, not an arithmetic this process chose (a caveat says so).

What would make a wrong verdict look right is refused: a model that is not ready, inputs or outputs
that match the reference's neither by name nor by count, a served version that changes during the run
(a reload mid-run would mix two models' outputs in one row). Inputs and outputs named otherwise than the
reference's are matched by position, and the row says so.

API checked against tritonclient 2.73 (tritonclient/http/_client.py, tritonclient/grpc/_client.py):
InferenceServerClient(url="host:port", ssl=...), is_server_live(), is_model_ready(name, version),
get_server_metadata(), get_model_metadata(name, version) (gRPC: as_json=True), get_model_repository_index(),
infer(name, inputs, model_version=, outputs=, headers=) -> result.as_numpy(name), result.get_response();
InferInput(name, shape, datatype).set_data_from_numpy(array[, binary_data]), InferRequestedOutput(name[,
binary_data]); tritonclient.utils.triton_to_np_dtype("FP32").
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..errors import BackendError, UsageError, first_line
from ..export.artifacts import SERVED
from .base import Runner

SCHEMES = {"http": ("http", False), "https": ("http", True), "grpc": ("grpc", False), "grpcs": ("grpc", True)}


@dataclass(frozen=True)
class Endpoint:
    """Where the served model answers: protocol, `host:port` and whether TLS is used."""

    protocol: str
    address: str
    ssl: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url.strip())
        if parts.scheme not in SCHEMES or not parts.netloc:
            raise UsageError(f"triton.url takes http://HOST:PORT, https://..., grpc://HOST:PORT or grpcs://..., "
                             f"not '{url}'")
        if parts.path.strip("/"):
            raise UsageError(f"triton.url names the server only (http://HOST:PORT), not a path: '{url}' "
                             "(the model is triton.model)")
        protocol, ssl = SCHEMES[parts.scheme]
        return cls(protocol, parts.netloc, ssl)


def match_names(ours: Sequence[str], served: Sequence[str], what: str) -> tuple[dict[str, str], bool]:
    """{our name: served name}, and whether the match is by position (the names differ). A match that
    cannot be made is an error: feeding or judging the wrong tensor would be a verdict on nothing."""
    if set(ours) <= set(served) and (what == "output" or set(ours) == set(served)):
        return {name: name for name in ours}, False
    if len(ours) == len(served):
        return dict(zip(ours, served)), True
    raise BackendError(f"the served model's {what}s ({', '.join(served) or 'none'}) match the reference's "
                       f"({', '.join(ours)}) neither by name nor by count")


class TritonRunner(Runner):
    name: ClassVar[str] = "triton"
    description: ClassVar[str] = "the model as a Triton / KServe V2 server serves it (--backend-option triton.url=...)"
    # The server computes as it was configured: each precision is the tolerance the served model is judged by.
    artifacts: ClassVar[Mapping[str, str]] = {"fp32": SERVED, "fp16": SERVED, "bf16": SERVED, "int8": SERVED}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")  # the run's device is the reference's; the server has its own

    @dataclass(frozen=True)
    class Options:
        """Where the served model is (`--backend-option triton.FIELD=VALUE`)."""

        url: str = field(default="", metadata={"help": "the server: http://HOST:PORT or grpc://HOST:PORT "
                                                       "(https://, grpcs:// for TLS)"})
        model: str = field(default="", metadata={"help": "the served model's name"})
        version: str = field(default="", metadata={"help": "the model version to ask for (default: the server's "
                                                           "version policy)"})
        timeout_s: float = field(default=60.0, metadata={"help": "seconds a request may take"})
        binary: bool = field(default=True, metadata={"help": "HTTP tensors in Triton's binary extension (false: "
                                                             "plain KServe V2 JSON, for KServe or MLServer)"})
        auth_env: str = field(default="", metadata={"help": "an environment variable whose value is sent as the "
                                                            "Authorization header (the value is never reported)"})

        def __post_init__(self) -> None:
            if not self.url or not self.model:
                raise UsageError("the triton backend needs the served model: --backend-option "
                                 "triton.url=http://HOST:PORT --backend-option triton.model=NAME")
            Endpoint.parse(self.url)
            if self.timeout_s <= 0:
                raise UsageError(f"triton.timeout_s must be > 0, not {self.timeout_s}")
            if self.auth_env and self.auth_env not in os.environ:
                raise UsageError(f"triton.auth_env names ${self.auth_env}, which is not set")

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        if importlib.util.find_spec("tritonclient") is None:
            return False, "tritonclient is not installed (pip install 'deployval[triton]')"
        return True, ""

    @classmethod
    def caveats(cls, precision: str, device: str) -> list[str]:
        return [f"the served model computes as its server was configured: {precision} is the tolerance it is "
                "judged by, and latency is the request's round trip"]

    def activate_impl(self) -> None:
        options = self.backend_options
        self.endpoint = Endpoint.parse(options.url)
        self.headers = {"Authorization": os.environ[options.auth_env]} if options.auth_env else None
        try:
            self.client = self._client()
            if not self.client.is_server_live(headers=self.headers):
                raise BackendError(f"the server at {options.url} is not live")
            if not self.client.is_model_ready(options.model, options.version, headers=self.headers):
                raise BackendError(f"model '{options.model}'{self._version_text()} is not ready on {options.url} "
                                   f"({self._served_models()})")
            server = self._json(self.client.get_server_metadata(headers=self.headers))
            metadata = self._json(self.client.get_model_metadata(options.model, options.version,
                                                                 headers=self.headers))
        except BackendError:
            raise
        except Exception as exc:  # refused connections, TLS, protocol errors: the row says which
            raise BackendError(f"cannot reach model '{options.model}' at {options.url}: {first_line(exc)}") from None
        self.served_inputs = {t["name"]: t for t in metadata.get("inputs", [])}
        served_outputs = [t["name"] for t in metadata.get("outputs", [])]
        self.input_map, by_position_in = match_names(self.input_names, list(self.served_inputs), "input")
        self.output_map, by_position_out = match_names(self.output_names, served_outputs, "output")
        for moved, mapping, what in ((by_position_in, self.input_map, "inputs"),
                                     (by_position_out, self.output_map, "outputs")):
            if moved:
                pairs = ", ".join(f"{ours} -> {theirs}" for ours, theirs in mapping.items())
                self.warnings.append(f"the served model's {what} are named otherwise; matched by position: {pairs}")
        self.answered_version: str | None = None
        module, binary = self._module(), self._binary()  # what every request asks for, made once
        self.requested = [module.InferRequestedOutput(theirs, binary_data=binary) if binary is not None
                          else module.InferRequestedOutput(theirs) for theirs in self.output_map.values()]
        self.details.update(protocol=self.endpoint.protocol, url=options.url, model=options.model,
                            server=f"{server.get('name', 'server')} {server.get('version', '')}".strip(),
                            platform=metadata.get("platform", ""), versions=list(metadata.get("versions", [])))

    def deactivate_impl(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            with contextlib.suppress(Exception):  # a server gone by now has nothing left to release
                client.close()
            del self.client

    def input_dtypes(self) -> Mapping[str, str]:
        from tritonclient.utils import triton_to_np_dtype

        dtypes = {}
        for ours, theirs in self.input_map.items():
            datatype = self.served_inputs[theirs]["datatype"]
            dtype = triton_to_np_dtype(datatype)
            if dtype is None:
                raise BackendError(f"the served input '{theirs}' is {datatype}, which deployval cannot send")
            dtypes[ours] = getattr(dtype, "__name__", str(dtype))
        return dtypes

    def infer_impl(self, feeds: Mapping[str, Any]) -> Any:
        module, binary = self._module(), self._binary()
        inputs = []
        for ours, theirs in self.input_map.items():
            array = feeds[ours]
            tensor = module.InferInput(theirs, list(array.shape), self.served_inputs[theirs]["datatype"])
            if binary is None:
                tensor.set_data_from_numpy(array)
            else:
                tensor.set_data_from_numpy(array, binary_data=binary)
            inputs.append(tensor)
        extra = {"client_timeout": self.backend_options.timeout_s} if self.endpoint.protocol == "grpc" else {}
        try:
            result = self.client.infer(self.backend_options.model, inputs, model_version=self.backend_options.version,
                                       outputs=self.requested, headers=self.headers, **extra)
        except Exception as exc:
            raise BackendError(f"the server refused the request: {first_line(exc)}") from None
        response = result.get_response()  # HTTP: the JSON header; gRPC: the message (not converted: it holds the data)
        self._check_version(response.get("model_version", "") if isinstance(response, Mapping)
                            else response.model_version)
        return {ours: result.as_numpy(theirs) for ours, theirs in self.output_map.items()}

    def to_host(self, outputs: Any) -> dict[str, Any]:
        import numpy as np

        for name, value in outputs.items():
            if value is None:
                raise BackendError(f"the server's response has no output '{self.output_map[name]}'")
        return {name: np.array(value, copy=True) for name, value in outputs.items()}

    # ------------------------------------------------------------------ helpers
    def _module(self) -> Any:
        if self.endpoint.protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        return module

    def _binary(self) -> bool | None:
        """HTTP: whether tensors travel in Triton's binary extension; gRPC: None (always binary)."""
        return self.backend_options.binary if self.endpoint.protocol == "http" else None

    def _client(self) -> Any:
        module, timeout = self._module(), self.backend_options.timeout_s
        if self.endpoint.protocol == "grpc":
            return module.InferenceServerClient(self.endpoint.address, ssl=self.endpoint.ssl)
        return module.InferenceServerClient(self.endpoint.address, ssl=self.endpoint.ssl,
                                            connection_timeout=timeout, network_timeout=timeout)

    def _json(self, message: Any) -> dict[str, Any]:
        """A response as a dict: the HTTP client gives one, the gRPC client a protobuf message."""
        if isinstance(message, Mapping):
            return dict(message)
        from google.protobuf.json_format import MessageToDict

        return MessageToDict(message, preserving_proto_field_name=True)

    def _served_models(self) -> str:
        try:
            index = self.client.get_model_repository_index(headers=self.headers)
            index = self._json(index).get("models", []) if not isinstance(index, list) else index
            ready = [f"{m.get('name')} {m.get('state', '')}".strip() for m in index]
            return "it serves " + (", ".join(ready) if ready else "no model")
        except Exception as exc:  # the index is only a hint in an error message
            return f"its model index cannot be read: {first_line(exc)}"

    def _version_text(self) -> str:
        return f" version {self.backend_options.version}" if self.backend_options.version else ""

    def _check_version(self, version: str) -> None:
        if self.answered_version is None:
            self.answered_version = version
            self.details["model_version"] = version
        elif version != self.answered_version:
            raise BackendError(f"the served model changed during the run: version {self.answered_version} answered "
                               f"first, then version {version}")

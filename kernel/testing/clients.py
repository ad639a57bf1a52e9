"""The real ``tritonclient``, over gRPC and HTTP, against a test server.

Import it as ``kernel.testing.clients``: it needs ``tritonclient[grpc,http]`` (the kernel's
``test`` extra), which ``kernel.testing`` itself does not import.

Usage::

    from kernel.testing.clients import PROTOCOLS, serving

    with serving() as serve:
        served = serve(repository)                # a server on free loopback ports
        for protocol in PROTOCOLS:
            outputs = served.infer(protocol, "add_sub", {"INPUT0": a, "INPUT1": b})
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kernel._server import InferenceServer
from kernel.tensors import datatype_of
from kernel.testing._server import RunningServer, ServerThread

__all__ = ["PROTOCOLS", "TritonClients", "infer_inputs", "serving"]

PROTOCOLS = ("grpc", "http")
"""The protocols a test runs over, as :class:`TritonClients` names them."""


def _module(protocol: str) -> Any:
    if protocol == "grpc":
        return grpcclient
    if protocol == "http":
        return httpclient
    raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")


def infer_inputs(protocol: str, arrays: Mapping[str, npt.NDArray[Any]]) -> list[Any]:
    """``tritonclient`` inputs of ``protocol`` holding ``arrays`` (datatype from each dtype:
    object, ``str`` and ``bytes`` arrays are BYTES)."""
    module = _module(protocol)
    inputs = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), datatype_of(array))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


@dataclass(frozen=True)
class TritonClients:
    """A running test server and the real ``tritonclient`` clients that talk to it.

    Each call opens a client of the protocol it is given (``"grpc"`` or ``"http"``) and closes
    it before returning.
    """

    running: RunningServer

    @property
    def server(self) -> InferenceServer:
        """The server itself, for what the protocols do not show."""
        return self.running.server

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint."""
        return self.running.http_url

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return self.running.grpc_url

    @property
    def repository(self) -> Path:
        """The (first) model repository the server serves."""
        return Path(self.server.options.model_repositories[0])

    def client(self, protocol: str) -> Any:
        """A new ``InferenceServerClient`` of ``protocol``; the caller closes it."""
        if _module(protocol) is grpcclient:
            return grpcclient.InferenceServerClient(self.grpc_url)
        return httpclient.InferenceServerClient(self.http_url)

    def infer_result(
        self, protocol: str, model: str, inputs: Mapping[str, npt.NDArray[Any]], **kwargs: Any
    ) -> Any:
        """``client.infer(model, <inputs>, **kwargs)``: the ``InferResult``, or the client's
        ``InferenceServerException`` raised."""
        client = self.client(protocol)
        try:
            return client.infer(model, infer_inputs(protocol, inputs), **kwargs)
        finally:
            client.close()

    def infer(
        self,
        protocol: str,
        model: str,
        inputs: Mapping[str, npt.NDArray[Any]],
        outputs: list[str] | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """One inference: the named outputs (else all the model answered with) by name."""
        wanted = None
        if outputs is not None:
            wanted = [_module(protocol).InferRequestedOutput(name) for name in outputs]
        result = self.infer_result(protocol, model, inputs, outputs=wanted)
        response = result.get_response()
        if protocol == "grpc":
            names = [output.name for output in response.outputs]
        else:
            names = [output["name"] for output in response["outputs"]]
        return {name: result.as_numpy(name) for name in names}

    def config(self, protocol: str, model: str) -> dict[str, Any]:
        """The served config as JSON (protobuf field names, as Triton answers)."""
        client = self.client(protocol)
        try:
            if protocol == "grpc":
                return dict(client.get_model_config(model, as_json=True)["config"])
            return dict(client.get_model_config(model))
        finally:
            client.close()

    def stream(
        self, model: str, inputs: Mapping[str, npt.NDArray[Any]], *, timeout: float = 30.0
    ) -> list[Any]:
        """Stream one request over gRPC (to a decoupled model): its results up to the final
        one, each an ``InferResult`` or, for an error response, the exception.

        :raises AssertionError: when no final response comes within 1000 responses.
        :raises queue.Empty: when a response takes longer than ``timeout`` seconds.
        """
        received: queue.Queue[Any] = queue.Queue()
        with grpcclient.InferenceServerClient(self.grpc_url) as client:
            client.start_stream(callback=lambda result, error: received.put(error or result))
            try:
                client.async_stream_infer(
                    model,
                    infer_inputs("grpc", inputs),
                    request_id="1",
                    enable_empty_final_response=True,
                )
                results: list[Any] = []
                for _ in range(1000):
                    item = received.get(timeout=timeout)
                    results.append(item)
                    if isinstance(item, Exception) or _is_final(item):
                        return results
                raise AssertionError("no final response")
            finally:
                client.stop_stream()


def _is_final(result: Any) -> bool:
    parameters = result.get_response().parameters
    return "triton_final_response" in parameters and bool(
        parameters["triton_final_response"].bool_param
    )


@contextmanager
def serving() -> Iterator[Callable[..., TritonClients]]:
    """``serve(repository, **server_options)`` for the ``with`` block: each call starts a
    :class:`~kernel.testing.ServerThread` on free loopback ports; all stop when the block ends.
    """
    with ExitStack() as stack:

        def serve(repository: Path | str | list[Path | str], **overrides: Any) -> TritonClients:
            return TritonClients(stack.enter_context(ServerThread(repository, **overrides)))

        yield serve

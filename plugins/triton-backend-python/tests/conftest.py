"""Fixtures of the Python backend's tests: model repositories and servers in both modes.

The models under ``tests/models`` (and the examples ``python_add_sub`` and ``python_repeat``)
are written the way Triton's Python-backend documentation writes them. Tests reach them through
the real ``tritonclient`` over HTTP and gRPC, on servers started for each execution mode
(``in_process``, ``process``; set for every Python model of a server with
``--backend-config=python,execution-mode=...``).
"""

from __future__ import annotations

import queue
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kernel.manager import ModelControlMode
from kernel.testing import RunningServer, ServerThread

MODELS = Path(__file__).parent / "models"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "model_repository"
"""``python_add_sub`` and ``python_repeat`` are the project's example models: tested here."""
MODES = ("in_process", "process")

SERVED = [
    "python_add_sub",
    "python_repeat",
    "python_async_repeat",
    "python_strings",
    "python_echo",
    "python_globals",
    "python_raise",
    "python_wrong_count",
    "python_auto_complete",
    "python_metrics",
    "python_loader",
    "bls_sync",
    "bls_async",
    "bls_decoupled_sync",
    "bls_shield",
]


def make_repository(root: Path, names: list[str]) -> Path:
    """A repository under ``root`` holding copies of the named test models."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = MODELS / name if (MODELS / name).is_dir() else EXAMPLES / name
        shutil.copytree(source, root / name)
    return root


@pytest.fixture(scope="module", params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """The execution mode of the module's server."""
    return str(request.param)


@pytest.fixture(scope="module")
def served(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server (explicit model control, everything loaded) over the test models."""
    repository = make_repository(tmp_path_factory.mktemp(f"repo_{mode}"), SERVED)
    with ServerThread(
        repository,
        model_control_mode=ModelControlMode.EXPLICIT,
        load_models=["*"],
        backend_config={"python": {"execution-mode": mode}},
    ) as running:
        yield running


class Helpers:
    """What the tests share (tests reach it through the ``helpers`` fixture: with
    ``--import-mode=importlib`` a test module cannot import ``conftest``)."""

    MODELS = MODELS

    @staticmethod
    def make_repository(root: Path, names: list[str]) -> Path:
        return make_repository(root, names)

    @staticmethod
    def http_infer(server: RunningServer, model: str, arrays: dict[str, Any], **kw: Any) -> Any:
        return http_infer(server, model, arrays, **kw)

    @staticmethod
    def grpc_infer(server: RunningServer, model: str, arrays: dict[str, Any], **kw: Any) -> Any:
        return grpc_infer(server, model, arrays, **kw)

    @staticmethod
    def grpc_stream(server: RunningServer, model: str, arrays: dict[str, Any]) -> list[Any]:
        return grpc_stream(server, model, arrays)


@pytest.fixture
def helpers() -> type[Helpers]:
    """Client helpers: ``helpers.http_infer(server, model, {name: array})`` and friends."""
    return Helpers


def http_inputs(arrays: dict[str, np.ndarray[Any, Any]]) -> list[httpclient.InferInput]:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == np.object_ else _datatype(array)
        item = httpclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def grpc_inputs(arrays: dict[str, np.ndarray[Any, Any]]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == np.object_ else _datatype(array)
        item = grpcclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def _datatype(array: np.ndarray[Any, Any]) -> str:
    return {
        np.dtype(np.float32): "FP32",
        np.dtype(np.int32): "INT32",
        np.dtype(np.uint32): "UINT32",
        np.dtype(np.int64): "INT64",
    }[array.dtype]


def http_infer(server: RunningServer, model: str, arrays: dict[str, Any], **kwargs: Any) -> Any:
    """Infer over HTTP; returns the ``InferResult``."""
    with httpclient.InferenceServerClient(server.http_url) as client:
        return client.infer(model, http_inputs(arrays), **kwargs)


def grpc_infer(server: RunningServer, model: str, arrays: dict[str, Any], **kwargs: Any) -> Any:
    """Infer over gRPC; returns the ``InferResult``."""
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        return client.infer(model, grpc_inputs(arrays), **kwargs)


def grpc_stream(
    server: RunningServer, model: str, arrays: dict[str, Any], timeout: float = 30.0
) -> list[Any]:
    """Stream one request to a decoupled model; returns its results up to the final one
    (each an ``InferResult``, or an exception for an error response)."""
    received: queue.Queue[Any] = queue.Queue()
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        client.start_stream(callback=lambda result, error: received.put(error or result))
        try:
            client.async_stream_infer(
                model, grpc_inputs(arrays), request_id="1", enable_empty_final_response=True
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

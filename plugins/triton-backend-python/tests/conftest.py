"""Fixtures of the Python backend's tests: model repositories and servers in both modes.

The models under ``tests/models`` (and the examples ``python_add_sub`` and ``python_repeat``)
are written the way Triton's Python-backend documentation writes them. Tests reach them through
the real ``tritonclient`` over HTTP and gRPC, on servers started for each execution mode
(``in_process``, ``process``; set for every Python model of a server with
``--backend-config=python,execution-mode=...``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel import ModelControlMode
from kernel.testing import RunningServer, ServerThread
from kernel.testing.clients import TritonClients

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
        """Infer over HTTP; returns the ``InferResult``."""
        return TritonClients(server).infer_result("http", model, arrays, **kw)

    @staticmethod
    def grpc_infer(server: RunningServer, model: str, arrays: dict[str, Any], **kw: Any) -> Any:
        """Infer over gRPC; returns the ``InferResult``."""
        return TritonClients(server).infer_result("grpc", model, arrays, **kw)

    @staticmethod
    def grpc_stream(server: RunningServer, model: str, arrays: dict[str, Any]) -> list[Any]:
        """Stream one request to a decoupled model; returns its results up to the final one."""
        return TritonClients(server).stream(model, arrays)


@pytest.fixture
def helpers() -> type[Helpers]:
    """Client helpers: ``helpers.http_infer(server, model, {name: array})`` and friends."""
    return Helpers

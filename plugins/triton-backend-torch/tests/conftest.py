"""Fixtures of the PyTorch backend tests: tiny modules built at test time (scripted, traced,
exported), model folders written from them, and servers driven through ``tritonclient``."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest
import torch
from triton_backend_torch import PyTorchBackend, PyTorchInstance, PyTorchModel

from kernel import ModelConfig, testing
from kernel.testing import write_model
from kernel.testing.clients import PROTOCOLS, TritonClients, serving


def pytest_configure(config: pytest.Config) -> None:
    # torch 2.13 deprecates every torch.jit function (script, trace, save, load) in favour of
    # torch.export; TorchScript is still what Triton's PyTorch backend serves, so the tests
    # build it and the plugin loads it. Only that deprecation notice is let through.
    config.addinivalue_line(
        "filterwarnings", r"ignore:`torch\.jit\.[a-z_]+` is deprecated:DeprecationWarning"
    )


# -- modules ---------------------------------------------------------------------------------


class AddSub(torch.nn.Module):
    """(a + b, a - b): Triton's ``simple``, served with ``INPUT__<i>``/``OUTPUT__<i>`` names."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a - b


class Classifier(torch.nn.Module):
    """x [batch, 4] -> softmax(relu(x W1) W2) [batch, 3], fixed weights (they require grad)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.hidden = torch.nn.Linear(4, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=1)


class ScaleAndSum(torch.nn.Module):
    """(x * scale, x summed over its row): exported with a dynamic batch dimension."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * scale, x.sum(dim=1, keepdim=True)


class DictModel(torch.nn.Module):
    """A dict of tensors in, a dict of tensors out."""

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"sum": features["a"] + features["b"], "product": features["a"] * features["b"]}


class InPlace(torch.nn.Module):
    """Writes into its input (``x *= 2``), as some preprocessing modules do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2)
        return x + 1


class Upper(torch.nn.Module):
    """List[str] -> the same strings upper-cased (Triton's TYPE_STRING for TorchScript)."""

    def forward(self, text: list[str]) -> list[str]:
        return [t.upper() for t in text]


def scripted(module: torch.nn.Module) -> torch.jit.ScriptModule:
    return torch.jit.script(module)


def traced(module: torch.nn.Module, *example: torch.Tensor) -> torch.jit.ScriptModule:
    """Traced with autograd on, as a user would trace it."""
    return torch.jit.trace(module, example)  # type: ignore[no-untyped-call,no-any-return]


def exported(module: torch.nn.Module, *example: torch.Tensor) -> torch.export.ExportedProgram:
    """Exported with a dynamic first (batch) dimension on every input."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    return torch.export.export(module, example, dynamic_shapes=[{0: batch} for _ in example])


def save(program: Any) -> bytes:
    """The bytes of a ``model.pt`` (TorchScript) or ``model.pt2`` (exported program)."""
    buffer = io.BytesIO()
    if isinstance(program, torch.export.ExportedProgram):
        torch.export.save(program, buffer)
    else:
        torch.jit.save(program, buffer)
    return buffer.getvalue()


def torch_tensor(array: npt.NDArray[Any]) -> torch.Tensor:
    """A tensor over a private copy of ``array``."""
    return torch.from_numpy(np.array(array))


def reference(module: torch.nn.Module, *arrays: npt.NDArray[Any]) -> Any:
    """The module called directly, on copies of the arrays, without autograd."""
    with torch.no_grad():
        return module(*map(torch_tensor, arrays))


ADD_SUB_CONFIG = """
backend: "pytorch"
max_batch_size: 8
input [
  { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 4 ] }
]
output [
  { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 4 ] }
]
"""

CLASSIFIER_CONFIG = """
platform: "pytorch_libtorch"
max_batch_size: 16
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching { }
"""


def write_torch(
    repo: Path, name: str, program: Any, config: str | None, *, file: str | None = None
) -> Path:
    """A model folder holding ``config.pbtxt`` (when given) and ``1/model.pt``/``model.pt2``."""
    default = "model.pt2" if isinstance(program, torch.export.ExportedProgram) else "model.pt"
    return write_model(repo, name, config, files={f"1/{file or default}": save(program)})


# -- serving ---------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty model repository."""
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def serve() -> Iterator[Callable[..., TritonClients]]:
    """``serve(repo, **server_options)``: a server on free loopback ports for the test."""
    with serving() as start:
        yield start


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once over gRPC and once over HTTP."""
    return str(request.param)


# -- instances without a server --------------------------------------------------------------


def unit_model(
    folder: Path,
    program: Any,
    config: ModelConfig,
    *,
    backend: PyTorchBackend | None = None,
    file: str | None = None,
) -> PyTorchModel:
    """An initialized model made the way the kernel makes it, without a server."""
    default = "model.pt2" if isinstance(program, torch.export.ExportedProgram) else "model.pt"
    return testing.unit_model(
        (backend or PyTorchBackend()).create_model,
        folder,
        config,
        files={f"1/{file or default}": save(program)},
        logger=logging.getLogger("test.torch"),
    )


def unit_instance(
    model: PyTorchModel, *, kind: str = "KIND_CPU", index: int = 0
) -> PyTorchInstance:
    """An initialized instance of ``model``."""
    return cast(PyTorchInstance, testing.unit_instance(model, kind=kind, index=index))


class Kit:
    """What the tests build modules, models and servers with (the ``kit`` fixture)."""

    AddSub = AddSub
    Classifier = Classifier
    ScaleAndSum = ScaleAndSum
    DictModel = DictModel
    InPlace = InPlace
    Upper = Upper
    ADD_SUB_CONFIG = ADD_SUB_CONFIG
    CLASSIFIER_CONFIG = CLASSIFIER_CONFIG
    scripted = staticmethod(scripted)
    traced = staticmethod(traced)
    exported = staticmethod(exported)
    save = staticmethod(save)
    reference = staticmethod(reference)
    torch_tensor = staticmethod(torch_tensor)
    write_torch = staticmethod(write_torch)
    unit_model = staticmethod(unit_model)
    unit_instance = staticmethod(unit_instance)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    """Module builders, model writers and the reference runner."""
    return Kit

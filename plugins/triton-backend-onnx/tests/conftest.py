"""Fixtures of the ONNX backend tests: models built with the ``onnx`` helper API at test time,
model folders written from them, and a served repository driven through ``tritonclient``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from triton_backend_onnx import OnnxRuntimeBackend, OnnxRuntimeInstance

from kernel import ModelConfig, testing
from kernel.testing import write_model
from kernel.testing.clients import PROTOCOLS, TritonClients, serving

OPSET = 17

_ONNX_TYPES = {"INT32": TensorProto.INT32, "FP32": TensorProto.FLOAT, "INT64": TensorProto.INT64}


def finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    """A checked model at an opset and IR version every supported onnxruntime reads."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def add_sub_model(datatype: str = "INT32", dims: int = 16, batch: bool = True) -> onnx.ModelProto:
    """INPUT0 + INPUT1 -> OUTPUT0, INPUT0 - INPUT1 -> OUTPUT1 (Triton's ``simple``)."""
    shape: list[int | str] = ["batch", dims] if batch else [dims]
    elem = _ONNX_TYPES[datatype]
    io = {n: helper.make_tensor_value_info(n, elem, shape) for n in ("INPUT0", "INPUT1")}
    out = {n: helper.make_tensor_value_info(n, elem, shape) for n in ("OUTPUT0", "OUTPUT1")}
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "add_sub",
        list(io.values()),
        list(out.values()),
    )
    return finish(graph)


def string_identity_model() -> onnx.ModelProto:
    """STRING [batch, n] -> the same strings."""
    shape: list[int | str] = ["batch", "n"]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "string_identity",
        [helper.make_tensor_value_info("INPUT0", TensorProto.STRING, shape)],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, shape)],
    )
    return finish(graph)


def mlp_model(features: int = 4, hidden: int = 8, classes: int = 3) -> onnx.ModelProto:
    """X [batch, features] -> Gemm/Relu/Gemm/Softmax -> PROB [batch, classes], fixed weights."""
    rng = np.random.default_rng(7)
    weights = [
        numpy_helper.from_array(rng.standard_normal((features, hidden)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "B1"),
        numpy_helper.from_array(rng.standard_normal((hidden, classes)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "B2"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["X", "W1", "B1"], ["H"]),
            helper.make_node("Relu", ["H"], ["A"]),
            helper.make_node("Gemm", ["A", "W2", "B2"], ["LOGITS"]),
            helper.make_node("Softmax", ["LOGITS"], ["PROB"], axis=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("PROB", TensorProto.FLOAT, ["batch", classes])],
        initializer=weights,
    )
    return finish(graph)


def run_direct(model: onnx.ModelProto, feeds: dict[str, Any]) -> dict[str, Any]:
    """The reference: the model run straight on onnxruntime."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def add_sub_config(
    datatype: str = "INT32", *, dims: str = "[ 16 ]", selector: str = 'backend: "onnxruntime"',
    max_batch_size: int = 8, extra: str = "",
) -> str:  # fmt: skip
    """A Triton ``simple``-style config for :func:`add_sub_model`."""
    t = f"TYPE_{datatype}"
    return f"""
{selector}
max_batch_size: {max_batch_size}
input [
  {{ name: "INPUT0" data_type: {t} dims: {dims} }},
  {{ name: "INPUT1" data_type: {t} dims: {dims} }}
]
output [
  {{ name: "OUTPUT0" data_type: {t} dims: {dims} }},
  {{ name: "OUTPUT1" data_type: {t} dims: {dims} }}
]
{extra}
"""


def write_onnx(
    repo: Path, name: str, model: onnx.ModelProto, config: str | None, *, file: str = "model.onnx"
) -> Path:
    """A model folder holding ``config.pbtxt`` (when given) and ``1/<file>``."""
    return write_model(repo, name, config, files={f"1/{file}": model.SerializeToString()})


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


def unit_instance(
    folder: Path,
    model: onnx.ModelProto,
    config: ModelConfig,
    *,
    kind: str = "KIND_CPU",
    backend: OnnxRuntimeBackend | None = None,
) -> OnnxRuntimeInstance:
    """An initialized instance made the way the kernel makes it, without a server."""
    made = testing.unit_model(
        (backend or OnnxRuntimeBackend()).create_model,
        folder,
        config,
        files={"1/model.onnx": model.SerializeToString()},
        logger=logging.getLogger("test.onnx"),
    )
    return cast(OnnxRuntimeInstance, testing.unit_instance(made, kind=kind))


class Kit:
    """What the tests build models and configs with (handed out by the ``kit`` fixture)."""

    finish = staticmethod(finish)
    add_sub_model = staticmethod(add_sub_model)
    string_identity_model = staticmethod(string_identity_model)
    mlp_model = staticmethod(mlp_model)
    add_sub_config = staticmethod(add_sub_config)
    run_direct = staticmethod(run_direct)
    write_onnx = staticmethod(write_onnx)
    unit_instance = staticmethod(unit_instance)
    protocols = PROTOCOLS


@pytest.fixture
def kit() -> type[Kit]:
    """Model builders, config builders and the reference runner."""
    return Kit


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once over gRPC and once over HTTP."""
    return str(request.param)

"""Fixtures of the ONNX backend tests: models built with the ``onnx`` helper API at test time,
model folders written from them, and a served repository driven through ``tritonclient``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper
from triton_backend_onnx import OnnxRuntimeBackend, OnnxRuntimeInstance, OnnxRuntimeModel

from kernel import InstanceContext, ModelConfig, ModelContext
from kernel.testing import ServerThread, write_model

OPSET = 17
PROTOCOLS = ("grpc", "http")

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


@dataclass
class Served:
    """A running server and the clients that talk to it."""

    thread: ServerThread
    http_url: str
    grpc_url: str

    def client(self, protocol: str) -> Any:
        if protocol == "grpc":
            return grpcclient.InferenceServerClient(self.grpc_url)
        return httpclient.InferenceServerClient(self.http_url)

    def infer(
        self,
        protocol: str,
        model: str,
        inputs: dict[str, npt.NDArray[Any]],
        outputs: list[str] | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """One inference through the real ``tritonclient``; the named (else all) outputs."""
        module: Any = grpcclient if protocol == "grpc" else httpclient
        tensors = []
        for name, array in inputs.items():
            datatype = "BYTES" if array.dtype == np.object_ else _wire_type(array)
            tensor = module.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = None if outputs is None else [module.InferRequestedOutput(n) for n in outputs]
        client = self.client(protocol)
        try:
            result = client.infer(model, tensors, outputs=wanted)
            response = result.get_response()
            if protocol == "grpc":
                names = [o.name for o in response.outputs]
            else:
                names = [o["name"] for o in response["outputs"]]
            return {n: result.as_numpy(n) for n in names}
        finally:
            client.close()

    def config(self, protocol: str, model: str) -> dict[str, Any]:
        """The served config as JSON (protobuf field names, as Triton answers)."""
        client = self.client(protocol)
        try:
            if protocol == "grpc":
                return dict(client.get_model_config(model, as_json=True)["config"])
            return dict(client.get_model_config(model))
        finally:
            client.close()


def _wire_type(array: npt.NDArray[Any]) -> str:
    return {"int32": "INT32", "int64": "INT64", "float32": "FP32"}[array.dtype.name]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty model repository."""
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(repo, **server_options)``: a server on free loopback ports for the test."""
    with ExitStack() as stack:

        def start(repository: Path, **overrides: Any) -> Served:
            thread = ServerThread(repository, **overrides)
            running = stack.enter_context(thread)
            return Served(thread, running.http_url, running.grpc_url)

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
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.onnx").write_bytes(model.SerializeToString())
    context = ModelContext(
        name=config.name,
        version=1,
        path=folder / "1",
        model_dir=folder,
        config=config,
        backend_config={},
        logger=logging.getLogger("test.onnx"),
        server=None,  # type: ignore[arg-type]  # these tests make no in-process calls
    )
    onnx_model = OnnxRuntimeModel(context, backend or OnnxRuntimeBackend())
    context.config = onnx_model.auto_complete_config(config)
    onnx_model.initialize()
    instance = onnx_model.create_instance(
        InstanceContext(
            name=f"{config.name}_0",
            kind=kind,
            device_id=0,
            model=context,
            logger=logging.getLogger("test.onnx.instance"),
        )
    )
    instance.initialize()
    return instance


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

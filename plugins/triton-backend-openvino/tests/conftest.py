"""Fixtures of the OpenVINO backend tests: ONNX models built with the ``onnx`` helper API at test
time, the same models converted to OpenVINO IR, the references they are compared with (OpenVINO
directly, and onnxruntime when it is installed), and a served repository driven through
``tritonclient``."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import onnx
import openvino as ov
import pytest
from onnx import TensorProto, helper, numpy_helper
from triton_backend_openvino import OpenVinoBackend, OpenVinoInstance, OpenVinoModel

from kernel import ModelConfig, testing
from kernel.config import parse_model_config
from kernel.testing import write_model
from kernel.testing.clients import PROTOCOLS, TritonClients, serving

try:
    import onnxruntime
except ImportError:  # the comparison with onnxruntime is skipped without it
    onnxruntime = None

OPSET = 17

_CORE = ov.Core()
"""One core for the references: destroying a core joins OpenVINO's threads (see the plugin's
``openvino_core``)."""

_ONNX_TYPES = {"INT32": TensorProto.INT32, "FP32": TensorProto.FLOAT}


def finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    """A checked model at an opset and IR version OpenVINO and onnxruntime both read."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def add_sub_model(datatype: str = "INT32", batch: int | str = "batch") -> onnx.ModelProto:
    """INPUT0 + INPUT1 -> OUTPUT0, INPUT0 - INPUT1 -> OUTPUT1, [batch, 16] (Triton's
    ``simple``); ``batch`` is a symbolic (dynamic) or fixed first dim."""
    shape: list[int | str] = [batch, 16]
    elem = _ONNX_TYPES[datatype]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "add_sub",
        [helper.make_tensor_value_info(n, elem, shape) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, elem, shape) for n in ("OUTPUT0", "OUTPUT1")],
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


def to_ir(model: onnx.ModelProto, xml: Path, *, batch_layout: bool = False) -> Path:
    """Convert ``model`` to OpenVINO IR (``xml`` and its ``.bin``); with ``batch_layout``, every
    input and output gets the layout ``N...`` (which auto-complete reads as "can batch").

    ``Core.read_model`` on the ONNX file is the ONNX frontend ``ov.convert_model`` runs; the
    latter also starts OpenVINO's network telemetry, which tests must not.
    """
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "model.onnx"
        source.write_bytes(model.SerializeToString())
        converted = _CORE.read_model(str(source))
    if batch_layout:
        processor = ov.preprocess.PrePostProcessor(converted)
        for port in converted.inputs:
            processor.input(port.get_any_name()).model().set_layout(ov.Layout("N..."))
        for port in converted.outputs:
            processor.output(port.get_any_name()).model().set_layout(ov.Layout("N..."))
        converted = processor.build()
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(converted, str(xml), compress_to_fp16=False)
    return xml


def write_ir(
    repo: Path, name: str, model: onnx.ModelProto, config: str | None, *, batch_layout: bool = False
) -> Path:
    """A model folder holding ``config.pbtxt`` (when given), ``1/model.xml`` and ``1/model.bin``."""
    folder = write_model(repo, name, config)
    to_ir(model, folder / "1" / "model.xml", batch_layout=batch_layout)
    return folder


def write_onnx(
    repo: Path, name: str, model: onnx.ModelProto, config: str | None, *, file: str = "model.onnx"
) -> Path:
    """A model folder holding ``config.pbtxt`` (when given) and ``1/<file>``."""
    return write_model(repo, name, config, files={f"1/{file}": model.SerializeToString()})


def run_openvino(path: Path, feeds: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """The reference: the model file run straight on OpenVINO."""
    compiled = _CORE.compile_model(str(path), "CPU")
    results = compiled(feeds)
    return {port.get_any_name(): np.asarray(results[port]) for port in compiled.outputs}


def run_onnxruntime(
    model: onnx.ModelProto, feeds: dict[str, npt.NDArray[Any]]
) -> dict[str, npt.NDArray[Any]] | None:
    """The model run on onnxruntime, or ``None`` when onnxruntime is not installed."""
    if onnxruntime is None:
        return None
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


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


def parse_config(text: str, name: str = "m") -> ModelConfig:
    """A ``ModelConfig`` from ``config.pbtxt`` text, named as its folder would name it."""
    config = parse_model_config(text, "config.pbtxt")
    config.name = config.name or name
    return config


def unit_model(
    folder: Path, config: ModelConfig, backend: OpenVinoBackend | None = None
) -> OpenVinoModel:
    """An :class:`OpenVinoModel` over ``folder/1`` made the way the kernel makes it."""
    context = testing.model_context(folder, config, logger=logging.getLogger("test.openvino"))
    return OpenVinoModel(context, backend or OpenVinoBackend())


def unit_instance(folder: Path, config: ModelConfig) -> OpenVinoInstance:
    """An initialized instance made the way the kernel makes it, without a server."""
    model = testing.unit_model(
        OpenVinoBackend().create_model, folder, config, logger=logging.getLogger("test.openvino")
    )
    return cast(OpenVinoInstance, testing.unit_instance(model))


class Kit:
    """What the tests build models and configs with (handed out by the ``kit`` fixture)."""

    finish = staticmethod(finish)
    add_sub_model = staticmethod(add_sub_model)
    mlp_model = staticmethod(mlp_model)
    to_ir = staticmethod(to_ir)
    write_ir = staticmethod(write_ir)
    write_onnx = staticmethod(write_onnx)
    run_openvino = staticmethod(run_openvino)
    run_onnxruntime = staticmethod(run_onnxruntime)
    parse_config = staticmethod(parse_config)
    unit_model = staticmethod(unit_model)
    unit_instance = staticmethod(unit_instance)
    request = staticmethod(testing.unit_request)
    answer = staticmethod(testing.final_response)
    run_instance = staticmethod(testing.run_instance)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    """Model builders, references and unit-level constructors."""
    return Kit


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once over gRPC and once over HTTP."""
    return str(request.param)

"""Build the OpenVINO example model of ``examples/model_repository``: an ONNX model built with the
``onnx`` helper API, converted to OpenVINO IR.

    python examples/build_openvino_models.py [REPOSITORY]

* ``openvino_classifier``: X (FP32 [4]) -> Gemm, Relu, Gemm, Softmax -> PROB (FP32 [3]), with a
  dynamic batch dimension (``max_batch_size: 8``). The weights are fixed arithmetic values, so the
  files are reproducible: rerunning with the same OpenVINO writes the same bytes.

The IR is ``1/model.xml`` (the graph) plus ``1/model.bin`` (the weights, kept in FP32). Its inputs
and outputs carry the layout ``N...``, which tells Triton's auto-complete that the model batches.

The conversion reads the ONNX file with OpenVINO's ONNX frontend (``Core.read_model``), the
frontend ``ov.convert_model`` uses too, and writes the IR with ``ov.save_model``:
``ov.convert_model`` also starts OpenVINO's usage telemetry, which sends events over the network
unless it was opted out of. Needs ``onnx`` and ``openvino``
(``pip install 'triton-backend-openvino[test]'``); serving needs only ``triton-backend-openvino``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import openvino as ov
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
FEATURES, HIDDEN, CLASSES = 4, 8, 3

CLASSIFIER_CONFIG = """\
name: "openvino_classifier"
backend: "openvino"
max_batch_size: 8
input [
  {
    name: "X"
    data_type: TYPE_FP32
    dims: [ 4 ]
  }
]
output [
  {
    name: "PROB"
    data_type: TYPE_FP32
    dims: [ 3 ]
  }
]
dynamic_batching { }
parameters [
  {
    key: "PERFORMANCE_HINT"
    value: { string_value: "LATENCY" }
  },
  {
    key: "NUM_STREAMS"
    value: { string_value: "1" }
  }
]
"""


def _weights(rows: int, columns: int, phase: float) -> np.ndarray:
    """Fixed, varied values in [-1, 1]: no random generator, so every numpy writes the same."""
    return np.sin(np.arange(rows * columns, dtype=np.float64) * 0.7 + phase).astype(np.float32)


def classifier_onnx() -> onnx.ModelProto:
    """X [batch, 4] -> softmax(relu(X W1 + B1) W2 + B2) [batch, 3]."""
    initializers = [
        numpy_helper.from_array(_weights(FEATURES, HIDDEN, 0.0).reshape(FEATURES, HIDDEN), "W1"),
        numpy_helper.from_array(_weights(1, HIDDEN, 1.0).reshape(HIDDEN), "B1"),
        numpy_helper.from_array(_weights(HIDDEN, CLASSES, 2.0).reshape(HIDDEN, CLASSES), "W2"),
        numpy_helper.from_array(_weights(1, CLASSES, 3.0).reshape(CLASSES), "B2"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["X", "W1", "B1"], ["H"]),
            helper.make_node("Relu", ["H"], ["A"]),
            helper.make_node("Gemm", ["A", "W2", "B2"], ["LOGITS"]),
            helper.make_node("Softmax", ["LOGITS"], ["PROB"], axis=1),
        ],
        "openvino_classifier",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("PROB", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="triton-kernel"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def onnx_to_ir(model: onnx.ModelProto, xml: Path, *, batch_layout: bool = True) -> Path:
    """Convert ``model`` to ``xml`` + its ``.bin``; with ``batch_layout``, mark every input and
    output ``N...`` (batch first). Returns ``xml``."""
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "model.onnx"
        source.write_bytes(model.SerializeToString())
        converted = ov.Core().read_model(str(source))
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


def build(repository: Path) -> list[Path]:
    """Write ``openvino_classifier`` (config, ``1/model.xml``, ``1/model.bin``) under
    ``repository``."""
    folder = repository / "openvino_classifier"
    onnx_to_ir(classifier_onnx(), folder / "1" / "model.xml")
    (folder / "config.pbtxt").write_text(CLASSIFIER_CONFIG)
    return [folder]


def main(argv: list[str]) -> int:
    repository = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "model_repository"
    for folder in build(repository):
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Build the ONNX example models of ``examples/model_repository`` with the ``onnx`` helper API.

    python examples/build_onnx_models.py [REPOSITORY]

* ``onnx_add_sub``: INPUT0 + INPUT1 -> OUTPUT0, INPUT0 - INPUT1 -> OUTPUT1, INT32 [16] with a
  dynamic batch dimension (``max_batch_size: 8``), configured like Triton's ``simple`` example.
* ``onnx_string``: a string identity, INPUT0 (TYPE_STRING) -> OUTPUT0.

The files are a few hundred bytes and byte-for-byte reproducible: rerunning rewrites the same
bytes. Needs ``onnx`` (``pip install 'triton-backend-onnx[test]'``); serving them needs only
``triton-backend-onnx``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8  # read by every onnxruntime the plugin supports

ADD_SUB_CONFIG = """\
name: "onnx_add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "INPUT0"
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "INPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
output [
  {
    name: "OUTPUT0"
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "OUTPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
dynamic_batching { }
"""

STRING_CONFIG = """\
name: "onnx_string"
backend: "onnxruntime"
max_batch_size: 8
input [
  {
    name: "INPUT0"
    data_type: TYPE_STRING
    dims: [ -1 ]
  }
]
output [
  {
    name: "OUTPUT0"
    data_type: TYPE_STRING
    dims: [ -1 ]
  }
]
"""


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="triton-kernel"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def add_sub_model() -> onnx.ModelProto:
    """INT32 [batch, 16] add and subtract."""
    shape: list[int | str] = ["batch", 16]
    tensors = {
        name: helper.make_tensor_value_info(name, TensorProto.INT32, shape)
        for name in ("INPUT0", "INPUT1", "OUTPUT0", "OUTPUT1")
    }
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "onnx_add_sub",
        [tensors["INPUT0"], tensors["INPUT1"]],
        [tensors["OUTPUT0"], tensors["OUTPUT1"]],
    )
    return _model(graph)


def string_identity_model() -> onnx.ModelProto:
    """STRING [batch, n] identity."""
    shape: list[int | str] = ["batch", "n"]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "onnx_string",
        [helper.make_tensor_value_info("INPUT0", TensorProto.STRING, shape)],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, shape)],
    )
    return _model(graph)


def build(repository: Path) -> list[Path]:
    """Write both models (config and ``1/model.onnx``) under ``repository``."""
    written = []
    for name, model, config in (
        ("onnx_add_sub", add_sub_model(), ADD_SUB_CONFIG),
        ("onnx_string", string_identity_model(), STRING_CONFIG),
    ):
        folder = repository / name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(config)
        (folder / "1" / "model.onnx").write_bytes(model.SerializeToString())
        written.append(folder)
    return written


def main(argv: list[str]) -> int:
    repository = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "model_repository"
    for folder in build(repository):
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

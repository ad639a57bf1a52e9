"""``memory_usage``: the initializers' bytes once per session, read from the file's protobuf."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from triton_backend_onnx._memory import initializer_bytes


def _bytes_onnx_counts(model: Any) -> int:
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


def test_initializer_bytes_match_what_onnx_reads(kit: Any, tmp_path: Path) -> None:
    model = kit.mlp_model(features=16, hidden=32, classes=5)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    want = (16 * 32 + 32 + 32 * 5 + 5) * 4
    assert _bytes_onnx_counts(model) == want
    assert initializer_bytes(path) == want


def test_initializer_types_and_strings(kit: Any, tmp_path: Path) -> None:
    tensors = [
        numpy_helper.from_array(np.zeros((3, 5), np.float16), "H"),
        numpy_helper.from_array(np.zeros(7, np.int64), "L"),
        numpy_helper.from_array(np.zeros((2, 2), np.bool_), "B"),
        helper.make_tensor("S", TensorProto.STRING, [2], [b"abc", b"de"]),
    ]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
        initializer=tensors,
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(kit.finish(graph).SerializeToString())
    assert initializer_bytes(path) == 3 * 5 * 2 + 7 * 8 + 4 + 5


def test_not_an_onnx_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\xff\xff\xff")
    with pytest.raises(ValueError):
        initializer_bytes(path)


def test_statistics_report_the_weights_per_session(
    kit: Any, repo: Path, serve: Callable[..., Any]
) -> None:
    model = kit.mlp_model(features=16, hidden=32, classes=5)
    config = """
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "PROB" data_type: TYPE_FP32 dims: [ 5 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
"""
    kit.write_onnx(repo, "mlp", model, config)
    served = serve(repo)
    weights = _bytes_onnx_counts(model)
    http = served.client("http").get_inference_statistics("mlp")["model_stats"][0]
    assert http["memory_usage"] == [{"type": "CPU", "id": 0, "byte_size": 2 * weights}]
    grpc = served.client("grpc").get_inference_statistics("mlp").model_stats[0]
    assert [(m.type, m.id, m.byte_size) for m in grpc.memory_usage] == [("CPU", 0, 2 * weights)]

"""``memory_usage``: the loaded modules' parameter and buffer storages, each once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from kernel.testing.clients import serving

# Classifier: Linear(4, 8) and Linear(8, 3), float32
WEIGHTS = (4 * 8 + 8 + 8 * 3 + 3) * 4
SHARED = """
parameters { key: "ENABLE_WEIGHT_SHARING" value { string_value: "true" } }
"""


class _WithBuffer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("offset", torch.ones(10, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset.float()[: x.shape[1]]


@pytest.fixture(scope="module")
def served(kit: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    repo = tmp_path_factory.mktemp("torch_memory")
    example = kit.torch_tensor(np.zeros((2, 4), np.float32))
    traced = kit.traced(kit.Classifier(), example)
    two = kit.CLASSIFIER_CONFIG + "instance_group [ { count: 2 kind: KIND_CPU } ]\n"
    kit.write_torch(repo, "two", traced, two)
    kit.write_torch(repo, "shared", traced, two + SHARED)
    exported = kit.exported(kit.Classifier(), example)
    kit.write_torch(repo, "exported", exported, kit.CLASSIFIER_CONFIG)
    kit.write_torch(repo, "no_weights", kit.scripted(kit.AddSub()), kit.ADD_SUB_CONFIG)
    buffered = """
backend: "pytorch"
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
    kit.write_torch(repo, "buffered", kit.scripted(_WithBuffer()), buffered)
    with serving() as serve:
        yield serve(repo)


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("two", 2 * WEIGHTS),  # a module per instance
        ("shared", WEIGHTS),  # ENABLE_WEIGHT_SHARING: one module for both
        ("exported", WEIGHTS),
        ("buffered", 10 * 8),  # buffers count too
    ],
)
def test_memory_usage_is_the_modules_weights(served: Any, model: str, size: int) -> None:
    http = served.client("http").get_inference_statistics(model)["model_stats"][0]
    assert http["memory_usage"] == [{"type": "CPU", "id": 0, "byte_size": size}]
    grpc = served.client("grpc").get_inference_statistics(model).model_stats[0]
    assert [(m.type, m.id, m.byte_size) for m in grpc.memory_usage] == [("CPU", 0, size)]


def test_a_module_without_weights_reports_nothing(served: Any) -> None:
    http = served.client("http").get_inference_statistics("no_weights")["model_stats"][0]
    assert http["memory_usage"] == []

"""``memory_usage``: the model's weights (its ``Constant`` bytes) once per compiled instance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

# mlp_model(16, 32, 5): W1, B1, W2, B2 in float32
WEIGHTS = (16 * 32 + 32 + 32 * 5 + 5) * 4


def test_statistics_report_the_weights_per_compiled_instance(
    kit: Any, repo: Path, serve: Callable[..., Any]
) -> None:
    mlp = kit.mlp_model(16, 32, 5)
    config = """
backend: "openvino"
max_batch_size: 8
instance_group [ {{ count: {} kind: KIND_CPU }} ]
"""
    kit.write_onnx(repo, "one", mlp, config.format(1))
    kit.write_onnx(repo, "two", mlp, config.format(2))
    kit.write_ir(repo, "ir", mlp, None, batch_layout=True)
    served = serve(repo)
    http = served.client("http")
    (one,) = http.get_inference_statistics("one")["model_stats"][0]["memory_usage"]
    assert one["type"] == "CPU" and one["id"] == 0
    # the weights, plus the few small shape constants OpenVINO's graph holds
    assert WEIGHTS <= one["byte_size"] < WEIGHTS + 512
    (ir,) = http.get_inference_statistics("ir")["model_stats"][0]["memory_usage"]
    assert WEIGHTS <= ir["byte_size"] < WEIGHTS + 512
    grpc = served.client("grpc").get_inference_statistics("two").model_stats[0]
    assert [(m.type, m.id, m.byte_size) for m in grpc.memory_usage] == [
        ("CPU", 0, 2 * one["byte_size"])
    ]

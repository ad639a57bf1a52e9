"""OpenVINO prefers KIND_CPU (as Triton's openvino backend declares): a config without
instance_group loads on the CPU even where a GPU is visible (simulated here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kernel.config import ModelInstanceGroupKind
from kernel.testing import run_server, simulated_gpus

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


async def test_default_and_auto_groups_load_on_the_cpu_with_a_gpu_visible(
    kit: Any, repo: Path
) -> None:
    mlp = kit.mlp_model()
    kit.write_ir(repo, "default", mlp, 'backend: "openvino"\n', batch_layout=True)
    auto = 'backend: "openvino"\ninstance_group [ { kind: KIND_AUTO } ]\n'
    kit.write_ir(repo, "auto", mlp, auto, batch_layout=True)
    with simulated_gpus([0]):
        async with run_server(repo, **NO_ENDPOINTS) as srv:
            for name in ("default", "auto"):
                assert srv.server.is_model_ready(name), srv.server.repository_index()
                [group] = srv.server.model_config(name).instance_group
                assert group.kind == ModelInstanceGroupKind.CPU

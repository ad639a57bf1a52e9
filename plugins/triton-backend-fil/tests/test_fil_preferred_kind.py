"""FIL prefers KIND_CPU (Triton's FIL backend declares it): a KIND_AUTO group and a config
without instance_group load on the CPU even where a GPU is visible (simulated here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kernel.config import ModelInstanceGroupKind
from kernel.testing import run_server, simulated_gpus

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


async def test_auto_and_default_groups_load_on_the_cpu_with_a_gpu_visible(
    kit: Any, trained: Any, repo: Path
) -> None:
    content = kit.model_bytes(trained.xgb_regressor, "xgboost_json")
    config = kit.fil_config(model_type="xgboost_json")
    auto = config.replace("kind: KIND_CPU count: 1", "kind: KIND_AUTO count: 2")
    default = config.replace("instance_group [ { kind: KIND_CPU count: 1 } ]", "")
    assert auto != config and default != config
    kit.write_fil(repo, "auto", auto, content, file="xgboost.json")
    kit.write_fil(repo, "default", default, content, file="xgboost.json")
    with simulated_gpus([0]):
        async with run_server(repo, **NO_ENDPOINTS) as srv:
            for name in ("auto", "default"):
                assert srv.server.is_model_ready(name), srv.server.repository_index()
                kinds = {g.kind for g in srv.server.model_config(name).instance_group}
                assert kinds == {ModelInstanceGroupKind.CPU}

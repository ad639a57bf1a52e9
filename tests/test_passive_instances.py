"""``instance_group.passive``: the instances load (and warm up) but receive no requests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np

from kernel import InferenceRequest

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}

CONFIG = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [
  { name: "idle" count: 2 kind: KIND_CPU passive: true },
  { name: "busy" count: 1 kind: KIND_CPU }
]
parameters { key: "behaviour" value { string_value: "identity" } }
parameters { key: "log_execute" value { string_value: "1" } }
"""


async def test_passive_instances_load_but_execute_nothing(
    repo: Path, tmp_path: Path, add_model: Callable[..., Path]
) -> None:
    from kernel.testing import run_server

    log = tmp_path / "events.log"
    add_model(repo, "m", CONFIG)
    options = {**NO_ENDPOINTS, "backend_config": {"kerneltest": {"lifecycle_log": str(log)}}}
    async with run_server(repo, **options) as srv:

        async def one(value: float) -> None:
            request = InferenceRequest("m", {"INPUT0": np.array([value], np.float32)})
            response = await srv.server.infer_once(request)
            assert response.error is None

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for value in range(8):
                    tg.start_soon(one, float(value))
    events = log.read_text().splitlines()
    for name in ("idle_0", "idle_1", "busy_0"):
        assert f"instance.initialize {name} KIND_CPU" in events
    executed = [e.split(" ")[1] for e in events if e.startswith("execute ")]
    assert len(executed) == 8
    assert set(executed) == {"busy_0"}

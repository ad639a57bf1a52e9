"""Ensemble ``max_inflight_requests`` and the repository API's ``unload_dependents``."""

from __future__ import annotations

from pathlib import Path

import anyio
import numpy as np
import pytest

from kernel import InferenceRequest, ModelControlMode
from kernel.testing import run_server, write_model

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}

OVERLAP_STEP = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }
]
parameters { key: "behaviour" value { string_value: "overlap" } }
parameters { key: "overlapping_batches" value { string_value: "8" } }
parameters { key: "sleep_ms" value { string_value: "50" } }
"""


def one_step_ensemble(limit: int, step: str = "step") -> str:
    return f"""
platform: "ensemble"
max_batch_size: 0
input [ {{ name: "A" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "MOST" data_type: TYPE_FP32 dims: [ 4 ] }} ]
ensemble_scheduling {{
  max_inflight_requests: {limit}
  step [ {{ model_name: "{step}" model_version: -1
    input_map {{ key: "INPUT0" value: "A" }}
    output_map {{ key: "OUTPUT0" value: "COPY" }} output_map {{ key: "OUTPUT1" value: "MOST" }} }} ]
}}
"""


@pytest.mark.parametrize(("limit", "most"), [(1, 1), (2, 2), (0, 6)])
async def test_max_inflight_requests_bounds_each_step(repo: Path, limit: int, most: int) -> None:
    write_model(repo, "step", OVERLAP_STEP)
    write_model(repo, "e", one_step_ensemble(limit))
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        seen: list[float] = []

        async def one() -> None:
            request = InferenceRequest("e", {"A": np.zeros(4, np.float32)})
            response = await srv.server.infer_once(request)
            assert response.error is None
            seen.append(float(response.outputs["MOST"][0]))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(one)
        # The step model reports how many of its requests ran at once at most.
        assert max(seen) == most
        assert len(seen) == 6


ENSEMBLE_OF_TWO = """
platform: "ensemble"
max_batch_size: 0
input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "MOST" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling { step [
  { model_name: "step" model_version: -1
    input_map { key: "INPUT0" value: "A" }
    output_map { key: "OUTPUT0" value: "COPY" } output_map { key: "OUTPUT1" value: "X" } },
  { model_name: "inner" model_version: -1
    input_map { key: "A" value: "COPY" }
    output_map { key: "MOST" value: "MOST" } }
] }
"""


@pytest.mark.parametrize("dependents", [False, True])
async def test_unload_dependents_unloads_the_composing_models(repo: Path, dependents: bool) -> None:
    write_model(repo, "step", OVERLAP_STEP)
    write_model(repo, "other_step", OVERLAP_STEP)
    write_model(repo, "inner", one_step_ensemble(0))  # a nested ensemble
    write_model(repo, "outer", ENSEMBLE_OF_TWO)
    async with run_server(
        repo, model_control_mode=ModelControlMode.EXPLICIT, **NO_ENDPOINTS
    ) as srv:
        await srv.server.load_model("outer")
        await srv.server.load_model("other_step")
        ready = {row.name for row in srv.server.repository_index(ready_only=True)}
        assert ready == {"outer", "inner", "step", "other_step"}
        await srv.server.unload_model("outer", unload_dependents=dependents)
        ready = {row.name for row in srv.server.repository_index(ready_only=True)}
        if dependents:
            assert ready == {"other_step"}  # the ensemble, its steps and its nested steps
        else:
            assert ready == {"inner", "step", "other_step"}

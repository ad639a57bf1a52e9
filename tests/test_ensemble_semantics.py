"""Ensembles as Triton runs them: absent optional inputs, partial step outputs, sequence flags
and correlation ids on every step, and each step's requests in its own model's statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kernel import InferenceRequest, RequestFlags
from kernel.testing import run_server, write_model

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}

IDENTITY_WITH_OPTIONAL = """
backend: "kerneltest"
max_batch_size: 0
input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] optional: true }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }
]
parameters { key: "behaviour" value { string_value: "identity" } }
"""

OPTIONAL_CHAIN = """
platform: "ensemble"
max_batch_size: 0
input [
  { name: "A" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "B" data_type: TYPE_FP32 dims: [ 4 ] optional: true }
]
output [
  { name: "X" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }
]
ensemble_scheduling { step [
  { model_name: "first" model_version: -1
    input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
    output_map { key: "OUTPUT0" value: "A1" } output_map { key: "OUTPUT1" value: "B1" } },
  { model_name: "second" model_version: -1
    input_map { key: "INPUT0" value: "A1" } input_map { key: "INPUT1" value: "B1" }
    output_map { key: "OUTPUT0" value: "X" } output_map { key: "OUTPUT1" value: "Y" } }
] }
"""


async def test_absent_optional_input_and_partial_outputs_flow_through(repo: Path) -> None:
    write_model(repo, "first", IDENTITY_WITH_OPTIONAL)
    write_model(repo, "second", IDENTITY_WITH_OPTIONAL)
    write_model(repo, "e", OPTIONAL_CHAIN)
    a, b = np.arange(4, dtype=np.float32), np.full(4, 7, np.float32)
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        both = await srv.server.infer_once(InferenceRequest("e", {"A": a, "B": b}))
        assert both.error is None
        np.testing.assert_array_equal(both.outputs["X"], a)
        np.testing.assert_array_equal(both.outputs["Y"], b)
        # B left out: "first" runs without INPUT1 and answers only OUTPUT0 (a partial
        # output), so "second" runs without INPUT1 too, and the ensemble answers X alone.
        only_a = await srv.server.infer_once(InferenceRequest("e", {"A": a}))
        assert only_a.error is None
        assert set(only_a.outputs) == {"X"}
        np.testing.assert_array_equal(only_a.outputs["X"], a)
        for model in ("first", "second"):
            assert srv.server.model_statistics(model)[0].success.count == 2


def accumulator(name: str) -> str:
    return f"""
name: "{name}"
backend: "kerneltest"
max_batch_size: 0
input [ {{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [
  {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "ECHO" data_type: TYPE_STRING dims: [ 1 ] }}
]
parameters {{ key: "behaviour" value {{ string_value: "sequence_accumulate" }} }}
sequence_batching {{
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "END" control [ {{ kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }} ] }}
  ]
  state [ {{ input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
}}
"""


SEQUENCE_CHAIN = """
platform: "ensemble"
max_batch_size: 0
input [ { name: "V" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [
  { name: "TOTAL" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "ECHO1" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "ECHO2" data_type: TYPE_STRING dims: [ 1 ] }
]
ensemble_scheduling { step [
  { model_name: "acc1" model_version: -1
    input_map { key: "INPUT" value: "V" }
    output_map { key: "OUTPUT" value: "RUNNING" } output_map { key: "ECHO" value: "ECHO1" } },
  { model_name: "acc2" model_version: -1
    input_map { key: "INPUT" value: "RUNNING" }
    output_map { key: "OUTPUT" value: "TOTAL" } output_map { key: "ECHO" value: "ECHO2" } }
] }
"""


async def test_sequence_flags_and_correlation_id_reach_every_step(repo: Path) -> None:
    write_model(repo, "acc1", accumulator("acc1"))
    write_model(repo, "acc2", accumulator("acc2"))
    write_model(repo, "bystander", accumulator("bystander"))
    write_model(repo, "e", SEQUENCE_CHAIN)
    start, end = RequestFlags.SEQUENCE_START, RequestFlags.SEQUENCE_END
    flags = [start, RequestFlags.NONE, end]
    async with run_server(repo, **NO_ENDPOINTS) as srv:
        totals, echoes = [], []
        for value, flag in zip((1, 2, 3), flags, strict=True):
            request = InferenceRequest(
                "e", {"V": np.array([value], np.int32)}, correlation_id=77, flags=flag
            )
            response = await srv.server.infer_once(request)
            assert response.error is None, response.error
            totals.append(int(response.outputs["TOTAL"][0]))
            echoes.append([json.loads(response.outputs[name][0]) for name in ("ECHO1", "ECHO2")])
        # acc1 keeps 1, 3, 6; acc2 accumulates those: 1, 4, 10 (both kept their own state).
        assert totals == [1, 4, 10]
        for (first, second), flag in zip(echoes, flags, strict=True):
            for echo in (first, second):
                assert echo["corrid"] == 77
                assert echo["start"] == int(flag == start)
                assert echo["end"] == int(flag == end)
        # Each step's requests are in its own model's statistics, and nowhere else.
        stats = {m: srv.server.model_statistics(m)[0] for m in ("acc1", "acc2", "bystander")}
        assert [stats[m].inference_count for m in ("acc1", "acc2", "bystander")] == [3, 3, 0]
        assert [stats[m].success.count for m in ("acc1", "acc2", "bystander")] == [3, 3, 0]
        assert srv.server.model_statistics("e")[0].success.count == 3

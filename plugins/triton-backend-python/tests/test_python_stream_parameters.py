"""Response parameters of a decoupled Python model's streamed responses (issue 15 point 4: "as
current Triton sends them, HTTP and gRPC, decoupled included"), in both execution modes.

gRPC: each streamed ``ModelInferResponse`` carries typed ``InferParameter``s (tritonclient's
stream; tritonclient asks for empty final responses, so Triton's ``triton_final_response`` is
there too). HTTP: a decoupled model streams through the generate extension, whose events hold
the response parameters beside the outputs. The final flag comes with the last response, whose
parameters travel too. (Triton 2.51's Python backend predates response parameters, so the
reference server cannot answer this one; the mapping is Triton's documented one.)
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from kernel.testing import RunningServer, ServerThread, write_model
from kernel.testing.clients import TritonClients

MODEL = b"""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            count = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().reshape(-1)[0])
            for i in range(count):
                out = pb_utils.Tensor("OUT", np.array([i], dtype=np.int32))
                parameters = {
                    "remaining": count - 1 - i,
                    "last": i == count - 1,
                    "word": f"w{i}",
                    "score": i + 0.5,
                }
                response = pb_utils.InferenceResponse([out], parameters=parameters)
                sender.send(response, flags=final if i == count - 1 else 0)
        return None
"""

CONFIG = """
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [ {{ name: "IN" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
parameters {{ key: "EXECUTION_MODE" value {{ string_value: "{mode}" }} }}
"""


def expected(count: int) -> list[dict[str, Any]]:
    return [
        {"remaining": count - 1 - i, "last": i == count - 1, "word": f"w{i}", "score": i + 0.5}
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def streaming(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp(f"stream_parameters_{mode}")
    write_model(repository, "params_stream", CONFIG.format(mode=mode), files={"1/model.py": MODEL})
    with ServerThread(repository, metrics_port=None) as running:
        yield running


def test_grpc_stream_carries_typed_parameters(streaming: RunningServer) -> None:
    results = TritonClients(streaming).stream("params_stream", {"IN": np.array([3], np.int32)})
    assert [int(r.as_numpy("OUT")[0]) for r in results] == [0, 1, 2]
    got, finals = [], []
    for result in results:
        parameters = dict(result.get_response().parameters)
        # tritonclient asks for enable_empty_final_response: Triton then marks each response
        finals.append(parameters.pop("triton_final_response").bool_param)
        kinds = {key: value.WhichOneof("parameter_choice") for key, value in parameters.items()}
        assert kinds == {
            "remaining": "int64_param",
            "last": "bool_param",
            "word": "string_param",
            "score": "double_param",
        }
        got.append({key: getattr(value, kinds[key]) for key, value in parameters.items()})
    assert finals == [False, False, True]
    assert got == expected(3)


def test_http_generate_stream_events_carry_the_parameters(streaming: RunningServer) -> None:
    request = urllib.request.Request(
        f"http://{streaming.http_url}/v2/models/params_stream/generate_stream",
        data=json.dumps({"IN": 3}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        body = reply.read(1 << 20).decode()
    events = [
        json.loads(line.removeprefix("data: "))
        for line in body.splitlines()
        if line.startswith("data: ")
    ]
    assert [e["OUT"] for e in events] == [0, 1, 2]
    for event, parameters in zip(events, expected(3), strict=True):
        assert event["model_name"] == "params_stream"
        assert {key: event[key] for key in parameters} == parameters

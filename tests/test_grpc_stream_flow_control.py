"""Flow control end to end on gRPC streams (``ModelStreamInfer``): a client that stops reading
a decoupled model's responses fills the stream's HTTP/2 window, and the model's sender is then
held after a bounded number of responses, in a model process (the default) as in-process,
instead of the server buffering every response. Reading again lets the model go on."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from kernel.testing import RunningServer, ServerThread, write_model

TOKENS = 3000

MODEL = b'''
import json
import os
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Sends COUNT responses of 64 KiB each, writing "sent N" to status_dir/<request id>."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.status_dir = config["parameters"]["status_dir"]["string_value"]

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            count = int(pb_utils.get_input_tensor_by_name(request, "COUNT").as_numpy()[0])
            path = os.path.join(self.status_dir, request.request_id())
            for i in range(count):
                if request.is_cancelled():
                    break
                token = np.full(16384, i, dtype=np.int32)
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", token)]))
                with open(path + ".tmp", "w") as f:
                    f.write(str(i + 1))
                os.replace(path + ".tmp", path)
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

CONFIG = """
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [ {{ name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_INT32 dims: [ 16384 ] }} ]
parameters {{ key: "status_dir" value {{ string_value: "{status}" }} }}
{extra}
"""

IN_PROCESS = 'parameters { key: "EXECUTION_MODE" value { string_value: "in_process" } }'


@pytest.fixture(scope="module")
def status_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("status")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, status_dir: Path) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("models")
    for name, extra in (("stream", ""), ("stream_inproc", IN_PROCESS)):
        config = CONFIG.format(status=status_dir, extra=extra)
        write_model(repository, name, config, files={"1/model.py": MODEL})
    with ServerThread(repository, http_port=None, metrics_port=None) as running:
        yield running


def _sent(status_dir: Path, tag: str) -> int:
    path = status_dir / tag
    return int(path.read_text()) if path.exists() else 0


def _wait_stalled(status_dir: Path, tag: str) -> int:
    """How many responses the model sent once it stopped sending (fails if it never stops)."""
    previous = -1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(1.0)
        sent = _sent(status_dir, tag)
        if sent == previous and sent > 0:
            return sent
        previous = sent
    raise AssertionError(f"the model never stalled ({previous} responses sent)")


@pytest.mark.parametrize("model", ["stream", "stream_inproc"])
def test_a_client_that_stops_reading_holds_the_model(
    served: RunningServer, status_dir: Path, model: str
) -> None:
    tag = f"held-{model}"
    reading = threading.Event()
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()

    def callback(result: Any, error: Any) -> None:
        reading.wait(60)  # the client stops reading: its stream's window fills up
        results.put((result, error))

    count = grpcclient.InferInput("COUNT", [1], "INT32")
    count.set_data_from_numpy(np.array([TOKENS], dtype=np.int32))
    with grpcclient.InferenceServerClient(served.grpc_url) as client:
        client.start_stream(callback=callback)
        try:
            client.async_stream_infer(
                model, [count], request_id=tag, enable_empty_final_response=True
            )
            sent = _wait_stalled(status_dir, tag)
            assert sent < TOKENS // 2, f"{sent} of {TOKENS} responses sent to a client not reading"
            reading.set()
            received = 0
            deadline = time.monotonic() + 120
            while True:
                result, error = results.get(timeout=max(0.1, deadline - time.monotonic()))
                assert error is None, error
                response = result.get_response()
                if response.parameters["triton_final_response"].bool_param:
                    break
                received += 1
            assert received == TOKENS
            assert _sent(status_dir, tag) == TOKENS
        finally:
            reading.set()
            client.stop_stream()
    assert not os.path.exists(status_dir / f"{tag}.tmp")

"""An open ``ModelStreamInfer`` stream when the server stops.

A stream cannot move to another replica, so the server tells its client plainly: the requests
the stream accepted are answered in full, a request sent after the stop began is refused in the
stream (``the server is shutting down``), then the stream ends with ``UNAVAILABLE``, a status a
client retries on (a new stream, which a proxy sends to a live replica). Before, the connection
was closed under the open stream, which a proxy turns into a reset the client cannot tell from
a crash (``tests/test_replicas_proxy.py`` drives that through nginx).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from kernel.testing import ServerThread, write_model

SLOW = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "behaviour" value { string_value: "sleep" } }
parameters { key: "sleep_ms" value { string_value: "800" } }
"""


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _tensor(values: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("INPUT0", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return tensor


@pytest.mark.parametrize("idle", [False, True], ids=["busy", "idle"])
def test_open_stream_ends_with_unavailable_after_its_work(tmp_path: Path, idle: bool) -> None:
    write_model(tmp_path, "slow", SLOW)
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    serving = ServerThread(tmp_path, metrics_port=None, http_port=None, exit_timeout_secs=30)
    with serving as running:
        client = grpcclient.InferenceServerClient(running.grpc_url)
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        values = np.arange(3, dtype=np.float32)
        slow = running.server.route("slow")
        if not idle:
            client.async_stream_infer("slow", [_tensor(values)], request_id="accepted")
            deadline = time.monotonic() + 30
            while not slow.in_flight:  # bounded: 30 s
                assert time.monotonic() < deadline, "the request never reached the model"
                time.sleep(0.01)
        stopping = threading.Thread(target=serving.stop)
        started = time.monotonic()
        stopping.start()
        port = running.server.ports["grpc"]
        deadline = time.monotonic() + 10
        while not _refused(port):  # bounded: 10 s; the stop began
            assert time.monotonic() < deadline, "the listener did not close"
            time.sleep(0.01)
        if not idle:
            client.async_stream_infer("slow", [_tensor(values)], request_id="late")
            result, error = results.get(timeout=30)
            assert result is None and error.status() is None  # an error inside the stream
            assert error.message() == "the server is shutting down"
            result, error = results.get(timeout=30)
            assert error is None and result.get_response().id == "accepted"
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)
        result, error = results.get(timeout=30)
        assert result is None
        assert error.status() == "StatusCode.UNAVAILABLE"
        assert error.message() == "the server is shutting down"
        stopping.join(timeout=60)
        assert not stopping.is_alive()
        # an idle stream does not hold the stop for the exit timeout
        assert time.monotonic() - started < 20
        client.stop_stream()
        client.close()

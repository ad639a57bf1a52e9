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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hpack
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from kernel_test_backends.configs import ADDSUB_ANY_LENGTH, sleeping
from tritonclient.grpc import service_pb2

from kernel.testing import ServerThread, write_model

SLOW = sleeping(800)


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


_HEADERS, _DATA, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 1, 0, 3, 4, 6, 7


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


class _RawH2:
    """Frames by hand (h2's client state machine would stop at the first GOAWAY)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.buffer = b""
        self.headers: dict[int, list[dict[str, str]]] = {}
        self.data: dict[int, bytes] = {}
        self.resets: dict[int, int] = {}
        self.goaways: list[tuple[int, int]] = []
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(_SETTINGS, 0, 0, b""))

    def call(self, stream_id: int, method: str, message: bytes) -> None:
        block = self.encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", f"/inference.GRPCInferenceService/{method}"),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        body = b"\x00" + len(message).to_bytes(4, "big") + message
        self.sock.sendall(_frame(_HEADERS, 4, stream_id, block) + _frame(_DATA, 1, stream_id, body))

    def ended(self, stream_id: int) -> bool:
        """Trailers (a second header block, or grpc-status in the first) or a reset arrived."""
        blocks = self.headers.get(stream_id, [])
        return stream_id in self.resets or any("grpc-status" in b for b in blocks)

    def read_until(self, done: Callable[[], bool], seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not done():  # bounded: by the deadline
            assert time.monotonic() < deadline, "no answer in time"
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buffer += chunk
            while len(self.buffer) >= 9 and len(self.buffer) >= 9 + int.from_bytes(
                self.buffer[:3], "big"
            ):
                length = int.from_bytes(self.buffer[:3], "big")
                kind, flags = self.buffer[3], self.buffer[4]
                stream_id = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
                payload, self.buffer = self.buffer[9 : 9 + length], self.buffer[9 + length :]
                self._on(kind, flags, stream_id, payload)

    def _on(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == _HEADERS:
            decoded = {str(k): str(v) for k, v in self.decoder.decode(payload)}
            self.headers.setdefault(stream_id, []).append(decoded)
        elif kind == _DATA:
            self.data[stream_id] = self.data.get(stream_id, b"") + payload
        elif kind == _RST_STREAM:
            self.resets[stream_id] = int.from_bytes(payload, "big")
        elif kind == _GOAWAY:
            last, code = (int.from_bytes(payload[i : i + 4], "big") for i in (0, 4))
            self.goaways.append((last & 0x7FFFFFFF, code))
        elif kind == _SETTINGS and not flags & 1:
            self.sock.sendall(_frame(_SETTINGS, 1, 0, b""))
        elif kind == _PING and not flags & 1:
            self.sock.sendall(_frame(_PING, 1, 0, payload))


def test_a_stream_opened_before_the_client_read_goaway_is_served(tmp_path: Path) -> None:
    """Graceful GOAWAY in two steps (RFC 9113 section 6.8): a stream a proxy opened while the
    stop's first GOAWAY was on its way is served, not refused (nginx cannot retry a request
    whose body it already sent)."""
    write_model(tmp_path, "addsub", ADDSUB_ANY_LENGTH)
    write_model(tmp_path, "slower", SLOW.replace('"800"', '"3000"'))
    serving = ServerThread(tmp_path, metrics_port=None, http_port=None)
    with serving as running:
        port = running.server.ports["grpc"]
        raw = _RawH2(port)
        raw.call(1, "ServerLive", b"")
        raw.read_until(lambda: raw.ended(1))
        stopping = threading.Thread(target=serving.stop)
        stopping.start()
        deadline = time.monotonic() + 10
        while not _refused(port):  # bounded: 10 s; the stop began (its GOAWAY is sent)
            assert time.monotonic() < deadline, "the listener did not close"
            time.sleep(0.01)
        # sent before reading what the server sent meanwhile: it crosses the first GOAWAY
        request = service_pb2.ModelInferRequest(model_name="addsub")
        values = np.arange(4, dtype=np.float32)
        for name in ("INPUT0", "INPUT1"):
            tensor = request.inputs.add(name=name, datatype="FP32", shape=[4])
            assert tensor.name == name
            request.raw_input_contents.append(values.tobytes())
        raw.call(3, "ModelInfer", request.SerializeToString())
        # and one that outlasts the stop's short wait for open streams (it still counts)
        slower = service_pb2.ModelInferRequest(model_name="slower")
        slower.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
        slower.raw_input_contents.append(values.tobytes())
        raw.call(5, "ModelInfer", slower.SerializeToString())
        raw.read_until(lambda: raw.ended(3) and raw.ended(5) and len(raw.goaways) == 2)
        assert raw.goaways == [(0x7FFFFFFF, 0), (5, 0)]
        assert not raw.resets
        for stream_id, expected in ((3, values + values), (5, values)):
            assert raw.headers[stream_id][-1]["grpc-status"] == "0"
            response = service_pb2.ModelInferResponse.FromString(raw.data[stream_id][5:])
            output = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
            np.testing.assert_array_equal(output, expected)
        stopping.join(timeout=60)
        assert not stopping.is_alive()
        raw.sock.close()

"""The gRPC port driven by the ``h2`` library as a raw HTTP/2 client, with hand-built gRPC framing.

``h2`` is an independent HTTP/2 implementation that checks what the server sends (frame order,
flow-control windows, header rules) and raises on a violation, so every test here is also a
conformance check of the server's side of the wire. Nothing depends on how the transport is
built: only on RFC 9113 and the gRPC-over-HTTP/2 protocol.
"""

from __future__ import annotations

import gzip
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.settings import SettingCodes
from kernel_test_backends.configs import IDENTITY, REPEAT
from tritonclient.grpc import service_pb2

from kernel._options import TlsSettings
from kernel.testing import RunningServer, ServerThread, write_model

SERVICE = "/inference.GRPCInferenceService/"
SLOW_REPEAT = REPEAT + 'parameters { key: "sleep_ms" value { string_value: "20" } }'


def frame_message(message: bytes, compressed: bool = False) -> bytes:
    """gRPC's length-prefixed message: a compressed flag, a 4-byte big-endian length, the bytes."""
    return struct.pack(">BI", int(compressed), len(message)) + message


def split_messages(data: bytes) -> list[tuple[bool, bytes]]:
    """The (compressed, message) pairs of a complete run of length-prefixed messages."""
    out, offset = [], 0
    while offset < len(data):
        flag, length = struct.unpack_from(">BI", data, offset)
        out.append((bool(flag), data[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    assert offset == len(data), "a message runs past the end of the stream"
    return out


@dataclass
class Call:
    """What came back on one stream."""

    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> str | None:
        """``grpc-status`` from the trailers, or from a trailers-only response's headers."""
        return self.trailers.get("grpc-status", self.headers.get("grpc-status"))

    def messages(self) -> list[bytes]:
        encoding = self.headers.get("grpc-encoding", "identity")
        out = []
        for compressed, message in split_messages(bytes(self.data)):
            if compressed:
                assert encoding in ("gzip", "deflate"), encoding
                message = gzip.decompress(message) if encoding == "gzip" else message
            out.append(message)
        return out


class RawClient:
    """A blocking HTTP/2 client over one socket (TCP or TLS); every wait is bounded."""

    def __init__(self, sock: socket.socket, settings: dict[int, int] | None = None) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.calls: dict[int, Call] = {}
        self.events: list[Any] = []
        self.closed = False
        self.flush()

    @classmethod
    def connect(cls, url: str, **kwargs: Any) -> RawClient:
        host, port = url.rsplit(":", 1)
        return cls(socket.create_connection((host, int(port)), timeout=10), **kwargs)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def headers(self, path: str, **extra: str) -> list[tuple[str, str]]:
        return [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *extra.items(),
        ]

    def open(self, method: str, **extra: str) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        self.calls[stream_id] = Call()
        self.conn.send_headers(stream_id, self.headers(SERVICE + method, **extra))
        self.flush()
        return stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """Send ``data`` as the windows allow, reading (and answering) the server meanwhile."""
        view = memoryview(data)
        while view:
            window = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                self.pump(lambda: self.conn.local_flow_control_window(stream_id) > 0)
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(stream_id, bytes(chunk), end_stream=end and not view)
            self.flush()
        if end and not data:
            self.conn.end_stream(stream_id)
            self.flush()

    def call(self, method: str, message: bytes, **extra: str) -> Call:
        stream_id = self.open(method, **extra)
        self.send(stream_id, frame_message(message), end=True)
        return self.finish(stream_id)

    def finish(self, stream_id: int) -> Call:
        call = self.calls[stream_id]
        self.pump(lambda: call.ended or call.reset is not None)
        return call

    def pump(self, done: Any, timeout: float = 30) -> None:
        """Read frames until ``done()`` (or fail after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "no answer in time"
            assert not self.closed, "the server closed the connection"
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                continue
            for event in self.conn.receive_data(data):
                self.events.append(event)
                self._on(event)
            self.flush()

    def read_for(self, seconds: float) -> None:
        """Read and handle whatever arrives during ``seconds``."""
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0 and not self.closed:
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    self.closed = True
                for event in self.conn.receive_data(data):
                    self.events.append(event)
                    self._on(event)
                self.flush()
        except TimeoutError:
            pass
        finally:
            self.sock.settimeout(10)

    def _on(self, event: Any) -> None:
        if isinstance(event, ResponseReceived):
            self.calls[event.stream_id].headers.update(event.headers)
        elif isinstance(event, TrailersReceived):
            self.calls[event.stream_id].trailers.update(event.headers)
        elif isinstance(event, DataReceived):
            self.calls[event.stream_id].data += event.data
            # credit back only what was consumed, as an application would
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, StreamEnded):
            self.calls[event.stream_id].ended = True
        elif isinstance(event, StreamReset):
            self.calls[event.stream_id].reset = event.error_code
        elif isinstance(event, ConnectionTerminated):
            self.closed = True


def _infer_request(model: str, name: str, values: np.ndarray[Any, Any], rid: str = "") -> bytes:
    request = service_pb2.ModelInferRequest(model_name=model, id=rid)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = name, "FP32" if values.dtype == np.float32 else "INT32"
    tensor.shape.extend(values.shape)
    request.raw_input_contents.append(values.tobytes())
    return bytes(request.SerializeToString())


def _infer_response(message: bytes) -> Any:
    return service_pb2.ModelInferResponse.FromString(message)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("h2_models")
    write_model(repo, "identity", IDENTITY)
    write_model(repo, "repeat", REPEAT)
    write_model(repo, "slow_repeat", SLOW_REPEAT)
    with ServerThread(repo, http_port=None, metrics_port=None) as srv:
        yield srv


@pytest.fixture
def client(served: RunningServer) -> Iterator[RawClient]:
    c = RawClient.connect(served.grpc_url)
    yield c
    c.close()


def test_connection_preface_and_settings(client: RawClient) -> None:
    """The server's first frame is its SETTINGS (h2 refuses anything else) and it ACKs ours."""
    client.pump(
        lambda: (
            any(isinstance(e, RemoteSettingsChanged) for e in client.events)
            and any(isinstance(e, SettingsAcknowledged) for e in client.events)
        )
    )
    assert isinstance(client.events[0], RemoteSettingsChanged)


def test_unary_server_live(client: RawClient) -> None:
    call = client.call("ServerLive", b"")
    assert call.headers[":status"] == "200"
    assert call.headers["content-type"].startswith("application/grpc")
    assert call.status == "0"
    (message,) = call.messages()
    assert service_pb2.ServerLiveResponse.FromString(message).live is True


def test_unary_model_infer(client: RawClient) -> None:
    values = np.arange(8, dtype=np.float32)
    call = client.call("ModelInfer", _infer_request("identity", "INPUT0", values, "raw-1"))
    assert call.status == "0", call.trailers
    (message,) = call.messages()
    response = _infer_response(message)
    assert (response.model_name, response.id) == ("identity", "raw-1")
    assert [o.name for o in response.outputs] == ["OUTPUT0"]
    np.testing.assert_array_equal(
        np.frombuffer(response.raw_output_contents[0], dtype=np.float32), values
    )


def test_errors_travel_in_trailers(client: RawClient) -> None:
    unknown_model = client.call("ModelInfer", _infer_request("nope", "INPUT0", np.zeros(2, "f4")))
    assert unknown_model.headers[":status"] == "200"
    assert unknown_model.status == "5"  # NOT_FOUND
    assert "nope" in unknown_model.trailers.get(
        "grpc-message", unknown_model.headers.get("grpc-message", "")
    )
    assert unknown_model.messages() == []
    unknown_method = client.call("NoSuchMethod", b"")
    assert unknown_method.status == "12"  # UNIMPLEMENTED


def test_large_messages_cross_the_flow_control_windows(client: RawClient) -> None:
    """2 MiB each way: far past the 64 KiB initial windows, so both sides must credit back."""
    values = np.random.default_rng(7).random(512 * 1024, dtype=np.float32)
    call = client.call("ModelInfer", _infer_request("identity", "INPUT0", values))
    assert call.status == "0", call.trailers
    (message,) = call.messages()
    output = np.frombuffer(_infer_response(message).raw_output_contents[0], dtype=np.float32)
    np.testing.assert_array_equal(output, values)
    assert any(isinstance(e, WindowUpdated) for e in client.events)


def test_a_small_client_window_is_respected(served: RunningServer) -> None:
    """With a 1 KiB window and 16 KiB frames announced, the server must wait for our credit
    (h2 raises on any byte sent past the window) and still deliver all of a 40 KiB reply."""
    client = RawClient.connect(served.grpc_url, settings={SettingCodes.INITIAL_WINDOW_SIZE: 1024})
    try:
        client.pump(lambda: any(isinstance(e, SettingsAcknowledged) for e in client.events))
        values = np.arange(10 * 1024, dtype=np.float32)
        call = client.call("ModelInfer", _infer_request("identity", "INPUT0", values))
        assert call.status == "0", call.trailers
        sizes = [len(e.data) for e in client.events if isinstance(e, DataReceived)]
        assert max(sizes) <= 1024 and sum(sizes) > 40 * 1024
        (message,) = call.messages()
        output = _infer_response(message).raw_output_contents[0]
        np.testing.assert_array_equal(np.frombuffer(output, dtype=np.float32), values)
    finally:
        client.close()


def test_concurrent_streams_on_one_connection(client: RawClient) -> None:
    """Ten calls open at once, their bodies sent in reverse order, each answered on its own
    stream."""
    streams = {}
    for i in range(10):
        streams[client.open("ModelInfer")] = np.full(4, i, dtype=np.float32)
    for stream_id in reversed(list(streams)):
        message = _infer_request("identity", "INPUT0", streams[stream_id], rid=str(stream_id))
        client.send(stream_id, frame_message(message), end=True)
    for stream_id, values in streams.items():
        call = client.finish(stream_id)
        assert call.status == "0", call.trailers
        (message,) = call.messages()
        response = _infer_response(message)
        assert response.id == str(stream_id)
        output = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
        np.testing.assert_array_equal(output, values)


def test_a_message_split_over_frames_and_messages_sharing_a_frame(client: RawClient) -> None:
    """gRPC framing is independent of HTTP/2 framing: one request in three DATA frames (cut
    inside the 5-byte prefix), then two requests in one DATA frame, on a bidirectional stream."""
    stream_id = client.open("ModelStreamInfer")
    first = frame_message(_infer_request("repeat", "IN", np.array([1, 2], np.int32), "a"))
    client.send(stream_id, first[:3])
    client.send(stream_id, first[3:20])
    client.send(stream_id, first[20:])
    second = frame_message(_infer_request("repeat", "IN", np.array([3], np.int32), "b"))
    third = frame_message(_infer_request("repeat", "IN", np.array([4, 5], np.int32), "c"))
    client.send(stream_id, second + third, end=True)
    call = client.finish(stream_id)
    assert call.status == "0", call.trailers
    got: dict[str, list[int]] = {}
    for message in call.messages():
        response = service_pb2.ModelStreamInferResponse.FromString(message)
        assert response.error_message == ""
        values = np.frombuffer(response.infer_response.raw_output_contents[0], dtype=np.int32)
        got.setdefault(response.infer_response.id, []).extend(int(v) for v in values)
    assert got == {"a": [1, 2], "b": [3], "c": [4, 5]}


def test_gzip_compressed_request(client: RawClient) -> None:
    values = np.zeros(4096, dtype=np.float32)  # compresses well
    message = gzip.compress(_infer_request("identity", "INPUT0", values))
    stream_id = client.open("ModelInfer", **{"grpc-encoding": "gzip"})
    client.send(stream_id, frame_message(message, compressed=True), end=True)
    call = client.finish(stream_id)
    assert call.status == "0", call.trailers
    (reply,) = call.messages()
    output = np.frombuffer(_infer_response(reply).raw_output_contents[0], dtype=np.float32)
    np.testing.assert_array_equal(output, values)


def test_ping_is_acknowledged_with_its_payload(client: RawClient) -> None:
    client.conn.ping(b"interop!")
    client.flush()
    client.pump(lambda: any(isinstance(e, PingAckReceived) for e in client.events))
    (ack,) = [e for e in client.events if isinstance(e, PingAckReceived)]
    assert ack.ping_data == b"interop!"


def test_a_reset_stream_leaves_the_connection_serving(client: RawClient) -> None:
    """RST_STREAM(CANCEL) on a running stream: the others on the connection carry on."""
    stream_id = client.open("ModelStreamInfer")
    request = _infer_request("slow_repeat", "IN", np.arange(100, dtype=np.int32))  # ~2 s
    client.send(stream_id, frame_message(request))
    client.pump(lambda: len(client.calls[stream_id].data) > 0)  # it is running
    client.conn.reset_stream(stream_id)  # CANCEL
    client.flush()
    call = client.call("ServerLive", b"")
    assert call.status == "0"
    assert not client.closed


def test_client_goaway_then_close(client: RawClient) -> None:
    assert client.call("ServerLive", b"").status == "0"
    client.conn.close_connection()
    client.flush()
    client.sock.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # bounded: the server closes its side too
        if not client.sock.recv(65536):
            break
    else:
        raise AssertionError("the server kept the connection open after GOAWAY and FIN")


def test_h2_over_tls(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    """The same client over TLS with ALPN ``h2``, against a ``--grpc-use-ssl`` server."""
    write_model(tmp_path, "identity", IDENTITY)
    settings = TlsSettings(cert=tls_files["cert"], key=tls_files["key"])
    with ServerThread(tmp_path, http_port=None, metrics_port=None, grpc_tls=settings) as srv:
        context = ssl.create_default_context(cafile=str(tls_files["ca"]))
        context.set_alpn_protocols(["h2"])
        host, port = srv.grpc_url.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=10)
        tls = context.wrap_socket(raw, server_hostname="localhost")
        assert tls.selected_alpn_protocol() == "h2"
        client = RawClient(tls)
        try:
            values = np.arange(70_000, dtype=np.float32)  # past the initial window
            call = client.call("ModelInfer", _infer_request("identity", "INPUT0", values))
            assert call.status == "0", call.trailers
            (message,) = call.messages()
            output = _infer_response(message).raw_output_contents[0]
            np.testing.assert_array_equal(np.frombuffer(output, dtype=np.float32), values)
        finally:
            client.close()


def test_raising_the_initial_window_by_settings_resumes_blocked_streams(
    served: RunningServer,
) -> None:
    """RFC 9113 6.9.2: a SETTINGS change of INITIAL_WINDOW_SIZE adjusts every open stream's
    window. With 0 the server may send headers but no DATA; raising it, without any
    WINDOW_UPDATE, must let the reply through."""
    client = RawClient.connect(served.grpc_url, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0})
    try:
        client.pump(lambda: any(isinstance(e, SettingsAcknowledged) for e in client.events))
        values = np.arange(1024, dtype=np.float32)
        stream_id = client.open("ModelInfer")
        client.send(stream_id, frame_message(_infer_request("identity", "INPUT0", values)), True)
        client.read_for(0.5)  # the reply is ready by now: nothing but headers may come
        assert not client.calls[stream_id].data
        client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        client.flush()
        call = client.finish(stream_id)
        assert call.status == "0", call.trailers
        (message,) = call.messages()
        output = _infer_response(message).raw_output_contents[0]
        np.testing.assert_array_equal(np.frombuffer(output, dtype=np.float32), values)
    finally:
        client.close()


def test_no_dynamic_table_when_the_client_allows_none(served: RunningServer) -> None:
    """SETTINGS_HEADER_TABLE_SIZE 0 after the connection started: the server's next header block
    must begin with a dynamic table size update down to the new limit (RFC 7541 4.2), and
    nothing may be indexed after it (h2's decoder refuses both)."""
    client = RawClient.connect(served.grpc_url, settings={SettingCodes.HEADER_TABLE_SIZE: 0})
    try:
        for _ in range(3):
            call = client.call("ServerLive", b"")
            assert call.status == "0"
            assert call.headers["content-type"].startswith("application/grpc")
        unknown = client.call("ModelInfer", _infer_request("nope", "INPUT0", np.zeros(1, "f4")))
        assert unknown.status == "5"
    finally:
        client.close()

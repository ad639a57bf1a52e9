"""The gRPC port driven frame by frame by the ``h2`` library over a real socket.

Where the sans-IO tests (test_h2_core.py) check each rule on bytes, these check that the running
server applies the limits end to end: MAX_CONCURRENT_STREAMS refusals, the rapid-reset budget,
gRPC's request checks (content-type, te), the header-list limit, a deadline that expires while the
reply waits for flow-control room, keepalive PINGs, and reading paused under write pressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from kernel._cli import build_parser
from kernel._serve_command import options_from_args
from kernel.frontends._grpc._limits import Http2Limits
from kernel.frontends._grpc._server import GrpcServer, ServerConnection
from kernel.testing import RunningServer, ServerThread

LIVE = b"/inference.GRPCInferenceService/ServerLive"
EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"
ENHANCE_YOUR_CALM, REFUSED_STREAM, PROTOCOL_ERROR = 11, 7, 1


def _request(path: bytes = LIVE, **extra: bytes) -> list[tuple[bytes, bytes]]:
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    for name, value in extra.items():
        key = name.replace("_", "-").encode()
        if any(h[0] == key for h in headers):  # in place: pseudo-headers stay first
            headers = [(k, value if k == key else v) for k, v in headers]
        else:
            headers.append((key, value))
    return headers


class RawClient:
    """An HTTP/2 client on a socket, frames under the test's control (the ``h2`` library)."""

    def __init__(self, url: str, settings: dict[int, int] | None = None) -> None:
        host, port = url.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        config = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False
        )
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.events: list[h2.events.Event] = []
        self.closed = False

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def wait(self, done: Callable[[list[h2.events.Event]], bool], timeout: float = 10) -> None:
        """Read (acknowledging what h2 acknowledges) until ``done(events)`` or the socket closes."""
        deadline = time.monotonic() + timeout
        while not done(self.events):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; events so far: {self.events}"
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                return
            self.events += self.conn.receive_data(data)
            pending = self.conn.data_to_send()
            if pending:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.sock.sendall(pending)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("h2_models")
    with ServerThread(
        repo,
        http_port=None,
        metrics_port=None,
        grpc_max_concurrent_streams=3,
        grpc_max_header_list_size=2048,
    ) as srv:
        yield srv


@pytest.fixture
def client(served: RunningServer) -> Iterator[RawClient]:
    c = RawClient(served.grpc_url)
    yield c
    c.close()


def _ended(stream_id: int) -> Callable[[list[h2.events.Event]], bool]:
    def done(events: list[h2.events.Event]) -> bool:
        return any(
            isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)
            and e.stream_id == stream_id
            for e in events
        )

    return done


def _headers_of(client: RawClient, stream_id: int) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for event in client.events:
        if (
            isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived)
            and event.stream_id == stream_id
        ):
            out.update(dict(event.headers))
    return out


def test_a_unary_call_frame_by_frame(client: RawClient) -> None:
    client.conn.send_headers(1, _request())
    client.conn.send_data(1, EMPTY_MESSAGE, end_stream=True)
    client.flush()
    client.wait(_ended(1))
    headers = _headers_of(client, 1)
    assert headers[b":status"] == b"200" and headers[b"grpc-status"] == b"0"
    data = b"".join(e.data for e in client.of(h2.events.DataReceived))
    assert data == b"\x00\x00\x00\x00\x02\x08\x01"  # ServerLiveResponse(live=True)


def test_streams_above_max_concurrent_streams_are_refused(client: RawClient) -> None:
    # sent before the server's SETTINGS arrive, so h2 does not hold the fourth back itself
    for stream_id in (1, 3, 5, 7):
        client.conn.send_headers(stream_id, _request())
    client.flush()
    client.wait(_ended(7))
    resets = {e.stream_id: e.error_code for e in client.of(h2.events.StreamReset)}
    assert resets == {7: REFUSED_STREAM}
    settings = client.of(h2.events.RemoteSettingsChanged)[0].changed_settings
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 3
    for stream_id in (1, 3, 5):  # the first three are served
        client.conn.send_data(stream_id, EMPTY_MESSAGE, end_stream=True)
    client.flush()
    client.wait(lambda _: all(_ended(s)(client.events) for s in (1, 3, 5)))
    assert all(_headers_of(client, s)[b"grpc-status"] == b"0" for s in (1, 3, 5))


def test_rapid_reset_ends_the_connection(client: RawClient) -> None:
    client.conn.local_settings.max_concurrent_streams = 2**31 - 1
    for i in range(1200):
        stream_id = 1 + 2 * i
        client.conn.send_headers(stream_id, _request())
        client.conn.reset_stream(stream_id)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        client.flush()
    client.wait(lambda events: bool(client.of(h2.events.ConnectionTerminated)))
    terminated = client.of(h2.events.ConnectionTerminated)[0]
    assert terminated.error_code == ENHANCE_YOUR_CALM


def test_content_type_must_be_grpc(client: RawClient) -> None:
    client.conn.send_headers(1, _request(content_type=b"application/json"), end_stream=True)
    client.flush()
    client.wait(_ended(1))
    headers = _headers_of(client, 1)
    assert headers[b":status"] == b"415"
    assert b"content-type" in headers[b"grpc-message"]


def test_method_must_be_post(client: RawClient) -> None:
    client.conn.send_headers(1, _request(**{":method": b"GET"}), end_stream=True)
    client.flush()
    client.wait(_ended(1))
    assert _headers_of(client, 1)[b":status"] == b"405"


def test_te_other_than_trailers_is_malformed(client: RawClient) -> None:
    client.conn.send_headers(1, _request(te=b"gzip"), end_stream=True)
    client.flush()
    client.wait(_ended(1))
    resets = {e.stream_id: e.error_code for e in client.of(h2.events.StreamReset)}
    assert resets == {1: PROTOCOL_ERROR}


def test_header_list_too_large(client: RawClient) -> None:
    client.conn.send_headers(1, _request(x_big=b"v" * 4000), end_stream=True)
    client.flush()
    client.wait(_ended(1))
    headers = _headers_of(client, 1)
    assert headers[b"grpc-status"] == b"8"  # RESOURCE_EXHAUSTED
    client.conn.send_headers(3, _request())  # the connection carries on
    client.conn.send_data(3, EMPTY_MESSAGE, end_stream=True)
    client.flush()
    client.wait(_ended(3))
    assert _headers_of(client, 3)[b"grpc-status"] == b"0"


def test_deadline_while_the_reply_waits_for_window(served: RunningServer) -> None:
    client = RawClient(served.grpc_url, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    try:
        client.conn.send_headers(1, _request(grpc_timeout=b"300m"))
        client.conn.send_data(1, EMPTY_MESSAGE, end_stream=True)
        client.flush()
        client.wait(_ended(1))
        assert not client.of(h2.events.DataReceived)  # the reply never found room
        assert _headers_of(client, 1)[b"grpc-status"] == b"4"  # DEADLINE_EXCEEDED
    finally:
        client.close()


def test_keepalive_pings_and_their_timeout(tmp_path: Path) -> None:
    with ServerThread(
        tmp_path,
        http_port=None,
        metrics_port=None,
        grpc_keepalive_time_ms=50,
        grpc_keepalive_timeout_ms=200,
        grpc_keepalive_permit_without_calls=True,
        grpc_http2_max_pings_without_data=0,
    ) as served:
        answering = RawClient(served.grpc_url)  # h2 acknowledges every PING it reads
        try:
            answering.flush()
            answering.wait(lambda _: len(answering.of(h2.events.PingReceived)) >= 4)
            assert not answering.closed
        finally:
            answering.close()
        silent = RawClient(served.grpc_url)
        try:
            silent.flush()
            # from now on nothing is sent back: the server's PING gets no ACK
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and silent.sock.recv(65536):
                pass
            assert time.monotonic() < deadline  # the server closed the connection
        finally:
            silent.close()


def test_max_pings_without_data(tmp_path: Path) -> None:
    with ServerThread(
        tmp_path,
        http_port=None,
        metrics_port=None,
        grpc_keepalive_time_ms=30,
        grpc_keepalive_permit_without_calls=True,
    ) as served:
        client = RawClient(served.grpc_url)
        try:
            client.flush()
            client.wait(lambda _: len(client.of(h2.events.PingReceived)) >= 2)
            time.sleep(0.3)  # ten more intervals: no third PING without data
            client.sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.events += client.conn.receive_data(client.sock.recv(65536))
            assert len(client.of(h2.events.PingReceived)) == 2
        finally:
            client.close()


class _Transport:
    """What ServerConnection needs of an asyncio transport, recording reading pauses."""

    def __init__(self) -> None:
        self.reading = True
        self.written: list[bytes] = []
        self.limits: tuple[int, int] | None = None

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = (high, low)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        pass


async def test_reading_pauses_while_the_write_buffer_is_high() -> None:
    limits = Http2Limits(keepalive_time_ms=0)
    connection = ServerConnection(GrpcServer({}, max_message_bytes=1 << 20, limits=limits))
    transport = _Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    assert transport.limits == (limits.write_high_water, limits.write_low_water)
    connection.pause_writing()
    assert not transport.reading
    waiting = asyncio.ensure_future(connection.writable())
    await asyncio.sleep(0)
    assert not waiting.done()
    connection.resume_writing()
    await asyncio.wait_for(waiting, 1)
    assert transport.reading
    connection.connection_lost(None)


def test_keepalive_and_limit_flags() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--grpc-keepalive-time=1000",
            "--grpc-keepalive-timeout=500",
            "--grpc-keepalive-permit-without-calls=true",
            "--grpc-http2-max-pings-without-data=0",
            "--grpc-http2-min-recv-ping-interval-without-data=10000",
            "--grpc-http2-max-ping-strikes=5",
            "--grpc-max-concurrent-streams=7",
            "--grpc-max-header-list-size=4096",
        ]
    )
    options = options_from_args(args)
    assert (
        options.grpc_keepalive_time_ms,
        options.grpc_keepalive_timeout_ms,
        options.grpc_keepalive_permit_without_calls,
        options.grpc_http2_max_pings_without_data,
        options.grpc_http2_min_recv_ping_interval_without_data_ms,
        options.grpc_http2_max_ping_strikes,
        options.grpc_max_concurrent_streams,
        options.grpc_max_header_list_size,
    ) == (1000, 500, True, 0, 10000, 5, 7, 4096)


async def test_the_replies_of_one_answer_leave_in_one_write() -> None:
    """Calls multiplexed on one connection whose replies become ready together (one model
    answer for their batch) go out in one write, not a write each; a lone reply at once."""
    from kernel.frontends._grpc._rpc import Cardinality, Method, Stream

    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()
    answer_ready = [False]

    async def handler(stream: Stream) -> None:
        await stream.recv_message()
        stream.answer_ready = lambda: answer_ready[0]
        stream.reply = await answer

    method = Method(handler, Cardinality.UNARY_UNARY, lambda data: bytes(data), bytes)
    path = b"/t.S/M"
    limits = Http2Limits(keepalive_time_ms=0)
    connection = ServerConnection(
        GrpcServer({path.decode(): method}, max_message_bytes=1 << 20, limits=limits)
    )
    transport = _Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    client = h2.connection.H2Connection(config)
    client.initiate_connection()
    for stream_id in (1, 3, 5):
        client.send_headers(stream_id, _request(path))
        client.send_data(stream_id, b"\x00\x00\x00\x00\x01x", end_stream=True)
    connection.data_received(client.data_to_send())
    for _ in range(5):
        await asyncio.sleep(0)  # the three handlers wait for the answer
    transport.written.clear()
    answer_ready[0] = True  # the batch's answer: each handler's reply is ready at once
    answer.set_result(b"\x00\x00\x00\x00\x01y")
    for _ in range(5):
        await asyncio.sleep(0)
    events = client.receive_data(b"".join(transport.written))
    ended = {e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)}
    assert ended == {1, 3, 5}
    assert len(transport.written) == 1  # one write for the three replies

    # a lone call's reply leaves at once, in the handler's own turn
    answer = loop.create_future()
    answer_ready[0] = False
    client.send_headers(7, _request(path))
    client.send_data(7, b"\x00\x00\x00\x00\x01x", end_stream=True)
    connection.data_received(client.data_to_send())
    for _ in range(5):
        await asyncio.sleep(0)
    transport.written.clear()
    answer_ready[0] = True
    answer.set_result(b"\x00\x00\x00\x00\x01z")
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(transport.written) == 1
    events = client.receive_data(b"".join(transport.written))
    assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 7 for e in events)
    connection.connection_lost(None)

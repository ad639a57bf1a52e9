"""The HTTP/1.1 connection without sockets: bytes fed to the protocol, writes collected.

Modelled on uvicorn's protocol tests: a mock transport records what the connection writes and
whether it closed; a small app answers with what it received. One test per limit or rule.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from dataclasses import dataclass, field, replace

import pytest

from kernel.frontends._http_server._connection import HttpConnection
from kernel.frontends._http_server._reader import Received, Refusal, RequestReader
from kernel.frontends._http_server._types import HttpLimits, HttpRequest, Reply

LIMITS = HttpLimits(
    max_body=1024 * 1024,
    max_url=256,
    max_header_bytes=2048,
    max_headers=10,
    header_timeout=5.0,
    idle_timeout=5.0,
)


class MockTransport:
    """What an asyncio transport offers a protocol, recording instead of sending."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False
        self.aborted = False
        self.eof = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.buffer += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


@dataclass
class EchoApp:
    """Answers ``<method> <path> <body length>``; ``gate`` holds answers until set."""

    max_body: int = LIMITS.max_body
    received: list[HttpRequest] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def handle(self, request: HttpRequest) -> Reply:
        self.received.append(request)
        if self.gate is not None:
            await self.gate.wait()
        text = f"{request.method} {request.path} {len(request.body)}".encode()
        return Reply(200, [(b"content-type", b"text/plain")], [text])


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def parse_responses(data: bytes, heads: int = 0) -> list[Response]:
    """Split what the server wrote into responses (the first ``heads`` answer HEAD requests)."""
    responses = []
    rest = bytes(data)
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {head!r}"
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 ")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            headers[name.lower()] = value
        length = 0 if len(responses) < heads else int(headers[b"content-length"])
        body, rest = rest[:length], rest[length:]
        assert len(body) == length
        responses.append(Response(status, headers, body))
    return responses


class Harness:
    def __init__(self, app: EchoApp, limits: HttpLimits) -> None:
        self.app = app
        self.connections: set[HttpConnection] = set()
        self.protocol = HttpConnection(app, limits, self.connections)
        self.transport = MockTransport()
        self.protocol.connection_made(self.transport)  # type: ignore[arg-type]

    def feed(self, data: bytes) -> None:
        self.protocol.data_received(data)

    async def settle(self) -> None:
        """Let the connection's answering task run until it has nothing left to do."""
        for _ in range(100):
            await asyncio.sleep(0)
            if self.protocol.task is None:
                return

    async def responses(self, heads: int = 0) -> list[Response]:
        await self.settle()
        return parse_responses(self.transport.buffer, heads)

    def lose(self) -> None:
        self.protocol.connection_lost(None)


@pytest.fixture
def app() -> EchoApp:
    return EchoApp()


@pytest.fixture
async def conn(app: EchoApp) -> Harness:
    return Harness(app, LIMITS)


def harness(**limits: float) -> Harness:
    return Harness(EchoApp(), replace(LIMITS, **limits))  # type: ignore[arg-type]


GET = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_keep_alive_requests_are_answered(conn: Harness) -> None:
    conn.feed(GET)
    conn.feed(GET)
    responses = await conn.responses()
    assert [r.status for r in responses] == [200, 200]
    assert responses[0].body == b"GET /v2/health/live 0"
    assert b"connection" not in responses[0].headers
    assert not conn.transport.closed


async def test_connection_close_is_honoured(conn: Harness) -> None:
    conn.feed(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    [response] = await conn.responses()
    assert response.headers[b"connection"] == b"close"
    assert conn.transport.closed


# -- sizes ------------------------------------------------------------------------------------


async def test_long_url_is_answered_414(conn: Harness) -> None:
    conn.feed(b"GET /" + b"a" * LIMITS.max_url + b" HTTP/1.1\r\n\r\n")
    [response] = await conn.responses()
    assert response.status == 414
    assert b"request URL is longer than the 256 bytes" in response.body
    assert response.headers[b"connection"] == b"close"
    assert conn.transport.eof  # closes after the answer (lingering to drain the rest)


async def test_url_dribbled_past_the_limit_is_refused_as_it_arrives(conn: Harness) -> None:
    conn.feed(b"GET /")
    for _ in range(LIMITS.max_url // 16 + 1):
        conn.feed(b"a" * 16)
    [response] = await conn.responses()
    assert response.status == 414


async def test_large_header_section_is_answered_431(conn: Harness) -> None:
    conn.feed(b"GET / HTTP/1.1\r\nX-Big: " + b"v" * LIMITS.max_header_bytes + b"\r\n\r\n")
    [response] = await conn.responses()
    assert response.status == 431
    assert b"request header section is larger than the 2048 bytes" in response.body
    assert response.headers[b"connection"] == b"close"


async def test_header_dribbled_without_end_is_refused_before_it_grows(conn: Harness) -> None:
    """One header value that never ends: refused once the reads add up past the limit."""
    conn.feed(b"GET / HTTP/1.1\r\nX-Big: ")
    fed = 0
    while not conn.protocol._reader.done:
        conn.feed(b"v" * 100)
        fed += 100
        assert fed <= LIMITS.max_header_bytes + 100
    [response] = await conn.responses()
    assert response.status == 431


def test_body_before_a_pipelined_header_section_does_not_count_against_it() -> None:
    reader = RequestReader(LIMITS)
    assert reader.feed(b"POST / HTTP/1.1\r\nContent-Le", 0.0) == []
    body = b"x" * (LIMITS.max_header_bytes + 1000)
    events = reader.feed(b"ngth: %d\r\n\r\n%s" % (len(body), body) + b"GET / HTTP/1.1\r\nX: y", 0.0)
    assert [type(e) for e in events] == [Received]
    [received] = reader.feed(b"\r\n\r\n", 0.0)
    assert isinstance(received, Received)


async def test_many_small_headers_add_up_to_431(conn: Harness) -> None:
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 300) for i in range(9))
    conn.feed(head + b"\r\n")
    [response] = await conn.responses()
    assert response.status == 431


async def test_too_many_header_fields_are_answered_431(conn: Harness) -> None:
    head = b"GET / HTTP/1.1\r\n" + b"".join(
        b"X-%d: v\r\n" % i for i in range(LIMITS.max_headers + 1)
    )
    conn.feed(head + b"\r\n")
    [response] = await conn.responses()
    assert response.status == 431
    assert b"more than the 10 header fields" in response.body


async def test_body_over_the_limit_is_refused_from_its_headers(conn: Harness, app: EchoApp) -> None:
    conn.feed(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (LIMITS.max_body + 1))
    [response] = await conn.responses()
    assert response.status == 400
    assert b"larger than the 1048576 bytes this server accepts" in response.body
    assert not app.received


async def test_chunked_body_over_the_limit_is_refused(conn: Harness, app: EchoApp) -> None:
    conn.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(LIMITS.max_body // len(chunk) + 1):
        conn.feed(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    [response] = await conn.responses()
    assert response.status == 400
    assert not app.received


def test_body_grows_with_what_arrived() -> None:
    """A body announced at 1 MiB that sent 1 KiB so far holds about 1 KiB, not 1 MiB."""
    reader = RequestReader(LIMITS)
    tracemalloc.start()
    try:
        reader.feed(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % LIMITS.max_body, 0.0)
        for _ in range(4):
            reader.feed(b"x" * 256, 0.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    events = reader.feed(b"x" * (LIMITS.max_body - 1024), 0.0)
    [received] = events
    assert isinstance(received, Received)
    assert len(received.request.body) == LIMITS.max_body


def test_body_in_one_read_is_not_copied() -> None:
    reader = RequestReader(LIMITS)
    [received] = reader.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 0.0)
    assert isinstance(received, Received)
    assert type(received.request.body) is bytes
    assert received.request.body == b"hello"


# -- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    ],
)
async def test_content_length_with_transfer_encoding_is_refused(conn: Harness, head: bytes) -> None:
    conn.feed(b"POST / HTTP/1.1\r\n" + head + b"\r\n3\r\nabc\r\n0\r\n\r\n")
    [response] = await conn.responses()
    assert response.status == 400
    assert response.headers[b"connection"] == b"close"
    assert conn.transport.eof


async def test_differing_content_lengths_are_refused(conn: Harness, app: EchoApp) -> None:
    conn.feed(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
    [response] = await conn.responses()
    assert response.status == 400
    assert response.headers[b"connection"] == b"close"
    assert not app.received


@pytest.mark.parametrize(
    "codings",
    [
        [b"gzip"],
        [b"gzip, chunked"],
        [b"chunked, chunked"],
        [b"foo", b"chunked"],
        [b"identity"],
    ],
)
async def test_unknown_transfer_codings_are_refused(
    conn: Harness, app: EchoApp, codings: list[bytes]
) -> None:
    fields = b"".join(b"Transfer-Encoding: %s\r\n" % c for c in codings)
    conn.feed(b"POST / HTTP/1.1\r\n" + fields + b"\r\n3\r\nabc\r\n0\r\n\r\n")
    [response] = await conn.responses()
    assert response.status == 400
    assert response.headers[b"connection"] == b"close"
    assert not app.received


async def test_chunked_body_is_joined(conn: Harness, app: EchoApp) -> None:
    conn.feed(
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    [response] = await conn.responses()
    assert response.body == b"POST /p 5"
    assert bytes(app.received[0].body) == b"abcde"


async def test_requests_before_a_malformed_one_are_answered_in_order(conn: Harness) -> None:
    conn.feed(
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
        b"POST /c HTTP/1.1\r\nContent-Length: nope\r\n\r\n"
    )
    responses = await conn.responses()
    assert [r.status for r in responses] == [200, 200, 400]
    assert [r.body[:6] for r in responses[:2]] == [b"GET /a", b"GET /b"]
    assert b"malformed HTTP request" in responses[2].body
    assert responses[2].headers[b"connection"] == b"close"


async def test_malformed_request_behind_a_slow_one_waits_for_its_answer(
    conn: Harness, app: EchoApp
) -> None:
    app.gate = asyncio.Event()
    conn.feed(b"GET /slow HTTP/1.1\r\n\r\n")
    await asyncio.sleep(0)
    conn.feed(b"BROKEN\r\n\r\n")
    await asyncio.sleep(0.01)
    assert conn.transport.buffer == b""
    app.gate.set()
    responses = await conn.responses()
    assert [r.status for r in responses] == [200, 400]


async def test_bytes_after_a_refusal_are_dropped(conn: Harness, app: EchoApp) -> None:
    conn.feed(b"BROKEN\r\n\r\n")
    conn.feed(GET)
    [response] = await conn.responses()
    assert response.status == 400
    assert not app.received


async def test_head_is_answered_without_a_body(conn: Harness, app: EchoApp) -> None:
    conn.feed(b"GET /x HTTP/1.1\r\n\r\nHEAD /x HTTP/1.1\r\n\r\n")
    await conn.settle()
    get, _, head = bytes(conn.transport.buffer).partition(b"GET /x 0")
    assert head.endswith(b"\r\n\r\n")
    assert get == head  # same status line and headers, Content-Length included
    assert b"content-length: 8\r\n" in head
    assert [r.method for r in app.received] == ["GET", "GET"]


async def test_expect_continue_is_answered_before_the_body(conn: Harness) -> None:
    conn.feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert conn.transport.buffer == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.feed(b"ok")
    await conn.settle()
    assert conn.transport.buffer.endswith(b"POST / 2")


async def test_upgrade_is_answered_in_http1_then_closed(conn: Harness, app: EchoApp) -> None:
    conn.feed(
        b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    )
    [response] = await conn.responses()
    assert response.status == 200
    assert response.headers[b"connection"] == b"close"
    assert len(app.received) == 1


async def test_pipelined_requests_pause_reading_when_many_wait(conn: Harness, app: EchoApp) -> None:
    app.gate = asyncio.Event()
    conn.feed(GET * 12)
    assert not conn.transport.reading
    app.gate.set()
    responses = await conn.responses()
    assert len(responses) == 12
    assert conn.transport.reading


async def test_pipelined_bodies_pause_reading_past_the_body_limit(
    conn: Harness, app: EchoApp
) -> None:
    """Queued requests hold their bodies: reading pauses once they add up to ``max_body``."""
    app.gate = asyncio.Event()
    body = b"x" * (LIMITS.max_body * 6 // 10)
    request = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    conn.feed(request * 3)
    assert not conn.transport.reading
    app.gate.set()
    responses = await conn.responses()
    assert [r.body for r in responses] == [b"POST / %d" % len(body)] * 3
    assert conn.transport.reading


# -- timeouts ---------------------------------------------------------------------------------


async def test_headers_that_do_not_arrive_in_time_are_answered_408() -> None:
    conn = harness(header_timeout=0.05)
    conn.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for _ in range(100):
        conn.feed(b"X-A: b\r\n"[:1])  # dribbling does not extend the deadline
        await asyncio.sleep(0.01)
        if conn.transport.buffer:
            break
    [response] = await conn.responses()
    assert response.status == 408
    assert response.headers[b"connection"] == b"close"


async def test_idle_keep_alive_connection_is_closed() -> None:
    conn = harness(idle_timeout=0.05)
    conn.feed(GET)
    assert [r.status for r in await conn.responses()] == [200]
    for _ in range(100):
        if conn.transport.closed:
            break
        await asyncio.sleep(0.01)
    assert conn.transport.closed
    assert len(parse_responses(conn.transport.buffer)) == 1  # closed quietly


async def test_connection_that_never_sends_is_closed() -> None:
    conn = harness(idle_timeout=0.05, header_timeout=10.0)
    for _ in range(100):
        if conn.transport.closed:
            break
        await asyncio.sleep(0.01)
    assert conn.transport.closed
    assert conn.transport.buffer == b""


async def test_stalled_body_is_answered_408() -> None:
    conn = harness(idle_timeout=0.05)
    conn.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    for _ in range(100):
        if conn.transport.buffer:
            break
        await asyncio.sleep(0.01)
    [response] = await conn.responses()
    assert response.status == 408
    assert b"request body stalled" in response.body


async def test_timeouts_of_zero_are_off() -> None:
    conn = harness(idle_timeout=0, header_timeout=0)
    conn.feed(b"GET / HTTP/1.1\r\n")
    assert conn.protocol._watchdog is None
    await asyncio.sleep(0.05)
    assert not conn.transport.closed


async def test_slow_answer_is_not_a_timeout() -> None:
    """Time the app takes is not the client's: no timeout while a request is answered."""
    conn = harness(idle_timeout=0.03, header_timeout=0.03)
    gate = conn.app.gate = asyncio.Event()
    conn.feed(GET)
    await asyncio.sleep(0.15)
    assert not conn.transport.closed
    gate.set()
    [response] = await conn.responses()
    assert response.status == 200


async def test_client_that_does_not_read_is_dropped() -> None:
    conn = harness(idle_timeout=0.05)
    conn.protocol.pause_writing()
    conn.feed(GET)
    for _ in range(100):
        if conn.transport.aborted:
            break
        await asyncio.sleep(0.01)
    assert conn.transport.aborted
    conn.lose()
    await conn.settle()


# -- disconnects and shutdown -----------------------------------------------------------------


async def test_disconnect_cancels_the_request_in_progress(conn: Harness, app: EchoApp) -> None:
    cancelled = []

    class Watch:
        def cancel(self) -> None:
            cancelled.append(True)

    app.gate = asyncio.Event()
    conn.feed(GET)
    await asyncio.sleep(0)
    app.received[0].watch = Watch()
    conn.lose()
    assert cancelled == [True]
    app.gate.set()
    await conn.settle()
    assert conn.transport.buffer == b""


async def test_request_after_shutdown_is_answered_503(conn: Harness, app: EchoApp) -> None:
    conn.feed(GET)
    await conn.settle()
    conn.protocol.shutdown()
    conn.feed(GET)
    responses = await conn.responses()
    assert [r.status for r in responses] == [200, 503]
    assert responses[1].headers[b"connection"] == b"close"
    assert b"the server is shutting down" in responses[1].body
    assert conn.transport.closed
    assert len(app.received) == 1


async def test_request_in_progress_at_shutdown_finishes(conn: Harness, app: EchoApp) -> None:
    app.gate = asyncio.Event()
    conn.feed(GET)
    await asyncio.sleep(0)
    conn.protocol.shutdown()
    assert conn.protocol.handling
    app.gate.set()
    [response] = await conn.responses()
    assert response.status == 200
    assert response.headers[b"connection"] == b"close"
    assert conn.transport.closed


async def test_requests_queued_at_shutdown_are_answered_503(conn: Harness, app: EchoApp) -> None:
    app.gate = asyncio.Event()
    conn.feed(GET * 3)
    await asyncio.sleep(0)
    conn.protocol.shutdown()
    app.gate.set()
    responses = await conn.responses()
    assert [r.status for r in responses] == [200, 503]
    assert b"connection" not in responses[0].headers
    assert responses[1].headers[b"connection"] == b"close"
    assert len(app.received) == 1


def test_refusal_is_the_last_event() -> None:
    reader = RequestReader(LIMITS)
    events = reader.feed(GET + b"BROKEN\r\n\r\n" + GET, 0.0)
    assert [type(e) for e in events] == [Received, Refusal]
    assert reader.feed(GET, 0.0) == []

"""``StreamingReply`` on the HTTP/1.1 connection, without sockets: chunked framing, the drain
between chunks (a reader that does not read holds the producer), HEAD, HTTP/1.0, and the end
of the producer when the client disconnects or the producer fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from kernel.frontends import HttpLimits, HttpRequest, Reply, StreamingReply
from kernel.frontends._http_server._connection import HttpConnection

LIMITS = HttpLimits(header_timeout=5.0, idle_timeout=5.0)


class Transport:
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.buffer += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class Producer:
    """Yields the given chunks, each once ``go`` allows; records how far it got."""

    def __init__(self, chunks: list[bytes], *, fail_after: int = -1) -> None:
        self.chunks = chunks
        self.pulled = 0
        self.closed = False
        self.cancelled = False
        self.fail_after = fail_after
        self.go = asyncio.Event()
        self.go.set()

    async def run(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                if self.pulled == self.fail_after:
                    raise RuntimeError("the producer failed")
                await self.go.wait()
                self.pulled += 1
                yield chunk
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.closed = True


class Watch:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class StreamApp:
    max_body = 1024

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.watch = Watch()

    async def handle(self, request: HttpRequest) -> Reply | StreamingReply:
        if request.path == "/plain":
            return Reply(200, [], [b"plain"])
        request.watch = self.watch
        headers = [(b"content-type", b"text/event-stream")]
        return StreamingReply(200, headers, self.producer.run())


def _connection(app: StreamApp) -> tuple[HttpConnection, Transport]:
    connection = HttpConnection(app, LIMITS, set())
    transport = Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


async def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_chunks_are_framed_and_the_connection_is_kept() -> None:
    producer = Producer([b"data: 1\n\n", b"", b"data: 22\n\n"])
    connection, transport = _connection(StreamApp(producer))
    connection.data_received(
        b"POST /s HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET /plain HTTP/1.1\r\n\r\n"
    )
    await _settle()
    head, _, rest = bytes(transport.buffer).partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 200 OK",
        b"content-type: text/event-stream",
        b"transfer-encoding: chunked",
    ]
    stream, _, second = rest.partition(b"0\r\n\r\n")
    assert stream == b"9\r\ndata: 1\n\n\r\na\r\ndata: 22\n\n\r\n"  # the empty chunk skipped
    assert second.startswith(b"HTTP/1.1 200 OK\r\n") and second.endswith(b"\r\n\r\nplain")
    assert producer.closed and not transport.closed


async def test_a_reader_that_does_not_read_holds_the_producer() -> None:
    producer = Producer([b"a", b"b", b"c"])
    connection, transport = _connection(StreamApp(producer))
    connection.pause_writing()  # the socket's buffer is full
    connection.data_received(b"POST /s HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    await _settle()
    assert producer.pulled == 0 and transport.buffer == b""
    connection.resume_writing()
    await _settle(3)
    assert producer.pulled >= 1
    connection.pause_writing()
    pulled = producer.pulled
    await _settle()
    assert producer.pulled == pulled  # held again
    connection.resume_writing()
    await _settle()
    assert producer.pulled == 3 and bytes(transport.buffer).endswith(b"0\r\n\r\n")


async def test_head_sends_the_headers_and_closes_the_producer_unread() -> None:
    producer = Producer([b"a"])
    connection, transport = _connection(StreamApp(producer))
    connection.data_received(b"HEAD /s HTTP/1.1\r\n\r\n")
    await _settle()
    assert bytes(transport.buffer) == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    assert producer.pulled == 0 and not transport.closed


async def test_http_1_0_gets_the_raw_body_and_the_end_of_the_connection() -> None:
    producer = Producer([b"ab", b"cd"])
    connection, transport = _connection(StreamApp(producer))
    connection.data_received(b"POST /s HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
    await _settle()
    assert bytes(transport.buffer) == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nabcd"
    )
    assert transport.closed


async def test_disconnect_ends_a_waiting_producer_and_cancels_the_watch() -> None:
    producer = Producer([b"a", b"b", b"c"])
    producer.go.clear()  # the model is slow to produce its first chunk
    app = StreamApp(producer)
    connection, transport = _connection(app)
    connection.data_received(b"POST /s HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    await _settle()
    assert transport.buffer.startswith(b"HTTP/1.1 200 OK\r\n") and not producer.closed
    connection.connection_lost(None)
    await _settle()
    assert app.watch.cancelled
    assert producer.cancelled and producer.closed and producer.pulled == 0


async def test_a_failing_producer_cuts_the_body_short_and_closes() -> None:
    producer = Producer([b"a", b"b"], fail_after=1)
    connection, transport = _connection(StreamApp(producer))
    connection.data_received(b"POST /s HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    await _settle()
    assert bytes(transport.buffer).endswith(b"1\r\na\r\n")  # no final chunk
    assert transport.closed and producer.closed


async def test_connection_close_is_honoured_after_the_stream() -> None:
    producer = Producer([b"a"])
    connection, transport = _connection(StreamApp(producer))
    connection.data_received(b"POST /s HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await _settle()
    assert b"connection: close\r\n" in transport.buffer
    assert bytes(transport.buffer).endswith(b"0\r\n\r\n") and transport.closed

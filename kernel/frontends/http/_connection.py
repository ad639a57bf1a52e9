"""HTTP/1.1 on one TCP connection: httptools parses, :class:`HttpApp` answers, in order.

Why not a general ASGI server: the inference path wants what ASGI hides. The body of a request
is read straight into one buffer sized by ``Content-Length`` (or kept as the received chunk when
it came in one piece), so binary tensors are numpy views of it; a body larger than the server's
limit is refused from its headers, before it is read; a client that disconnects cancels its
inference at once; and a response's tensor buffers are written as they are.

Requests on a connection are answered one after another, in order (pipelined requests wait in a
short queue; reading pauses when it grows). Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from http import HTTPStatus
from typing import Protocol, cast

import httptools
import orjson

from kernel.errors import Status, http_status

from ._app import HttpRequest, Reply

__all__ = ["HttpConnection", "RequestHandler"]


class RequestHandler(Protocol):
    """What a connection hands complete requests to (the REST app, the metrics endpoint)."""

    max_body: int
    """Requests with a larger body are refused from their headers."""

    async def handle(self, request: HttpRequest) -> Reply:
        """The reply to ``request``; must not raise."""
        ...


_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_JOIN_LIMIT = 256 * 1024
"""Responses up to this size go out as one write; larger tensor buffers are written as they are."""
_QUEUE_HIGH, _QUEUE_LOW = 8, 2
_LINGER_SECONDS = 5.0
"""How long a connection refused mid-request keeps draining what the client still sends, so the
client reads the error instead of a reset."""


def _refusal(message: str) -> Reply:
    """A request refused before it reached the app (malformed, too large): INVALID_ARG."""
    return Reply(
        http_status(Status.INVALID_ARG),
        [(b"content-type", b"application/json")],
        [orjson.dumps({"error": message})],
    )


class HttpConnection(asyncio.Protocol):
    """One client connection (created by the event loop for each accepted socket)."""

    def __init__(self, app: RequestHandler, connections: set[HttpConnection]) -> None:
        self._app = app
        self._max_body = app.max_body
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        # the message being parsed
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: bytes | bytearray = b""
        self._filled = 0
        self._expected = -1
        self._ignore_body = False
        # requests parsed and not answered yet
        self._queue: deque[tuple[HttpRequest | Reply, bool]] = deque()
        self._current: HttpRequest | None = None
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._closing = False  # close once the current response is written
        self._discarding = False  # refused: read and drop whatever else arrives
        self._closed = False
        self._stopped = False  # the server is shutting down: no new requests
        self._linger: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.discard(self)
        self._queue.clear()
        if self._linger is not None:
            self._linger.cancel()
        current = self._current
        if current is not None and current.watch is not None:
            current.watch.cancel()  # the client is gone: let the model skip the work
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._discarding or self._closed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol upgrades (h2c, websocket): answer in HTTP/1.1 and close.
            self._closing = True
        except httptools.HttpParserError as exc:
            self._refuse(_refusal(f"malformed HTTP request: {exc}"))

    def eof_received(self) -> bool | None:
        # A client that half-closes is treated as gone (as Triton and uvicorn do): the
        # transport closes, and connection_lost cancels the inference in flight.
        return False

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = b""
        self._filled = 0
        self._expected = -1
        self._ignore_body = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None:
            # llhttp has already refused a malformed Content-Length.
            self._expected = int(length)
            if self._expected > self._max_body:
                self._ignore_body = True
                self._refuse(
                    _refusal(
                        f"request body of {self._expected} bytes is larger than the"
                        f" {self._max_body} bytes this server accepts (http_max_input_bytes)",
                    )
                )
                return
        if (
            self._headers.get("expect", "").lower() == "100-continue"
            and self._task is None
            and not self._queue
            and self._transport is not None
        ):
            self._transport.write(_CONTINUE)

    def on_body(self, chunk: bytes) -> None:
        if self._ignore_body:
            return
        size = len(chunk)
        if self._expected >= 0:
            if not self._filled and size == self._expected:
                self._body = chunk  # the usual case: the whole body arrived at once
            else:
                if not self._filled:
                    self._body = bytearray(self._expected)
                body = self._body
                assert isinstance(body, bytearray)
                body[self._filled : self._filled + size] = chunk
            self._filled += size
            return
        # chunked transfer encoding: no size known in advance
        if not self._filled:
            self._body = bytearray()
        body = self._body
        assert isinstance(body, bytearray)
        body += chunk
        self._filled += size
        if self._filled > self._max_body:
            self._ignore_body = True
            self._refuse(
                _refusal(
                    f"request body is larger than the {self._max_body} bytes this server accepts"
                    " (http_max_input_bytes)",
                )
            )

    def on_message_complete(self) -> None:
        if self._ignore_body or self._discarding or self._stopped:
            return
        url = self._url
        # origin-form ("/v2/...?q") is the norm; absolute-form needs the URL parser
        path = url.partition(b"?")[0] if url[:1] == b"/" else httptools.parse_url(url).path
        method = self._parser.get_method().decode("latin-1")
        request = HttpRequest(method, (path or b"/").decode("latin-1"), self._headers, self._body)
        self._enqueue(request, self._parser.should_keep_alive())

    # -- answering ----------------------------------------------------------------------------

    def _enqueue(self, item: HttpRequest | Reply, keep_alive: bool) -> None:
        self._queue.append((item, keep_alive))
        if self._task is None:
            self._task = self._loop.create_task(self._answer())
        elif len(self._queue) >= _QUEUE_HIGH and not self._reading_paused:
            self._reading_paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    def _refuse(self, reply: Reply) -> None:
        """Answer ``reply`` after what is queued, then stop reading requests and close."""
        self._discarding = True
        self._enqueue(reply, False)

    async def _answer(self) -> None:
        try:
            while self._queue and not self._closed:
                item, keep_alive = self._queue.popleft()
                if self._reading_paused and len(self._queue) <= _QUEUE_LOW:
                    self._reading_paused = False
                    if self._transport is not None:
                        self._transport.resume_reading()
                if isinstance(item, Reply):
                    reply = item
                else:
                    self._current = item
                    try:
                        reply = await self._app.handle(item)
                    finally:
                        self._current = None
                if self._closed:
                    return
                if self._writable is not None and not self._writable.done():
                    await self._writable
                    if self._closed:
                        return
                close = not keep_alive or self._closing
                self._write(reply, close)
                if close:
                    self._close_after_write()
                    return
        finally:
            self._task = None

    def _write(self, reply: Reply, close: bool) -> None:
        transport = self._transport
        assert transport is not None
        parts: list[bytes | memoryview] = [_STATUS_LINES[reply.status]]
        for name, value in reply.headers:
            parts += (name, b": ", value, b"\r\n")
        body = reply.body
        length = reply.length
        parts.append(b"content-length: %d\r\n" % length)
        if close:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if length <= _JOIN_LIMIT:
            parts += body
            transport.write(b"".join(parts))
        else:
            transport.write(b"".join(parts))
            for buffer in body:
                transport.write(buffer)

    def _close_after_write(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._discarding and transport.can_write_eof():
            # Refused mid-request: keep reading (and dropping) what the client still sends
            # for a while, so it sees our answer rather than a connection reset.
            transport.write_eof()
            self._linger = self._loop.call_later(_LINGER_SECONDS, transport.close)
        else:
            transport.close()

    # -- shutdown -----------------------------------------------------------------------------

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task answering this connection's requests, while there are any."""
        return self._task

    def shutdown(self) -> None:
        """Stop taking requests: close now if idle, else after the response in progress."""
        self._stopped = True
        self._closing = True
        self._queue.clear()
        if self._task is None and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now (shutdown timeout passed)."""
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.abort()

"""HTTP/1.1 on one TCP connection: :class:`RequestReader` parses, the handler answers, in order.

Why not a general ASGI server: the inference path wants what ASGI hides. A body that arrived in
one read is handed over as those bytes, so binary tensors are numpy views of them; a body
larger than the server's limit is refused from its headers, before it is read; a client that
disconnects cancels its inference at once; and a response's tensor buffers are written as they
are.

Requests on a connection are answered one after another, in order (pipelined requests wait in a
short queue; reading pauses when it grows past 8 requests or their bodies past the body limit).
A refused request (malformed, too large) is answered after the requests before it, then the
connection closes. One watchdog timer per connection
enforces the header-read timeout, the keep-alive idle timeout and the stall timeouts of a body
upload or a response download; it is re-armed lazily, never per request. Nothing here blocks
the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from http import HTTPStatus
from typing import cast

from ._reader import CONTINUE, Received, Refusal, RequestReader, error_reply
from ._types import (
    HttpLimits,
    HttpRequest,
    Reply,
    RequestHandler,
    StreamingReply,
)

__all__ = ["HttpConnection", "RequestHandler"]

log = logging.getLogger("kernel.frontends.http")


_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_JOIN_LIMIT = 256 * 1024
"""Responses up to this size are joined into one write; larger tensor buffers are written as
they are, with the head, in one gathered write."""
_QUEUE_HIGH, _QUEUE_LOW = 8, 2
_LINGER_SECONDS = 5.0
"""How long a connection refused mid-request keeps draining what the client still sends, so the
client reads the error instead of a reset."""


class HttpConnection(asyncio.Protocol):
    """One client connection (created by the event loop for each accepted socket)."""

    def __init__(
        self, app: RequestHandler, limits: HttpLimits, connections: set[HttpConnection]
    ) -> None:
        self._app = app
        # a timeout of 0 (or less) is off
        self._header_timeout = limits.header_timeout if limits.header_timeout > 0 else math.inf
        self._idle_timeout = limits.idle_timeout if limits.idle_timeout > 0 else math.inf
        self._period = min(self._header_timeout, self._idle_timeout)
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._reader = RequestReader(limits)
        self._transport: asyncio.Transport | None = None
        # requests parsed and not answered yet: (request or refusal, keep-alive, HEAD, HTTP/1.0)
        self._queue: deque[tuple[HttpRequest | Reply, bool, bool, bool]] = deque()
        self._current: HttpRequest | None = None
        self._task: asyncio.Task[None] | None = None
        self._streaming = False  # a StreamingReply's body is being sent
        self._reading_paused = False
        # pipelined requests waiting hold their bodies: reading pauses past either bound
        self._queued_bytes = 0
        self._max_queued_bytes = limits.max_body
        self._writable: asyncio.Future[None] | None = None
        self._write_paused_at = 0.0
        self._refused = False  # a refusal is queued: read and drop whatever else arrives
        self._closed = False
        self._stopped = False  # the server is shutting down: no new requests
        self._linger: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_activity = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        now = self._loop.time()
        self._last_activity = now
        self._arm(now + self._period)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.discard(self)
        self._queue.clear()
        for timer in (self._linger, self._watchdog):
            if timer is not None:
                timer.cancel()
        current = self._current
        if current is not None and current.watch is not None:
            current.watch.cancel()  # the client is gone: let the model skip the work
        if self._streaming and self._task is not None:
            # a stream's producer may wait long for its next chunk: end it now
            self._task.cancel()
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._last_activity = now = self._loop.time()
        for event in self._reader.feed(data, now):
            if type(event) is Received:
                self._enqueue(event.request, event.keep_alive, event.head, event.http10)
            elif event is CONTINUE:
                if self._task is None and not self._stopped and self._transport is not None:
                    self._transport.write(_CONTINUE)
            else:
                assert isinstance(event, Refusal)
                self._refuse(event.reply)

    def eof_received(self) -> bool | None:
        # A client that half-closes is treated as gone (as Triton and uvicorn do): the
        # transport closes, and connection_lost cancels the inference in flight.
        return False

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()
            self._write_paused_at = self._loop.time()

    def resume_writing(self) -> None:
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)
        self._last_activity = self._loop.time()

    # -- answering ----------------------------------------------------------------------------

    def _enqueue(
        self, item: HttpRequest | Reply, keep_alive: bool, head: bool = False, http10: bool = False
    ) -> None:
        self._queue.append((item, keep_alive, head, http10))
        if type(item) is HttpRequest:
            self._queued_bytes += len(item.body)
        if self._task is None:
            self._task = self._loop.create_task(self._answer())
        elif (
            len(self._queue) >= _QUEUE_HIGH or self._queued_bytes > self._max_queued_bytes
        ) and not self._reading_paused:
            self._reading_paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    def _refuse(self, reply: Reply) -> None:
        """Answer ``reply`` after what is queued, then stop reading requests and close."""
        self._refused = True
        self._enqueue(reply, False)

    async def _answer(self) -> None:
        try:
            while self._queue and not self._closed:
                item, keep_alive, head, http10 = self._queue.popleft()
                if type(item) is HttpRequest:
                    self._queued_bytes -= len(item.body)
                if (
                    self._reading_paused
                    and len(self._queue) <= _QUEUE_LOW
                    and self._queued_bytes <= self._max_queued_bytes // 2
                ):
                    self._reading_paused = False
                    if self._transport is not None:
                        self._transport.resume_reading()
                if isinstance(item, Reply):
                    reply = item
                elif self._stopped:
                    reply = error_reply(503, "the server is shutting down")
                    keep_alive = False
                else:
                    self._current = item
                    try:
                        answer = await self._app.handle(item)
                        if type(answer) is StreamingReply:
                            close = not keep_alive or http10 or self._stopped
                            if not await self._stream(answer, close, head, http10):
                                self._close_after_write()
                                return
                            continue
                        reply = cast(Reply, answer)
                    finally:
                        self._current = None
                if self._writable is not None and not self._writable.done():
                    await self._writable
                transport = self._transport
                if self._closed or transport is None or transport.is_closing():
                    return
                # stopping: close now, unless a queued request is to be told 503 first
                close = not keep_alive or (self._stopped and not self._queue)
                self._write(reply, close, head)
                if close:
                    self._close_after_write()
                    return
        finally:
            self._task = None
            self._last_activity = self._loop.time()

    def _write(self, reply: Reply, close: bool, head: bool) -> None:
        transport = self._transport
        assert transport is not None
        parts: list[bytes | memoryview] = [_STATUS_LINES[reply.status]]
        for name, value in reply.headers:
            parts += (name, b": ", value, b"\r\n")
        body = reply.body
        length = reply.length
        if close:
            parts.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % length)
        else:
            parts.append(b"content-length: %d\r\n\r\n" % length)
        if head:
            transport.write(b"".join(parts))
        elif length <= _JOIN_LIMIT:
            parts += body
            transport.write(b"".join(parts))
        else:
            # one gathered write (uvloop: one writev, nothing copied; what the socket does not
            # take at once is kept as views of the buffers)
            parts += body
            transport.writelines(parts)

    async def _stream(self, reply: StreamingReply, close: bool, head: bool, http10: bool) -> bool:
        """Send ``reply`` chunk by chunk, awaiting the drain between chunks; returns whether
        the connection may serve another request (the whole body went out, no ``close``)."""
        chunks = reply.chunks
        self._streaming = True
        try:
            if self._writable is not None and not self._writable.done():
                await self._writable
            transport = self._transport
            if self._closed or transport is None or transport.is_closing():
                return False
            parts: list[bytes] = [_STATUS_LINES[reply.status]]
            for name, value in reply.headers:
                parts += (name, b": ", value, b"\r\n")
            if not http10:
                parts.append(b"transfer-encoding: chunked\r\n")
            if close:
                parts.append(b"connection: close\r\n")
            parts.append(b"\r\n")
            transport.write(b"".join(parts))
            if head:
                return not close
            async for chunk in chunks:
                if not chunk:
                    continue
                if self._closed or transport.is_closing():
                    return False
                if http10:
                    transport.write(chunk)
                else:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                writable = self._writable
                if writable is not None and not writable.done():
                    await writable  # a slow reader holds the producer here
            if self._closed or transport.is_closing():
                return False
            if not http10:
                transport.write(b"0\r\n\r\n")
            return not close
        except Exception:
            log.exception("a streaming reply failed: closing its connection")
            return False
        finally:
            self._streaming = False
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    def _close_after_write(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._refused and transport.can_write_eof():
            # Refused mid-request: keep reading (and dropping) what the client still sends
            # for a while, so it sees our answer rather than a connection reset.
            transport.write_eof()
            self._linger = self._loop.call_later(_LINGER_SECONDS, transport.close)
        else:
            transport.close()

    # -- timeouts -----------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        if when != math.inf:
            self._watchdog = self._loop.call_at(when, self._watch)

    def _watch(self) -> None:
        """Enforce the timeouts; re-arm for at most ``header_timeout`` ahead.

        Never arming further ahead than that is what lets a new request's header deadline go
        unscheduled: the watchdog always fires before it.
        """
        self._watchdog = None
        transport = self._transport
        if self._closed or transport is None or self._refused:
            return
        now = self._loop.time()
        next_check = now + self._period
        started = self._reader.head_started
        writable = self._writable
        if writable is not None and not writable.done():
            # the client does not read what we answered
            if now - self._write_paused_at >= self._idle_timeout:
                self._abort_transport()
                return
        elif started is not None and not self._reading_paused:
            deadline = started + self._header_timeout
            if now >= deadline:
                self._timed_out(f"request headers did not arrive within {self._header_timeout} s")
                return
            next_check = min(next_check, deadline)
        elif self._task is None and not self._reading_paused:
            # idle between requests, or a body upload that stalled
            deadline = self._last_activity + self._idle_timeout
            if now >= deadline:
                if self._reader.in_message:
                    self._timed_out(f"request body stalled for {self._idle_timeout} s")
                else:
                    transport.close()
                return
            next_check = min(next_check, deadline)
        self._arm(next_check)

    def _timed_out(self, message: str) -> None:
        self._reader.done = True
        self._refuse(error_reply(408, message))

    def _abort_transport(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- shutdown -----------------------------------------------------------------------------

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task answering this connection's requests, while there are any."""
        return self._task

    def shutdown(self) -> None:
        """Stop taking requests: the request in progress finishes; the next one (queued behind
        it, or arriving later) is answered 503 with ``Connection: close``, which ends the
        connection (RFC 9112 section 9.6: the client retries what it pipelined after it)."""
        self._stopped = True

    @property
    def handling(self) -> bool:
        """The app is working on a request of this connection."""
        return self._current is not None

    def close(self) -> None:
        """Close once what was written is sent (the drain is over)."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now (shutdown timeout passed)."""
        if self._task is not None:
            self._task.cancel()
        self._abort_transport()

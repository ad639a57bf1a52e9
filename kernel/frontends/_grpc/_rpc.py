"""The gRPC layer: one rpc on one HTTP/2 stream, as gRPC's "PROTOCOL-HTTP2" document defines it.

Above the sans-IO HTTP/2 core (:mod:`._connection`) and below the servicers: it checks that a
request is gRPC (``:method`` POST, a ``content-type`` starting with ``application/grpc``:
otherwise HTTP 405 / 415, as grpc's own servers answer; ``te`` other than ``trailers`` is already
a malformed request for the core), reassembles length-prefixed messages (a message's frames
are joined once, when it is complete, and one of :data:`LARGE_MESSAGE` or more grows in one
buffer as they come; its length prefix is checked against the limit before any of it is
buffered), inflates compressed ones off the event loop (:mod:`kernel.frontends._inflate`),
runs the ``grpc-timeout`` deadline, and ends every rpc with ``grpc-status`` trailers.

Flow-control credit follows the handler: a message still being assembled is credited as it
arrives (so a unary request larger than every window completes, never beyond the message limit),
while a whole message waiting in a streaming rpc's queue is credited only when the handler takes
it. A streaming client therefore cannot queue more than a window of messages.

A handler sees a :class:`Stream`: ``recv_message``, ``send_message`` and async iteration over
requests (the part of grpclib's ``Stream`` the betterproto2-generated services use), and raises
``GRPCError`` to end the call with a status; anything else it raises ends the call with
``UNKNOWN``. A unary reply leaves with its headers and trailers in one write; a handler may
hand it over already serialized and framed (:class:`Framed`). A deadline that
expires ends the rpc at once with DEADLINE_EXCEEDED, even while replies wait for flow-control
room (they are dropped; a reply already half sent resets the stream instead).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from grpclib.const import Cardinality
from grpclib.const import Status as GrpcStatus
from grpclib.exceptions import GRPCError

from kernel.frontends._grpc._hpack import encode
from kernel.frontends._grpc._wire import (
    DEADLINE_EXCEEDED,
    INTERNAL,
    MESSAGE,
    OK,
    OK_TRAILERS,
    RESOURCE_EXHAUSTED,
    RESPONSE_HEADERS,
    UNIMPLEMENTED,
    UNKNOWN,
    status_trailers,
    timeout_seconds,
)
from kernel.frontends._inflate import InflateError, TooLargeError, inflate

if TYPE_CHECKING:
    from kernel.frontends._grpc._server import ServerConnection

__all__ = ["Framed", "Method", "Stream", "refusal", "trailers_only"]

log = logging.getLogger("kernel.frontends.grpc")

LARGE_MESSAGE = 64 * 1024
"""A message from this size on that arrives in several frames is assembled in one buffer that
grows as its frames come (one copy of each byte), not joined from a list of frames at the end."""


@dataclass(frozen=True, slots=True)
class Method:
    """One rpc: its handler and how its messages are (de)serialized."""

    func: Callable[[Stream], Awaitable[None]]
    cardinality: Cardinality
    parse: Callable[[Any], Any]
    serialize: Callable[[Any], bytes]


def trailers_only(http_status: bytes, status: int, message: str | None) -> bytes:
    """A whole answer in one header block (gRPC's "Trailers-Only" response)."""
    if http_status == b"200":
        return RESPONSE_HEADERS + status_trailers(status, message)
    head = encode([(b":status", http_status), (b"content-type", b"application/grpc")])
    return head + status_trailers(status, message)


def refusal(fields: dict[bytes, bytes]) -> bytes | None:
    """The answer to a request that is not gRPC, or ``None`` when it is."""
    method = fields.get(b":method", b"")
    if method != b"POST":
        return trailers_only(
            b"405", INTERNAL, f"Method '{method.decode(errors='replace')}' not supported"
        )
    content_type = fields.get(b"content-type")
    if content_type is None or not content_type.startswith(b"application/grpc"):
        shown = "" if content_type is None else content_type.decode(errors="replace")
        return trailers_only(b"415", INTERNAL, f'invalid gRPC request content-type "{shown}"')
    return None


class Framed:
    """A unary reply its handler already serialized and framed (the 5-byte message prefix
    included), so the transport copies it once more at most (see :mod:`._response_wire`)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Compressed:
    """A compressed request message, kept as received until the handler asks for it."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class StreamGoneError(Exception):
    """The stream is gone (reset by either side, answered, or its connection closed)."""


class Stream:
    """One rpc as its handler sees it."""

    __slots__ = (
        "_answered",
        "_deadline",
        "_encoding",
        "_gone",
        "_large",
        "_link",
        "_messages",
        "_method",
        "_needed",
        "_partial",
        "_partial_size",
        "_waiter",
        "_window_waiter",
        "answer_ready",
        "client_done",
        "headers_sent",
        "id",
        "metadata",
        "reply",
        "task",
    )

    def __init__(self, link: ServerConnection, stream_id: int, method: Method) -> None:
        self._link = link
        self.id = stream_id
        self._method = method
        self._encoding = b""
        self._partial: list[bytes] = []  # DATA not yet forming a whole message
        self._partial_size = 0
        self._needed = MESSAGE.size  # bytes _partial must reach before a message can complete
        self._large: bytearray | None = None  # a large message being assembled (see _take)
        self._messages: deque[tuple[Any, int]] = deque()  # (request, bytes not yet credited)
        self._waiter: asyncio.Future[None] | None = None
        self._window_waiter: asyncio.Future[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._answered = False  # our trailers are queued: nothing more from the handler
        self._gone = False  # reset or its connection closed
        self.client_done = False
        self.headers_sent = False
        self.reply: Any = None
        self.task: asyncio.Task[None] | None = None
        self.metadata: dict[bytes, bytes] = {}
        """The request's header fields by (lower-case) name, pseudo-headers included."""
        self.answer_ready: Callable[[], bool] | None = None
        """Set by a handler that awaits its reply: whether the reply is ready, so its task
        sends it in this loop turn (the connection then leaves the write to the last such rpc:
        see :meth:`ServerConnection.answered`)."""

    # -- what handlers use ----------------------------------------------------------------------

    async def recv_message(self) -> Any:
        """The next request, or ``None`` once the client closed its side."""
        while not self._messages:
            if self.client_done or self._gone or self._answered:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message, held = self._messages.popleft()
        if held:
            self._link.consume(self.id, held)
        if isinstance(message, _Compressed):
            return await anyio.to_thread.run_sync(self._inflate, message.data)
        return message

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while (message := await self.recv_message()) is not None:
            yield message

    async def send_message(self, message: Any) -> None:
        """Send one reply (a unary rpc's reply leaves with the trailers, in one write)."""
        if self._method.cardinality is Cardinality.UNARY_UNARY:
            self.reply = message
            return
        if self._gone or self._answered:
            raise StreamGoneError
        data = self._method.serialize(message)
        if not self._check_size(data):
            raise StreamGoneError
        link = self._link
        if not self.headers_sent:
            self.headers_sent = True
            link.core.send_headers(self.id, RESPONSE_HEADERS)
        link.core.send_data(self.id, MESSAGE.pack(0, len(data)) + data)
        link.flush()
        if link.core.pending(self.id):  # no room in the windows: wait, so a producer cannot pile up
            self._window_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._window_waiter
            finally:
                self._window_waiter = None
        await link.writable()

    # -- the connection's side ------------------------------------------------------------------

    def start(self, fields: dict[bytes, bytes], end_stream: bool) -> None:
        """The rpc begins (``fields``: its request header fields, by name)."""
        self.metadata = fields
        self._encoding = fields.get(b"grpc-encoding", b"")
        loop = asyncio.get_running_loop()
        timeout = fields.get(b"grpc-timeout")
        if timeout is not None:
            seconds = timeout_seconds(timeout)
            if seconds is not None:
                self._deadline = loop.call_later(seconds, self._expire)
        if self._method.cardinality is not Cardinality.UNARY_UNARY:
            self.task = loop.create_task(self._run())
        if end_stream:
            self.client_closed()

    def data(self, payload: memoryview, end_stream: bool) -> None:
        if payload:
            held = self._take(payload)
            if len(payload) > held and not self._answered:  # inside a read: flushed after it
                self._link.core.consume(self.id, len(payload) - held)
        if end_stream:
            self.client_closed()

    def _take(self, payload: memoryview) -> int:
        """Reassemble messages; return how many of ``payload``'s bytes wait in the queue."""
        if self._large is not None:
            return self._take_large(payload)
        before = 0  # bytes of the buffer that arrived earlier
        if self._partial:
            before = self._partial_size
            self._partial.append(bytes(payload))
            self._partial_size += len(payload)
            if self._partial_size < self._needed:
                return 0  # a large message arrives in many frames: join them once, at the end
            buffer = memoryview(b"".join(self._partial))
            self._partial.clear()
            self._partial_size = 0
        else:
            buffer = payload
        streaming = self._method.cardinality is not Cardinality.UNARY_UNARY
        held = 0
        pos, end = 0, len(buffer)
        limit = self._link.max_message_bytes
        while end - pos >= MESSAGE.size:
            compressed, length = MESSAGE.unpack_from(buffer, pos)
            if length > limit:
                self._refuse(
                    RESOURCE_EXHAUSTED, f"Received message larger than max ({length} vs. {limit})"
                )
                return 0
            if end - pos - MESSAGE.size < length:
                self._needed = MESSAGE.size + length
                break
            start = pos + MESSAGE.size
            ours = start + length - max(pos, before) if streaming else 0
            pos = start + length
            self._deliver(buffer[start:pos], compressed, ours)
            if self._answered:
                return 0
            held += ours
        if pos < end:
            if self._needed - MESSAGE.size >= LARGE_MESSAGE:  # its prefix is here: see below
                self._large = bytearray(buffer[pos:])
                self._partial_size = len(self._large)
                return held
            rest = bytes(buffer[pos:])
            self._partial.append(rest)
            self._partial_size = len(rest)
            if len(rest) < MESSAGE.size:
                self._needed = MESSAGE.size
        else:
            self._needed = MESSAGE.size
        return held

    def _take_large(self, payload: memoryview) -> int:
        """A large message arriving in many frames: each frame's bytes are copied once, into
        one buffer that grows with what arrived (never sized by the prefix's claim), and the
        message is parsed from that buffer, which its large fields may keep as views."""
        large = self._large
        assert large is not None
        piece = payload[: self._needed - len(large)]
        large += piece
        self._partial_size = len(large)
        if len(large) < self._needed:
            return 0
        self._large = None
        self._partial_size = 0
        self._needed = MESSAGE.size
        ours = len(piece) if self._method.cardinality is not Cardinality.UNARY_UNARY else 0
        self._deliver(memoryview(large).toreadonly()[MESSAGE.size :], large[0], ours)
        if self._answered:
            return 0
        if len(piece) < len(payload):  # the next message begins in the same frame
            return ours + self._take(payload[len(piece) :])
        return ours

    def _deliver(self, data: memoryview, compressed: int, held: int) -> None:
        message: Any
        if compressed:
            if self._encoding not in (b"gzip", b"deflate"):
                self._refuse(
                    UNIMPLEMENTED,
                    f"Compression algorithm '{self._encoding.decode(errors='replace')}' not"
                    " supported",
                )
                return
            message = _Compressed(bytes(data))  # inflated off the loop, when received
        else:
            try:
                message = self._method.parse(data)
            except Exception as exc:
                self._refuse(INTERNAL, f"Failed to parse the request message: {exc}")
                return
        if self._method.cardinality is Cardinality.UNARY_UNARY:
            if self._messages:
                self._refuse(UNIMPLEMENTED, "received more than one request on a unary rpc")
                return
            self._messages.append((message, 0))
            return
        self._messages.append((message, held))
        self._wake()

    def _inflate(self, data: bytes) -> Any:
        """Decompress and parse a compressed request (in a worker thread: it may be large)."""
        limit = self._link.max_message_bytes
        try:
            plain = inflate(self._encoding.decode(), data, limit)
        except InflateError as exc:
            raise GRPCError(
                GrpcStatus(INTERNAL), f"Failed to decompress the request: {exc}"
            ) from None
        except TooLargeError as exc:
            raise GRPCError(
                GrpcStatus(RESOURCE_EXHAUSTED),
                f"Received message larger than max ({exc.size} vs. {limit})",
            ) from None
        try:
            return self._method.parse(plain)
        except Exception as exc:
            raise GRPCError(
                GrpcStatus(INTERNAL), f"Failed to parse the request message: {exc}"
            ) from None

    def client_closed(self) -> None:
        if self.client_done:
            return
        self.client_done = True
        if self._partial_size and not self._answered:
            self._refuse(INTERNAL, "the request stream ended inside a message")
            return
        if self._method.cardinality is Cardinality.UNARY_UNARY and not self._answered:
            if not self._messages:
                self._refuse(UNIMPLEMENTED, "the unary rpc ended without a request")
                return
            self.task = asyncio.get_running_loop().create_task(self._run())
        self._wake()

    def reset(self) -> None:
        """The client reset the stream or the connection closed: cancel the handler."""
        self._gone = True
        self._cancel_deadline()
        if self.task is not None:
            self.task.cancel()
        self._wake()
        self.sent(gone=True)

    def sent(self, gone: bool = False) -> None:
        """Everything queued went out (or never will): a waiting ``send_message`` returns."""
        waiter = self._window_waiter
        if waiter is not None and not waiter.done():
            if gone:
                waiter.set_exception(StreamGoneError())
            else:
                waiter.set_result(None)
        if self._answered:
            self._cancel_deadline()

    @property
    def answered(self) -> bool:
        """Our trailers are queued (they may still wait behind replies)."""
        return self._answered

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _refuse(self, status: int, message: str) -> None:
        """End the rpc before its handler answered (bad request message)."""
        if self.task is not None:
            self.task.cancel()
        self.finish(status, message)

    def _expire(self) -> None:
        self._deadline = None
        if self._gone:
            return
        if not self._answered and self.task is not None and not self.task.done():
            self.task.cancel()
        block = status_trailers(DEADLINE_EXCEEDED, "Deadline Exceeded")
        if not self.headers_sent:
            block = RESPONSE_HEADERS + block
        self.headers_sent = True
        self._answered = True
        self._link.core.abort(self.id, block)  # even while replies wait for room
        self._link.answered(self)
        self.sent(gone=True)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    async def _run(self) -> None:
        try:
            await self._method.func(self)
        except GRPCError as error:
            self.finish(error.status.value, error.message or "")
        except (asyncio.CancelledError, StreamGoneError):
            return  # reset, expired or refused: whoever cancelled answered (or nobody listens)
        except Exception as exc:
            log.exception("gRPC handler failed")
            self.finish(UNKNOWN, f"Unexpected error: {type(exc).__name__}: {exc}")
        else:
            if self._gone or self._answered:
                return  # expired or reset while the handler finished: already answered
            reply = self.reply
            if type(reply) is Framed:
                self._send_unary(reply.data)
            elif reply is not None:
                data = self._method.serialize(reply)
                self._send_unary(MESSAGE.pack(0, len(data)) + data)
            else:
                self.finish(OK, None)

    def _check_size(self, data: bytes, prefix: int = 0) -> bool:
        limit = self._link.max_message_bytes
        size = len(data) - prefix
        if size > limit:
            self.finish(RESOURCE_EXHAUSTED, f"Sent message larger than max ({size} vs. {limit})")
            return False
        return True

    def _send_unary(self, framed: bytes) -> None:
        """Send the reply (``framed``: behind its message prefix) with headers and trailers."""
        if not self._check_size(framed, MESSAGE.size):
            return
        self._answered = True
        self.headers_sent = True
        link = self._link
        sent = link.core.send_unary(self.id, RESPONSE_HEADERS, framed, OK_TRAILERS)
        if sent and self._deadline is not None:  # else the deadline may still cut the wait short
            self._cancel_deadline()
        link.answered(self)

    def finish(self, status: int, message: str | None) -> None:
        """End the rpc with ``grpc-status`` (after the replies already queued)."""
        if self._gone or self._answered:
            return
        self._answered = True
        block = status_trailers(status, message)
        if not self.headers_sent:
            block = RESPONSE_HEADERS + block
        self.headers_sent = True
        link = self._link
        link.core.send_trailers(self.id, block)
        if not link.core.pending(self.id):
            self._cancel_deadline()  # else the deadline may still cut the wait short
        link.answered(self)

"""gRPC over HTTP/2 on the event loop: the kernel's own transport for its gRPC endpoint.

Why not a library: grpcio's asyncio server spends ~200 us of event-loop time per unary call on
this project's 2-core benchmark machine (its completion queue is polled in another thread and
every event crosses back), and grpclib's generic HTTP/2 state machine (h2) caps near 1,700
calls/s. A gRPC server needs a small, well-defined part of HTTP/2 (RFC 9113), and that part is
here: one :class:`asyncio.Protocol` per connection that parses frames (their layout is in
:mod:`._wire`), decodes headers (:mod:`._hpack`), reassembles length-prefixed messages per
stream, and writes each reply in as few writes as the flow-control windows allow.

What the server does, by frame type:

* SETTINGS: ours go out first (no push, a 4 MiB stream window, 1 MiB frames); the client's are
  acknowledged and applied (its initial window and frame size bound what we send).
* HEADERS / CONTINUATION: a new stream; ``:path`` selects the rpc, ``grpc-timeout`` sets a
  deadline, ``grpc-encoding`` says how compressed messages are compressed (gzip, deflate; they
  are inflated in a worker thread when the handler reads them).
* DATA: messages of the stream; received bytes are credited back to the client as they arrive,
  in pieces of at least 64 KiB (a message may be as large as the configured limit, checked from
  its length prefix, and after inflating).
* WINDOW_UPDATE: more room to send; replies waiting for room go out.
* PING: answered; RST_STREAM: the rpc's task is cancelled; GOAWAY: no new streams.

Bytes that break the protocol end their connection with GOAWAY and the RFC's error code; other
connections never notice. :meth:`GrpcServer.stop` sends GOAWAY, gives open rpcs a grace period,
then closes every connection and waits until the rpcs it cancelled unwound.

Every rpc runs as its own task. A handler sees a :class:`Stream`: ``recv_message``,
``send_message`` and async iteration over requests, and raises ``GRPCError`` to end the call
with a status; anything else it raises ends the call with ``UNKNOWN``. A unary reply goes out as
one write (headers, message and trailers together).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any, cast

import anyio.to_thread
from grpclib.const import Cardinality
from grpclib.const import Status as GrpcStatus
from grpclib.exceptions import GRPCError

from kernel.frontends._inflate import InflateError, TooLargeError, inflate
from kernel.frontends.grpc._hpack import Decoder, HpackError
from kernel.frontends.grpc._wire import (
    ACK,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEADLINE_EXCEEDED,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    INTERNAL,
    INTERNAL_ERROR,
    MAX_WINDOW,
    MESSAGE,
    NO_ERROR,
    OK,
    OK_TRAILERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RESOURCE_EXHAUSTED,
    RESPONSE_HEADERS,
    RST_STREAM,
    SETTINGS,
    UNIMPLEMENTED,
    UNKNOWN,
    WINDOW_UPDATE,
    Http2ConnectionError,
    frame,
    headers_frames,
    status_trailers,
    timeout_seconds,
    unpad,
)

__all__ = ["GrpcServer", "Method", "Stream"]

log = logging.getLogger("kernel.frontends.grpc")

_OUR_WINDOW = 1 << 22  # per stream, announced in SETTINGS
_OUR_CONNECTION_WINDOW = 1 << 24
_OUR_MAX_FRAME = 1 << 20
_CREDIT_THRESHOLD = 1 << 16  # received bytes are credited back in pieces at least this big
_MAX_HEADER_BLOCK = 1 << 16  # a request's headers, CONTINUATION frames included


@dataclass(frozen=True, slots=True)
class Method:
    """One rpc: its handler and how its messages are (de)serialized."""

    func: Callable[[Stream], Awaitable[None]]
    cardinality: Cardinality
    parse: Callable[[Any], Any]
    serialize: Callable[[Any], bytes]


class _Compressed:
    """A compressed request message, kept as received until the handler asks for it."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _StreamGoneError(Exception):
    """The stream is gone (reset by either side or its connection closed)."""


class Stream:
    """One rpc as its handler sees it (the part of grpclib's ``Stream`` the services use)."""

    __slots__ = (
        "_connection",
        "_deadline",
        "_encoding",
        "_messages",
        "_method",
        "_needed",
        "_partial",
        "_partial_size",
        "_reset",
        "_waiter",
        "_window_waiter",
        "client_done",
        "headers_sent",
        "id",
        "outbox",
        "reply",
        "send_window",
        "task",
        "trailers_waiting",
        "unacked",
    )

    def __init__(self, connection: _Connection, stream_id: int, method: Method) -> None:
        self._connection = connection
        self.id = stream_id
        self._method = method
        self._encoding = b""
        self._partial: list[bytes] = []  # DATA not yet forming a whole message
        self._partial_size = 0
        self._needed = MESSAGE.size  # bytes _partial must reach before a message can complete
        self._messages: deque[Any] = deque()  # parsed requests not yet received by the handler
        self._waiter: asyncio.Future[None] | None = None
        self.client_done = False
        self._reset = False  # the rpc is over for us: answered, reset or its connection gone
        self.task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.outbox: deque[memoryview] = deque()  # DATA waiting for flow-control room
        self._window_waiter: asyncio.Future[None] | None = None
        self.trailers_waiting: bytes | None = None  # waiting behind outbox
        self.headers_sent = False
        self.reply: Any = None
        self.send_window = connection.peer_window
        self.unacked = 0

    # -- what handlers use ----------------------------------------------------------------------

    async def recv_message(self) -> Any:
        """The next request, or ``None`` once the client closed its side."""
        while not self._messages:
            if self.client_done or self._reset:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._messages.popleft()
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
        if self._reset:
            raise _StreamGoneError
        self._connection.send_message(self, self._method.serialize(message))
        if self.outbox:  # no room in the windows: wait, so a fast producer cannot pile up
            await self._wait_window()
        await self._connection.writable()

    # -- the connection's side --------------------------------------------------------------------

    def start(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        loop = asyncio.get_running_loop()
        for name, value in headers:
            if name == b"grpc-encoding":
                self._encoding = value
            elif name == b"grpc-timeout":
                seconds = timeout_seconds(value)
                if seconds is not None:
                    self._deadline = loop.call_later(seconds, self._expire)
        if self._method.cardinality is not Cardinality.UNARY_UNARY:
            self.task = loop.create_task(self._run())
        if end_stream:
            self.client_closed()

    def data(self, payload: memoryview, end_stream: bool) -> None:
        if payload:
            self._take(payload)
        if end_stream:
            self.client_closed()

    def _take(self, payload: memoryview) -> None:
        if self._partial:
            self._partial.append(bytes(payload))
            self._partial_size += len(payload)
            if self._partial_size < self._needed:
                return  # a large message arrives in many frames: join them once, at the end
            buffer = memoryview(b"".join(self._partial))
            self._partial.clear()
            self._partial_size = 0
        else:
            buffer = payload
        pos, end = 0, len(buffer)
        limit = self._connection.server.max_message_bytes
        while end - pos >= MESSAGE.size:
            compressed, length = MESSAGE.unpack_from(buffer, pos)
            if length > limit:
                self._refuse(
                    RESOURCE_EXHAUSTED, f"Received message larger than max ({length} vs. {limit})"
                )
                return
            if end - pos - MESSAGE.size < length:
                self._needed = MESSAGE.size + length
                break
            start = pos + MESSAGE.size
            pos = start + length
            self._deliver(buffer[start:pos], compressed)
            if self._reset:
                return
        if pos < end:
            rest = bytes(buffer[pos:])
            self._partial.append(rest)
            self._partial_size = len(rest)
            if len(rest) < MESSAGE.size:
                self._needed = MESSAGE.size
        else:
            self._needed = MESSAGE.size

    def _deliver(self, data: memoryview, compressed: int) -> None:
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
            self._messages.append(message)
            return
        self._messages.append(message)
        self._wake()

    def _inflate(self, data: bytes) -> Any:
        """Decompress and parse a compressed request (in a worker thread: it may be large)."""
        limit = self._connection.server.max_message_bytes
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
        if self._partial_size and not self._reset:
            self._refuse(INTERNAL, "the request stream ended inside a message")
            return
        if self._method.cardinality is Cardinality.UNARY_UNARY and not self._reset:
            if not self._messages:
                self._refuse(UNIMPLEMENTED, "the unary rpc ended without a request")
                return
            self.task = asyncio.get_running_loop().create_task(self._run())
        self._wake()

    def reset(self) -> None:
        """The client reset the stream or the connection closed: cancel the handler."""
        self._reset = True
        self._cancel_deadline()
        if self.task is not None:
            self.task.cancel()
        self._wake()
        if self._window_waiter is not None and not self._window_waiter.done():
            self._window_waiter.set_exception(_StreamGoneError())

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
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.finish(DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    async def _run(self) -> None:
        try:
            await self._method.func(self)
        except GRPCError as error:
            self.finish(error.status.value, error.message or "")
        except (asyncio.CancelledError, _StreamGoneError):
            return  # reset, expired or refused: whoever cancelled answered (or nobody listens)
        except Exception as exc:
            log.exception("gRPC handler failed")
            self.finish(UNKNOWN, f"Unexpected error: {type(exc).__name__}: {exc}")
        else:
            if self._reset:
                return  # expired or reset while the handler finished: already answered
            if self.reply is not None:
                self._connection.send_unary(self, self._method.serialize(self.reply))
            else:
                self.finish(OK, None)

    def finish(self, status: int, message: str | None) -> None:
        if self._reset:
            return
        self._cancel_deadline()
        self._connection.send_trailers(self, status_trailers(status, message))
        self._reset = True  # nothing more goes out on this stream

    async def _wait_window(self) -> None:
        self._window_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._window_waiter
        finally:
            self._window_waiter = None

    def window_opened(self) -> None:
        waiter = self._window_waiter
        if not self.outbox and waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One client connection: frames in, frames out."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self._transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._needed = len(PREFACE)
        self._preface = True
        self._decoder = Decoder()
        self._streams: dict[int, Stream] = {}
        self._last_stream = 0
        self._headers: tuple[int, int, bytearray] | None = None  # stream, flags, block so far
        self.peer_window = DEFAULT_WINDOW  # the client's initial stream window
        self._max_frame = DEFAULT_MAX_FRAME
        self._send_window = DEFAULT_WINDOW  # connection level, ours to spend
        self._unacked = 0  # connection-level bytes received and not yet credited back
        self._credit_due: set[Stream] = set()  # streams whose unacked bytes reached the threshold
        self._blocked: deque[Stream] = deque()  # streams with DATA waiting for room
        self._paused: asyncio.Future[None] | None = None
        self._going_away = False

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        settings = struct.pack(">HLHLHL", 2, 0, 4, _OUR_WINDOW, 5, _OUR_MAX_FRAME)
        self._transport.write(
            frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", _OUR_CONNECTION_WINDOW - DEFAULT_WINDOW))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._transport = None
        for stream in list(self._streams.values()):
            stream.reset()
        self._streams.clear()
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)
        self.server.connection_closed()

    def pause_writing(self) -> None:
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    async def writable(self) -> None:
        if self._paused is not None:
            await asyncio.shield(self._paused)

    def data_received(self, data: bytes) -> None:
        if self._chunks:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._needed:
                return
            data = b"".join(self._chunks)
            self._chunks.clear()
        try:
            rest = self._frames(data)
        except Http2ConnectionError as error:
            self._fail(error.code, str(error))
            return
        except Exception:  # a bug here must cost this connection only, never the server
            log.exception("gRPC connection failed")
            self._fail(INTERNAL_ERROR, "internal error")
            return
        if rest:
            self._chunks.append(rest)
            self._buffered = len(rest)
        self._credit()

    # -- frames in ------------------------------------------------------------------------------

    def _frames(self, data: bytes) -> bytes:
        """Handle every whole frame of ``data``; return the incomplete tail."""
        pos, end = 0, len(data)
        if self._preface:
            if end < len(PREFACE):
                self._needed = len(PREFACE)
                return data
            if data[: len(PREFACE)] != PREFACE:
                raise Http2ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface = False
            pos = len(PREFACE)
        view = memoryview(data)
        while end - pos >= FRAME.size:
            high, low, kind, flags, stream_id = FRAME.unpack_from(data, pos)
            length = high << 16 | low
            if length > _OUR_MAX_FRAME:
                raise Http2ConnectionError(
                    FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE"
                )
            if end - pos - FRAME.size < length:
                self._needed = FRAME.size + length
                return data[pos:]
            start = pos + FRAME.size
            pos = start + length
            self.frame(kind, flags, stream_id & 0x7FFFFFFF, view[start:pos])
            if self._transport is None:
                return b""
        self._needed = FRAME.size
        return data[pos:] if pos < end else b""

    def frame(self, kind: int, flags: int, stream_id: int, payload: memoryview) -> None:
        if self._headers is not None and kind != CONTINUATION:
            raise Http2ConnectionError(PROTOCOL_ERROR, "expected a CONTINUATION frame")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers_frame(flags, stream_id, payload)
        elif kind == CONTINUATION:
            if self._headers is None or self._headers[0] != stream_id:
                raise Http2ConnectionError(PROTOCOL_ERROR, "unexpected CONTINUATION frame")
            self._headers[2].extend(payload)
            if len(self._headers[2]) > _MAX_HEADER_BLOCK:
                raise Http2ConnectionError(ENHANCE_YOUR_CALM, "header block too large")
            if flags & END_HEADERS:
                stream_id, first_flags, block = self._headers
                self._headers = None
                self._open(stream_id, first_flags, bytes(block))
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PING:
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, bytes(payload)))
        elif kind == RST_STREAM:
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                stream.reset()
        elif kind == GOAWAY:
            self._going_away = True
        elif kind == PUSH_PROMISE:
            raise Http2ConnectionError(PROTOCOL_ERROR, "clients cannot push")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 asks

    def _data(self, flags: int, stream_id: int, payload: memoryview) -> None:
        size = len(payload)
        self._unacked += size
        if flags & PADDED:
            payload = unpad(payload)
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a stream we reset or finished: the bytes still count for the connection
        stream.unacked += size
        if stream.unacked >= _CREDIT_THRESHOLD:
            self._credit_due.add(stream)
        stream.data(payload, bool(flags & END_STREAM))

    def _headers_frame(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if flags & PADDED:
            payload = unpad(payload)
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        if flags & END_HEADERS:
            self._open(stream_id, flags, bytes(payload))
        else:
            self._headers = (stream_id, flags, bytearray(payload))

    def _open(self, stream_id: int, flags: int, block: bytes) -> None:
        try:
            headers = self._decoder.decode(block)
        except HpackError as exc:
            raise Http2ConnectionError(COMPRESSION_ERROR, str(exc)) from None
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers from the client: only END_STREAM matters
            if flags & END_STREAM:
                stream.client_closed()
            return
        if stream_id % 2 == 0 or stream_id <= self._last_stream:
            return  # not a new client stream (e.g. trailers of one already finished)
        self._last_stream = stream_id
        if self._going_away or self.server.closing:
            self._write(frame(RST_STREAM, 0, stream_id, struct.pack(">L", 7)))  # REFUSED_STREAM
            return
        path = next((value for name, value in headers if name == b":path"), b"")
        method = self.server.methods.get(path)
        if method is None:
            self._write(
                headers_frames(
                    stream_id,
                    RESPONSE_HEADERS
                    + status_trailers(UNIMPLEMENTED, None),  # no message, as Triton
                    True,
                    self._max_frame,
                )
            )
            if not flags & END_STREAM:
                self._write(frame(RST_STREAM, 0, stream_id, struct.pack(">L", NO_ERROR)))
            return
        stream = Stream(self, stream_id, method)
        self._streams[stream_id] = stream
        stream.start(headers, bool(flags & END_STREAM))

    def _settings(self, payload: memoryview) -> None:
        if len(payload) % 6:
            raise Http2ConnectionError(FRAME_SIZE_ERROR, "bad SETTINGS frame")
        for key, value in struct.iter_unpack(">HL", payload):
            if key == 4:  # INITIAL_WINDOW_SIZE: applies to every open stream
                if value > MAX_WINDOW:
                    raise Http2ConnectionError(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == 5:  # MAX_FRAME_SIZE
                if not DEFAULT_MAX_FRAME <= value <= 16777215:
                    raise Http2ConnectionError(PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._max_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        self._flush_blocked()

    def _window_update(self, stream_id: int, payload: memoryview) -> None:
        if len(payload) != 4:
            raise Http2ConnectionError(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE frame")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            self._send_window += increment
        else:
            stream = self._streams.get(stream_id)
            if stream is None:
                return
            stream.send_window += increment
        self._flush_blocked()

    def _credit(self) -> None:
        """Give the client back the window its DATA used (batched per read)."""
        if self._transport is None:
            return
        out = []
        for stream in self._credit_due:
            if not stream.client_done and stream.id in self._streams:
                out.append(frame(WINDOW_UPDATE, 0, stream.id, struct.pack(">L", stream.unacked)))
            stream.unacked = 0
        self._credit_due.clear()
        if self._unacked >= _CREDIT_THRESHOLD:
            out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", self._unacked)))
            self._unacked = 0
        if out:
            self._write(b"".join(out))

    # -- frames out -----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def send_unary(self, stream: Stream, message: bytes) -> None:
        """Headers, the one reply and the trailers: one write when the windows allow."""
        if not self._check_size(stream, message):
            return
        framed = MESSAGE.pack(0, len(message)) + message
        size = len(framed)
        if (
            size <= self._send_window
            and size <= stream.send_window
            and size <= self._max_frame
            and not stream.outbox
        ):
            self._send_window -= size
            stream.send_window -= size
            stream.headers_sent = True
            self._write(
                frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS)
                + frame(DATA, 0, stream.id, framed)
                + frame(HEADERS, END_HEADERS | END_STREAM, stream.id, OK_TRAILERS)
            )
            self._closed(stream)
            return
        self.send_message(stream, message)
        stream.finish(OK, None)

    def _check_size(self, stream: Stream, message: bytes) -> bool:
        limit = self.server.max_message_bytes
        if len(message) > limit:
            stream.finish(
                RESOURCE_EXHAUSTED, f"Sent message larger than max ({len(message)} vs. {limit})"
            )
            return False
        return True

    def send_message(self, stream: Stream, message: bytes) -> None:
        """Queue one reply's DATA behind what the stream already waits to send."""
        if not self._check_size(stream, message):
            raise _StreamGoneError
        if not stream.headers_sent:
            stream.headers_sent = True
            self._write(frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS))
        framed = memoryview(MESSAGE.pack(0, len(message)) + message)
        stream.outbox.append(framed)
        self._send_pending(stream)

    def send_trailers(self, stream: Stream, trailers: bytes) -> None:
        """End the stream with ``trailers`` (after any DATA still waiting for room)."""
        if stream.outbox:
            stream.trailers_waiting = trailers  # they go out after the DATA (see _send_pending)
            return
        block = trailers if stream.headers_sent else RESPONSE_HEADERS + trailers
        stream.headers_sent = True
        self._write(headers_frames(stream.id, block, True, self._max_frame))
        self._closed(stream)

    def _send_pending(self, stream: Stream) -> None:
        if stream.id not in self._streams:  # reset by the client meanwhile
            stream.outbox.clear()
            return
        out = []
        while stream.outbox:
            room = min(self._send_window, stream.send_window, self._max_frame)
            if room <= 0:
                if stream not in self._blocked:
                    self._blocked.append(stream)
                break
            chunk = stream.outbox[0]
            piece = chunk[:room]
            if len(piece) == len(chunk):
                stream.outbox.popleft()
            else:
                stream.outbox[0] = chunk[room:]
            self._send_window -= len(piece)
            stream.send_window -= len(piece)
            out.append(frame(DATA, 0, stream.id, bytes(piece)))
        if out:
            self._write(b"".join(out))
        if not stream.outbox:
            trailers, stream.trailers_waiting = stream.trailers_waiting, None
            if trailers is not None:
                self._write(headers_frames(stream.id, trailers, True, self._max_frame))
                self._closed(stream)
            stream.window_opened()

    def _flush_blocked(self) -> None:
        for _ in range(len(self._blocked)):
            stream = self._blocked.popleft()
            self._send_pending(stream)

    def _closed(self, stream: Stream) -> None:
        """Our side of ``stream`` is done: forget it (and stop the client sending more)."""
        if self._streams.pop(stream.id, None) is None:
            return
        if not stream.client_done:
            self._write(frame(RST_STREAM, 0, stream.id, struct.pack(">L", NO_ERROR)))
        self.server.stream_closed(self)

    def _fail(self, code: int, reason: str) -> None:
        log.debug("gRPC connection error %d: %s", code, reason)
        self._write(
            frame(GOAWAY, 0, 0, struct.pack(">LL", self._last_stream, code) + reason.encode())
        )
        if self._transport is not None:
            self._transport.close()

    # -- stopping -------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self._streams

    def go_away(self) -> None:
        """Tell the client no new stream will be served here."""
        self._write(frame(GOAWAY, 0, 0, struct.pack(">LL", self._last_stream, NO_ERROR)))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def tasks(self) -> list[asyncio.Task[None]]:
        """The handler tasks of this connection's open streams."""
        return [s.task for s in self._streams.values() if s.task is not None and not s.task.done()]


class GrpcServer:
    """Serves ``methods`` (``"/package.Service/Method" -> Method``) on a listening socket."""

    def __init__(self, methods: dict[str, Method], *, max_message_bytes: int) -> None:
        self.methods = {path.encode(): method for path, method in methods.items()}
        self.max_message_bytes = max_message_bytes
        self.connections: set[_Connection] = set()
        self.closing = False
        self._listener: asyncio.Server | None = None
        self._idle: asyncio.Event | None = None

    async def start(self, sock: Any, ssl: SSLContext | None = None) -> None:
        """Accept connections on ``sock`` (bound, not yet listening) from now on, over TLS
        when given a context."""
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(lambda: _Connection(self), sock=sock, ssl=ssl)

    async def stop(self, grace: float) -> None:
        """Accept nothing new (GOAWAY), give open streams ``grace`` seconds, then close every
        connection and wait until the rpcs still running there unwound."""
        self.closing = True
        if self._listener is not None:
            self._listener.close()
        self._idle = asyncio.Event()
        for connection in list(self.connections):
            connection.go_away()
        self._check_idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        running = [task for c in self.connections for task in c.tasks()]
        for connection in list(self.connections):
            connection.close()
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=max(grace, 1.0))

    def stream_closed(self, connection: _Connection) -> None:
        if self.closing:
            self._check_idle()

    def connection_closed(self) -> None:
        if self.closing:
            self._check_idle()

    def _check_idle(self) -> None:
        if self._idle is not None and all(c.idle for c in self.connections):
            self._idle.set()

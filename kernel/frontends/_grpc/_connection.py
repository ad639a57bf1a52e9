"""The sans-IO HTTP/2 connection (server side): bytes in, events and bytes out.

No asyncio and no sockets here: :meth:`Connection.receive` takes the bytes a client sent and
calls the methods of an :class:`~._semantics.Events` listener (a new request, a stream's data,
a reset, ...); the application answers through :meth:`Connection.send_headers`,
:meth:`~Connection.send_data`, :meth:`~Connection.send_trailers` (and
:meth:`~Connection.send_unary`, a whole unary reply in one piece);
:meth:`Connection.data_to_send` hands out what should be written. Time comes from an
injected clock, so every rule and limit is tested by feeding bytes (tests/test_h2_core.py).

Streams (RFC 9113 section 5.1) are created by client HEADERS on an odd id above every earlier one.
A stream in the table is ``open`` or ``half-closed (remote)`` (the client sent END_STREAM);
when our side ends first, the reply is complete and the stream is reset with NO_ERROR (section
8.1), so ``half-closed (local)`` never lasts; closing removes a stream from the table. The
last ``recently_closed`` ids are remembered with how they closed, so late frames of a stream we
reset are ignored while frames after the client's own END_STREAM are errors; ids at or below
the highest seen and in neither state are closed, above it idle. The server never pushes, so
no stream is ever reserved.

Flow control (section 5.2) both ways. Receiving: the windows we advertise are only credited back
as the application :meth:`~Connection.consume`\\ s the data (and at once for padding and for
data of streams already closed), so a stream buffers at most its window of unread data and a
connection at most the connection window. Sending: DATA beyond the peer's windows waits in the
stream's outbox, and trailers wait behind it; :meth:`~Connection.abort` ends a stream at once
(an expired deadline), dropping DATA not yet sent.

Connection errors queue GOAWAY with the code, mark the connection :attr:`~Connection.closed` and
report :meth:`Events.terminated`; stream errors queue RST_STREAM and report :meth:`Events.reset`.

The rules, each answered as RFC 9113 says (C: connection error, S: stream error):

* the client preface must be first (C PROTOCOL_ERROR); a frame above our SETTINGS_MAX_FRAME_SIZE
  (C FRAME_SIZE_ERROR);
* DATA, HEADERS, CONTINUATION, RST_STREAM, PRIORITY on stream 0 (C PROTOCOL_ERROR); SETTINGS,
  PING, GOAWAY on another stream (C PROTOCOL_ERROR); PUSH_PROMISE from a client (C PROTOCOL_ERROR);
* lengths: PING not 8, SETTINGS not a multiple of 6, SETTINGS ACK with a payload, WINDOW_UPDATE
  not 4, RST_STREAM not 4, GOAWAY under 8 (C FRAME_SIZE_ERROR); PRIORITY not 5 (S FRAME_SIZE_ERROR);
  a HEADERS priority block or pad length cut short (C FRAME_SIZE_ERROR);
* padding as long as the payload or longer (C PROTOCOL_ERROR);
* a WINDOW_UPDATE of 0 (C PROTOCOL_ERROR on stream 0, else S PROTOCOL_ERROR); a window pushed past
  2^31-1 by WINDOW_UPDATE (C or S FLOW_CONTROL_ERROR) or by SETTINGS_INITIAL_WINDOW_SIZE
  (C FLOW_CONTROL_ERROR); DATA beyond the connection window (C FLOW_CONTROL_ERROR) or a stream's
  window (S FLOW_CONTROL_ERROR);
* SETTINGS values: ENABLE_PUSH not 0 or 1 (C PROTOCOL_ERROR), INITIAL_WINDOW_SIZE above 2^31-1
  (C FLOW_CONTROL_ERROR), MAX_FRAME_SIZE outside 2^14..2^24-1 (C PROTOCOL_ERROR);
* stream ids: a new stream on an even id or not above the last one (C PROTOCOL_ERROR); DATA,
  RST_STREAM or WINDOW_UPDATE on an idle stream (C PROTOCOL_ERROR); DATA or HEADERS on a
  half-closed (remote) stream (S STREAM_CLOSED) or on a stream closed after the client's
  END_STREAM (C STREAM_CLOSED);
* header blocks: CONTINUATION not following HEADERS, or for another stream, and any other frame
  inside a header block (C PROTOCOL_ERROR); an undecodable block, a dynamic table size update not
  at the start of a block or above SETTINGS_HEADER_TABLE_SIZE (C COMPRESSION_ERROR);
  a stream depending on itself (S PROTOCOL_ERROR);
* messages (section 8): unknown, duplicate or missing request pseudo-headers, a pseudo-header
  after a regular one or in trailers, uppercase or invalid names, CR/LF/NUL or surrounding
  whitespace in values, connection-specific fields (``connection``, ``keep-alive``,
  ``proxy-connection``, ``transfer-encoding``, ``upgrade``), ``te`` other than ``trailers``, a
  second header block without END_STREAM (S PROTOCOL_ERROR);
* unknown frame types and unknown settings are ignored.

The limits (defaults and reasons in :mod:`._limits`): SETTINGS_MAX_CONCURRENT_STREAMS (a stream
past it: RST_STREAM REFUSED_STREAM), SETTINGS_MAX_HEADER_LIST_SIZE and a field count on the
decoded list (:meth:`Events.headers_too_large`), a cap on one header block's bytes and on its
CONTINUATION frames (C ENHANCE_YOUR_CALM), at most ``max_settings_entries`` per SETTINGS frame,
a budget of client resets (rapid reset) and of frames that make no progress (C ENHANCE_YOUR_CALM
past either), and grpc core's ping policy: a PING sooner than the allowed interval while we sent
no DATA or HEADERS is a strike, too many strikes end the connection (C ENHANCE_YOUR_CALM,
``too_many_pings``).
"""

from __future__ import annotations

import itertools
import math
import struct
import time
from collections import deque
from collections.abc import Callable

from kernel.frontends._grpc._hpack import Decoder, HpackError
from kernel.frontends._grpc._limits import Budget, Http2Limits
from kernel.frontends._grpc._semantics import Events, request_error
from kernel.frontends._grpc._wire import (
    ACK,
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
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
    MAX_WINDOW,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    Http2ConnectionError,
    frame,
    headers_frames,
    unpad,
)

__all__ = ["Connection"]

_OPEN, _REMOTE_CLOSED, _LOCAL_CLOSED = 0, 1, 2  # stream states (idle and closed: not in the table)
_ENDED, _RESET = True, False  # how a remembered closed stream closed: client END_STREAM or reset
_U32 = struct.Struct(">L")
_NOTHING = memoryview(b"")
_KNOWN_BLOCKS = 32  # header blocks remembered decoded (see Connection._header_block)
_KNOWN_BLOCK_BYTES = 512  # and only blocks this small


def _head(size: int, kind: int, flags: int, stream_id: int) -> bytes:
    """A frame's 9-byte head (its payload follows apart, so it is not copied to be framed)."""
    return FRAME.pack(size >> 16, size & 0xFFFF, kind, flags, stream_id)


class _Stream:
    __slots__ = (
        "buffered",
        "credit",
        "id",
        "outbox",
        "recv_window",
        "send_window",
        "started",
        "state",
        "trailers",
    )

    def __init__(self, stream_id: int, state: int, recv_window: int, send_window: int) -> None:
        self.id = stream_id
        self.state = state
        self.recv_window = recv_window  # what the client may still send
        self.send_window = send_window  # what we may still send
        self.buffered = 0  # received, not yet consumed by the application
        self.credit = 0  # consumed, not yet credited back
        self.outbox: deque[memoryview] = deque()  # DATA waiting for room
        self.started = False  # the head of the outbox went out in part
        self.trailers: bytes | None = None  # waiting behind the outbox


class Connection:
    """One client connection's HTTP/2 state (see the module doc)."""

    def __init__(
        self,
        events: Events,
        limits: Http2Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._events = events
        self.limits = limits = limits or Http2Limits()
        self._clock = clock
        now = clock()
        self.output: list[bytes | memoryview] = []
        """Frames queued for the client (non-empty: :meth:`data_to_send` has something)."""
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._needed = len(PREFACE)
        self._preface = True
        self._decoder = Decoder()
        # header blocks that decoded to a valid request without changing the dynamic table,
        # by their bytes, while the table stays as it was (a client repeats its calls' blocks)
        self._known: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}
        self._known_generation = 0
        self._streams: dict[int, _Stream] = {}
        self._closed_streams: dict[int, bool] = {}  # recently closed: id -> _ENDED / _RESET
        self.last_stream = 0
        self._block: bytearray | None = None  # a header block in progress
        self._block_stream = 0
        self._block_flags = 0
        self._block_frames = 0
        self._block_error = 0  # a stream error found in the HEADERS frame, raised once decoded
        self._peer_window = DEFAULT_WINDOW  # the client's SETTINGS_INITIAL_WINDOW_SIZE
        self._max_frame = DEFAULT_MAX_FRAME  # the client's SETTINGS_MAX_FRAME_SIZE
        # The client changed SETTINGS_HEADER_TABLE_SIZE: our next header block must begin with a
        # dynamic table size update (RFC 7541 4.2). We never index, so it always says 0.
        self._table_update = False
        self._send_window = DEFAULT_WINDOW
        self._recv_window = max(limits.connection_window, DEFAULT_WINDOW)
        self._credit = 0
        self._stream_threshold = min(limits.credit_threshold, limits.stream_window // 2)
        self._connection_threshold = min(limits.credit_threshold, limits.connection_window // 2)
        self._blocked: deque[_Stream] = deque()
        self._resets = Budget(limits.reset_burst, limits.reset_rate, now)
        self._idle_frames = Budget(limits.idle_frame_burst, limits.idle_frame_rate, now)
        self._last_ping = -math.inf
        self._strikes = 0
        self.pings_without_data = 0
        self.going_away = False
        self.closed = False

    # -- the application's side -----------------------------------------------------------------

    def initiate(self) -> None:
        """Queue our SETTINGS and the connection window (the server's connection preface)."""
        limits = self.limits
        settings = struct.pack(
            ">HLHLHLHLHL",
            2, 0,  # ENABLE_PUSH
            3, limits.max_concurrent_streams,
            4, limits.stream_window,
            5, limits.max_frame_size,
            6, limits.max_header_list_size,
        )  # fmt: skip
        self.output.append(frame(SETTINGS, 0, 0, settings))
        if limits.connection_window > DEFAULT_WINDOW:
            increment = limits.connection_window - DEFAULT_WINDOW
            self.output.append(frame(WINDOW_UPDATE, 0, 0, _U32.pack(increment)))

    def data_to_send(self) -> bytes:
        """Everything queued for the client since the last call (one write's worth)."""
        out = self.output
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def consume(self, stream_id: int, size: int) -> None:
        """The application used ``size`` bytes of the stream's data: credit them back."""
        stream = self._streams.get(stream_id)
        if stream is None or size <= 0:
            return  # a closed stream's data was credited back when it closed
        stream.buffered -= size
        if stream.state == _OPEN:
            stream.credit += size
            if stream.credit >= self._stream_threshold:
                self.output.append(frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(stream.credit)))
                stream.recv_window += stream.credit
                stream.credit = 0
        self._credit += size
        if self._credit >= self._connection_threshold:
            self.output.append(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._credit)))
            self._recv_window += self._credit
            self._credit = 0

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.state == _LOCAL_CLOSED:
            return
        self._data_sent()
        block = self._outgoing(block)
        self.output.append(headers_frames(stream_id, block, end_stream, self._max_frame))
        if end_stream:
            self._end_local(stream)

    def _outgoing(self, block: bytes) -> bytes:
        """``block`` as the next header block on the wire: behind a table size update of 0
        when the client changed SETTINGS_HEADER_TABLE_SIZE since the last one."""
        if self._table_update:
            self._table_update = False
            return b"\x20" + block
        return block

    def send_data(self, stream_id: int, data: bytes) -> None:
        """Queue ``data`` (one whole message: see :meth:`abort`) behind the stream's outbox."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state == _LOCAL_CLOSED:
            return
        stream.outbox.append(memoryview(data))
        self._send_pending(stream)

    def send_trailers(self, stream_id: int, block: bytes) -> None:
        """End the stream with ``block`` once the DATA queued before went out."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state == _LOCAL_CLOSED:
            return
        if stream.outbox:
            stream.trailers = block
            return
        self.output.append(headers_frames(stream_id, self._outgoing(block), True, self._max_frame))
        self._end_local(stream)

    def send_unary(self, stream_id: int, head: bytes, data: bytes, tail: bytes) -> bool:
        """Headers, one DATA frame and trailers: one piece of output when the windows allow.
        Whether everything went out (else the rest waits for room, as :meth:`send_data`)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state == _LOCAL_CLOSED:
            return True
        size = len(data)
        if (
            size <= self._send_window
            and size <= stream.send_window
            and size <= self._max_frame
            and len(head) <= self._max_frame
            and len(tail) <= self._max_frame
        ):
            self._send_window -= size
            stream.send_window -= size
            self._last_ping = -math.inf  # we sent DATA: the ping policy starts over
            self._strikes = self.pings_without_data = 0
            if self._table_update:
                head = self._outgoing(head)
            self.output.append(  # one copy of ``data``, which may be large
                b"".join(
                    (
                        _head(len(head), HEADERS, END_HEADERS, stream_id),
                        head,
                        _head(size, DATA, 0, stream_id),
                        data,
                        _head(len(tail), HEADERS, END_HEADERS | END_STREAM, stream_id),
                        tail,
                    )
                )
            )
            self._end_local(stream)
            return True
        self.send_headers(stream_id, head)
        self.send_data(stream_id, data)
        self.send_trailers(stream_id, tail)
        return stream.id not in self._streams

    def abort(self, stream_id: int, block: bytes) -> None:
        """End the stream now with ``block``, dropping queued DATA; when a message already went
        out in part, trailers would follow half a message: reset the stream (CANCEL) instead."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state == _LOCAL_CLOSED:
            return
        if stream.outbox and stream.started:
            self.reset_stream(stream_id, CANCEL)
            return
        stream.outbox.clear()
        stream.trailers = None
        self.send_trailers(stream_id, block)

    def pending(self, stream_id: int) -> bool:
        """Whether DATA of the stream waits for flow-control room."""
        stream = self._streams.get(stream_id)
        return stream is not None and bool(stream.outbox)

    def reset_stream(self, stream_id: int, code: int) -> None:
        self.output.append(frame(RST_STREAM, 0, stream_id, _U32.pack(code)))
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._close(stream, _RESET)

    def send_ping(self, opaque: bytes) -> None:
        self.pings_without_data += 1
        self.output.append(frame(PING, 0, 0, opaque))

    def goaway_notice(self) -> None:
        """The first GOAWAY of a graceful shutdown (RFC 9113 section 6.8): last stream id
        2^31-1, so the client opens no new stream here while those already on their way are
        still served; :meth:`goaway` follows once they arrived (after a PING round trip)."""
        self.output.append(frame(GOAWAY, 0, 0, struct.pack(">LL", 0x7FFFFFFF, NO_ERROR)))

    def goaway(self, code: int = NO_ERROR, reason: str = "") -> None:
        """No new streams from now on (those the client opened before still run)."""
        self.going_away = True
        self.output.append(
            frame(GOAWAY, 0, 0, struct.pack(">LL", self.last_stream, code) + reason.encode())
        )

    # -- bytes in -------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Handle the bytes the client sent (any split); never raises for anything they hold."""
        if self.closed:
            return
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
        if rest:
            self._chunks.append(rest)
            self._buffered = len(rest)

    def _frames(self, data: bytes) -> bytes:
        """Handle every whole frame of ``data``; return the incomplete tail."""
        pos, end = 0, len(data)
        if self._preface:
            if end < len(PREFACE):
                if PREFACE[:end] != data:
                    raise Http2ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._needed = len(PREFACE)
                return data
            if data[: len(PREFACE)] != PREFACE:
                raise Http2ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface = False
            pos = len(PREFACE)
        view = memoryview(data)
        max_frame = self.limits.max_frame_size
        while end - pos >= 9:
            high, low, kind, flags, stream_id = FRAME.unpack_from(data, pos)
            length = high << 16 | low
            if length > max_frame:
                raise Http2ConnectionError(
                    FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE"
                )
            if end - pos - 9 < length:
                self._needed = 9 + length
                return data[pos:]
            start = pos + 9
            pos = start + length
            self._frame(kind, flags, stream_id & 0x7FFFFFFF, view[start:pos])
            if self.closed:
                return b""
        self._needed = 9
        return data[pos:] if pos < end else b""

    def _frame(self, kind: int, flags: int, stream_id: int, payload: memoryview) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise Http2ConnectionError(PROTOCOL_ERROR, "a frame inside a header block")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == RST_STREAM:
            self._rst_stream(stream_id, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == PING:
            self._ping(flags, stream_id, payload)
        elif kind == PRIORITY:
            self._priority(stream_id, payload)
        elif kind == GOAWAY:
            if stream_id:
                raise Http2ConnectionError(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise Http2ConnectionError(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            self._idle_frame()
            self.going_away = True
        elif kind == PUSH_PROMISE:
            raise Http2ConnectionError(PROTOCOL_ERROR, "clients cannot push")
        else:
            self._idle_frame()  # unknown frame types are ignored (section 5.5), within a budget

    def _idle_frame(self) -> None:
        if not self._idle_frames.spend(self._clock()):
            raise Http2ConnectionError(ENHANCE_YOUR_CALM, "too many frames making no progress")

    def _data(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if not stream_id:
            raise Http2ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        if size > self._recv_window:
            raise Http2ConnectionError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._recv_window -= size
        if flags & PADDED:
            payload = unpad(payload)
        stream = self._streams.get(stream_id)
        if stream is None:
            self._not_open(stream_id, "DATA")
            self._give_back(size)  # a stream we reset: its DATA still counted
            return
        if stream.state == _REMOTE_CLOSED:
            self._give_back(size)
            self._stream_error(stream_id, STREAM_CLOSED)
            return
        if size > stream.recv_window:
            self._give_back(size)
            self._stream_error(stream_id, FLOW_CONTROL_ERROR)
            return
        stream.recv_window -= size
        data_size = len(payload)
        stream.buffered += data_size
        end_stream = bool(flags & END_STREAM)
        if data_size < size:  # padding: nobody consumes it
            stream.buffered += size - data_size
            self.consume(stream_id, size - data_size)
        if end_stream:
            if stream.state == _LOCAL_CLOSED:
                self._close(stream, _ENDED)
            else:
                stream.state = _REMOTE_CLOSED
        elif not data_size:
            self._idle_frame()
        self._events.data(stream_id, payload, end_stream)

    def _not_open(self, stream_id: int, what: str) -> None:
        """A frame for a stream not in the table: an error unless it is a closed stream's
        frame in flight (the caller then ignores the frame)."""
        if stream_id > self.last_stream or not stream_id & 1:
            raise Http2ConnectionError(PROTOCOL_ERROR, f"{what} on an idle stream")
        if self._closed_streams.get(stream_id) is _ENDED and what in ("DATA", "HEADERS"):
            raise Http2ConnectionError(STREAM_CLOSED, f"{what} after END_STREAM")

    def _headers(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if not stream_id:
            raise Http2ConnectionError(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            payload = unpad(payload)
        self._block_error = 0
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise Http2ConnectionError(FRAME_SIZE_ERROR, "HEADERS priority block cut short")
            if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
                self._block_error = PROTOCOL_ERROR  # a stream cannot depend on itself
            payload = payload[5:]
        if not payload and not flags & END_STREAM:
            self._idle_frame()
        if len(payload) > self.limits.max_header_block:
            raise Http2ConnectionError(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, payload)
        else:
            self._block = bytearray(payload)
            self._block_stream = stream_id
            self._block_flags = flags
            self._block_frames = 0

    def _continuation(self, flags: int, stream_id: int, payload: memoryview) -> None:
        block = self._block
        if block is None or stream_id != self._block_stream:
            raise Http2ConnectionError(PROTOCOL_ERROR, "CONTINUATION not following HEADERS")
        self._block_frames += 1
        if self._block_frames > self.limits.max_continuation_frames:
            raise Http2ConnectionError(ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        block += payload
        if len(block) > self.limits.max_header_block:
            raise Http2ConnectionError(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            self._block = None
            self._header_block(stream_id, self._block_flags, memoryview(block))
        elif not payload:
            self._idle_frame()

    def _header_block(self, stream_id: int, flags: int, block: memoryview) -> None:
        limits = self.limits
        decoder = self._decoder
        key = bytes(block) if len(block) <= _KNOWN_BLOCK_BYTES else b""
        if self._known_generation != decoder.generation:
            self._known.clear()
            self._known_generation = decoder.generation
        known = self._known.get(key) if key else None
        if known is not None:  # the same bytes on the same table: the same valid request
            headers = list(known)
            malformed, too_large, valid = None, False, True
        else:
            try:  # always decoded, even for a stream refused or ignored: the table must follow
                headers = decoder.decode(
                    block, limits.max_header_list_size, limits.max_header_fields
                )
            except HpackError as exc:
                raise Http2ConnectionError(COMPRESSION_ERROR, str(exc)) from None
            malformed = decoder.malformed
            too_large = decoder.list_size > limits.max_header_list_size  # fields were dropped
            valid = not malformed and not too_large and request_error(headers) is None
            if valid and key and decoder.generation == self._known_generation:
                if len(self._known) >= _KNOWN_BLOCKS:
                    self._known.clear()
                self._known[key] = tuple(headers)
        end_stream = bool(flags & END_STREAM)
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers
            if stream.state == _REMOTE_CLOSED:
                self._stream_error(stream_id, STREAM_CLOSED)
            elif (
                not end_stream
                or malformed
                or self._block_error
                or any(name[:1] == b":" for name, _ in headers)
            ):
                self._stream_error(stream_id, PROTOCOL_ERROR)
            else:
                self._end_remote(stream)
                self._events.data(stream_id, _NOTHING, True)
            return
        if not stream_id & 1 or stream_id <= self.last_stream:
            self._not_open(stream_id, "HEADERS")
            if stream_id in self._closed_streams:
                return  # trailers of a stream we reset
            raise Http2ConnectionError(PROTOCOL_ERROR, "stream id not above the last one")
        self.last_stream = stream_id
        if self.going_away or len(self._streams) >= limits.max_concurrent_streams:
            self._refuse(stream_id, REFUSED_STREAM)
            return
        if self._block_error or malformed or (not too_large and not valid):
            self._refuse(stream_id, PROTOCOL_ERROR)
            return
        stream = _Stream(
            stream_id,
            _REMOTE_CLOSED if end_stream else _OPEN,
            limits.stream_window,
            self._peer_window,
        )
        self._streams[stream_id] = stream
        if too_large:
            self._events.headers_too_large(stream_id, decoder.list_size)
        else:
            self._events.request(stream_id, headers, end_stream)

    def _refuse(self, stream_id: int, code: int) -> None:
        self.output.append(frame(RST_STREAM, 0, stream_id, _U32.pack(code)))
        self._remember(stream_id, _RESET)

    def _rst_stream(self, stream_id: int, payload: memoryview) -> None:
        if not stream_id:
            raise Http2ConnectionError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise Http2ConnectionError(FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes")
        if not self._resets.spend(self._clock()):
            raise Http2ConnectionError(ENHANCE_YOUR_CALM, "too many stream resets")
        stream = self._streams.get(stream_id)
        if stream is None:
            self._not_open(stream_id, "RST_STREAM")
            return
        self._close(stream, _RESET)
        self._events.reset(stream_id)

    def _settings(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if stream_id:
            raise Http2ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise Http2ConnectionError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise Http2ConnectionError(FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        if len(payload) // 6 > self.limits.max_settings_entries:
            raise Http2ConnectionError(ENHANCE_YOUR_CALM, "too many settings")
        self._idle_frame()
        for key, value in struct.iter_unpack(">HL", payload):
            if key == 1:  # HEADER_TABLE_SIZE: the size our encoder may use
                self._table_update = True
            elif key == 2:  # ENABLE_PUSH
                if value > 1:
                    raise Http2ConnectionError(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            elif key == 4:  # INITIAL_WINDOW_SIZE: applies to every open stream
                if value > MAX_WINDOW:
                    raise Http2ConnectionError(
                        FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1"
                    )
                delta = value - self._peer_window
                self._peer_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise Http2ConnectionError(FLOW_CONTROL_ERROR, "stream window overflow")
            elif key == 5:  # MAX_FRAME_SIZE
                if not DEFAULT_MAX_FRAME <= value <= 16777215:
                    raise Http2ConnectionError(
                        PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range"
                    )
                self._max_frame = value
        self.output.append(frame(SETTINGS, ACK, 0))
        self._flush_blocked()

    def _window_update(self, stream_id: int, payload: memoryview) -> None:
        if len(payload) != 4:
            raise Http2ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise Http2ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise Http2ConnectionError(FLOW_CONTROL_ERROR, "connection window overflow")
            self._flush_blocked()
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            self._not_open(stream_id, "WINDOW_UPDATE")
            return
        if not increment:
            self._stream_error(stream_id, PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._stream_error(stream_id, FLOW_CONTROL_ERROR)
            return
        if stream.outbox:
            self._send_pending(stream)

    def _ping(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if stream_id:
            raise Http2ConnectionError(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise Http2ConnectionError(FRAME_SIZE_ERROR, "PING not 8 bytes")
        if flags & ACK:
            self._events.ping_ack(bytes(payload))
            return
        now = self._clock()
        limits = self.limits
        if not self._streams and not limits.keepalive_permit_without_calls:
            interval = 7200.0  # grpc core: two hours between pings on a connection without calls
        else:
            interval = limits.min_recv_ping_interval_without_data_ms / 1000
        too_soon = now < self._last_ping + interval
        self._last_ping = now
        if too_soon:
            self._strikes += 1
            if limits.max_ping_strikes and self._strikes > limits.max_ping_strikes:
                raise Http2ConnectionError(ENHANCE_YOUR_CALM, "too_many_pings")
            self._idle_frame()
        self.output.append(frame(PING, ACK, 0, bytes(payload)))

    def _priority(self, stream_id: int, payload: memoryview) -> None:
        if not stream_id:
            raise Http2ConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0")
        self._idle_frame()
        if len(payload) != 5:
            self._stream_error(stream_id, FRAME_SIZE_ERROR)
        elif _U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
            self._stream_error(stream_id, PROTOCOL_ERROR)

    # -- stream states --------------------------------------------------------------------------

    def _stream_error(self, stream_id: int, code: int) -> None:
        self.output.append(frame(RST_STREAM, 0, stream_id, _U32.pack(code)))
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._close(stream, _RESET)
            self._events.reset(stream_id)

    def _end_remote(self, stream: _Stream) -> None:
        if stream.state == _LOCAL_CLOSED:
            self._close(stream, _ENDED)
        else:
            stream.state = _REMOTE_CLOSED

    def _end_local(self, stream: _Stream) -> None:
        if stream.state == _REMOTE_CLOSED:
            self._close(stream, _ENDED)
        else:  # the reply is complete: the client need not send the rest (section 8.1)
            self.output.append(frame(RST_STREAM, 0, stream.id, _U32.pack(NO_ERROR)))
            self._close(stream, _RESET)

    def _close(self, stream: _Stream, how: bool) -> None:
        del self._streams[stream.id]
        if stream.outbox:
            stream.outbox.clear()
        if stream.buffered:
            self._give_back(stream.buffered)  # nobody will consume it now
        closed = self._closed_streams
        closed[stream.id] = how
        if len(closed) > self.limits.recently_closed:
            self._remember(stream.id, how)

    def _remember(self, stream_id: int, how: bool) -> None:
        closed = self._closed_streams
        closed[stream_id] = how
        if len(closed) > self.limits.recently_closed:  # forget the older half (amortized O(1))
            for old in list(itertools.islice(closed, len(closed) // 2)):
                del closed[old]

    def _give_back(self, size: int) -> None:
        self._credit += size
        if self._credit >= self._connection_threshold:
            self.output.append(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._credit)))
            self._recv_window += self._credit
            self._credit = 0

    def _data_sent(self) -> None:
        """We sent DATA or HEADERS: the ping policy starts over (as grpc core's)."""
        self._last_ping = -math.inf
        self._strikes = 0
        self.pings_without_data = 0

    # -- frames out -----------------------------------------------------------------------------

    def _send_pending(self, stream: _Stream) -> None:
        out = self.output
        sent = False
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
                stream.started = False
            else:
                stream.outbox[0] = chunk[room:]
                stream.started = True
            size = len(piece)
            self._send_window -= size
            stream.send_window -= size
            # the frame's head and a view of its payload: joined once, by data_to_send
            out.append(_head(size, DATA, 0, stream.id))
            out.append(piece)
            sent = True
        if sent:
            self._data_sent()
        if not stream.outbox:
            trailers, stream.trailers = stream.trailers, None
            if trailers is not None:
                block = self._outgoing(trailers)
                out.append(headers_frames(stream.id, block, True, self._max_frame))
                self._end_local(stream)
            self._events.sent(stream.id)

    def _flush_blocked(self) -> None:
        for _ in range(len(self._blocked)):
            stream = self._blocked.popleft()
            if stream.id in self._streams:
                self._send_pending(stream)

    def _fail(self, code: int, reason: str) -> None:
        self.output.append(
            frame(GOAWAY, 0, 0, struct.pack(">LL", self.last_stream, code) + reason.encode())
        )
        self.closed = True
        self.going_away = True
        self._events.terminated(code, reason)

"""The asyncio adapter: the kernel's gRPC server on a listening socket.

Why a transport of its own: grpcio's asyncio server spends ~200 us of event-loop time per unary
call on this project's 2-core benchmark machine (its completion queue is polled in another
thread and every event crosses back), and grpclib's generic HTTP/2 state machine (h2) caps near
1,700 calls/s. The transport is three layers, each in its own module:

* :mod:`._connection`: the sans-IO HTTP/2 connection (RFC 9113 / RFC 7541 rules and limits;
  frame layouts in :mod:`._wire`, header compression in :mod:`._hpack`, limits in :mod:`._limits`);
* :mod:`._rpc`: the gRPC layer (messages, compression, deadlines, status and trailers);
* this module: one :class:`asyncio.Protocol` per connection (:class:`ServerConnection`) that feeds
  the socket's bytes to the core, writes what the core queued (one write per read, and one per
  unary reply), turns the core's events into rpcs (a task each) and runs the timers: keepalive
  PINGs (``keepalive_time_ms``; no ACK within ``keepalive_timeout_ms`` closes the connection).

Reading pauses (``transport.pause_reading()``) while the socket's write buffer is above the
high-water mark and resumes below the low one, so a client that sends without reading cannot grow
the server's memory. A bug in the core costs its connection only (GOAWAY INTERNAL_ERROR).

:meth:`GrpcServer.stop` sends GOAWAY, gives open streams a grace period, then closes every
connection and waits until the rpcs it cancelled unwound. The listener is created in one place,
:meth:`GrpcServer.start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from ssl import SSLContext
from typing import Any, cast

from kernel.frontends._grpc._connection import Connection
from kernel.frontends._grpc._limits import Http2Limits
from kernel.frontends._grpc._rpc import Method, Stream, refusal, trailers_only
from kernel.frontends._grpc._wire import INTERNAL_ERROR, RESOURCE_EXHAUSTED, UNIMPLEMENTED

__all__ = ["GOAWAY_ACK_SECS", "GrpcServer", "ServerConnection"]

log = logging.getLogger("kernel.frontends.grpc")

GOAWAY_ACK_SECS = 1.0
"""How long a stop waits for the PING after its first GOAWAY before the final GOAWAY."""
_READY_LOOKS = 32
"""How many of a connection's open calls an answer looks at for one with its reply ready."""


class ServerConnection(asyncio.Protocol):
    """One client connection: the core's bytes and events on a socket, its rpcs as tasks."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.max_message_bytes = server.max_message_bytes
        self.core = Connection(self, server.limits)
        self._transport: asyncio.Transport | None = None
        self._rpcs: dict[int, Stream] = {}
        self._paused: asyncio.Future[None] | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._ping_timeout: asyncio.TimerHandle | None = None
        self._ping_ids = itertools.count(1)
        self._ping_waiting: bytes | None = None
        self._goaway_ping: bytes | None = None
        self._goaway_timer: asyncio.TimerHandle | None = None
        self._flush_soon = False
        """A write is due at the loop's next turn (see :meth:`answered`)."""

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        limits = self.server.limits
        self._transport.set_write_buffer_limits(limits.write_high_water, limits.write_low_water)
        self.server.connections.add(self)
        self.core.initiate()
        self.flush()
        if limits.keepalive_time_ms > 0:
            self._keepalive = asyncio.get_running_loop().call_later(
                limits.keepalive_time_ms / 1000, self._send_keepalive
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._transport = None
        self.server.check_final_goaways()
        for timer in (self._keepalive, self._ping_timeout, self._goaway_timer):
            if timer is not None:
                timer.cancel()
        rpcs = list(self._rpcs.values())
        self._rpcs.clear()
        for rpc in rpcs:
            rpc.reset()
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)
        self.server.check_idle()

    def pause_writing(self) -> None:
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)
        if self._transport is not None and not self.core.closed:
            self._transport.resume_reading()

    async def writable(self) -> None:
        if self._paused is not None:
            await asyncio.shield(self._paused)

    def data_received(self, data: bytes) -> None:
        try:
            self.core.receive(data)
        except Exception:  # a bug here must cost this connection only, never the server
            log.exception("gRPC connection failed")
            self.core.goaway(INTERNAL_ERROR, "internal error")
            self.core.closed = True
        self.flush()
        if self.core.closed and self._transport is not None:
            self._transport.close()

    # -- for the rpcs ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what the core queued, in one write."""
        if self.core.output:
            out = self.core.data_to_send()
            if self._transport is not None:
                self._transport.write(out)
        if self.server.closing:
            self.server.check_idle()

    def consume(self, stream_id: int, size: int) -> None:
        self.core.consume(stream_id, size)
        self.flush()

    def answered(self, rpc: Stream) -> None:
        """The rpc queued its last frames: write them, and forget the rpc once they left (until
        then its deadline may still cut the wait short).

        When another rpc of this connection has its reply ready (the same model answer woke
        its task, which runs in this turn), the write is left to the last of them: clients
        multiplex their calls on few connections (perf_analyzer: 16 calls on 3), and the
        answers of one batch then leave in one write instead of a write each (a system call
        that, on loopback, also runs the client's receive path). A write at the loop's next
        turn backs that up, should that rpc not answer now after all."""
        rpcs = self._rpcs
        if rpcs.get(rpc.id) is rpc and not self.core.pending(rpc.id):
            del rpcs[rpc.id]
        if rpcs:
            # the first few only: an answer must not cost a walk over a thousand open calls
            for other in itertools.islice(rpcs.values(), _READY_LOOKS):
                ready = other.answer_ready
                if other is not rpc and ready is not None and not other.answered and ready():
                    if not self._flush_soon:
                        self._flush_soon = True
                        asyncio.get_running_loop().call_soon(self._flush_answers)
                    return
        self.flush()

    def _flush_answers(self) -> None:
        self._flush_soon = False
        self.flush()

    @property
    def idle(self) -> bool:
        return not self.core.open_streams and (self._goaway_ping is None or self.core.going_away)

    def go_away(self) -> None:
        """Tell the client no new stream will be served here, in two steps as RFC 9113
        section 6.8 advises: GOAWAY with the largest stream id and a PING, then, once the PING
        is acknowledged (every stream the client opened before it read the first GOAWAY has
        arrived, and is served) or after :data:`GOAWAY_ACK_SECS`, GOAWAY with the last stream
        id. One GOAWAY at once would refuse the streams already on their way, which a proxy
        that already sent the request body (nginx) cannot retry."""
        if self._goaway_ping is not None or self.core.going_away or self._transport is None:
            return
        self._goaway_ping = b"goaway\x00\x00"
        self.core.goaway_notice()
        self.core.send_ping(self._goaway_ping)
        self.flush()
        self._goaway_timer = asyncio.get_running_loop().call_later(
            GOAWAY_ACK_SECS, self._final_goaway
        )

    @property
    def refusing(self) -> bool:
        """The final GOAWAY is sent (or the connection is gone): no new stream opens."""
        return self.core.going_away or self._transport is None

    def _final_goaway(self) -> None:
        if self._goaway_timer is not None:
            self._goaway_timer.cancel()
            self._goaway_timer = None
        if not self.core.going_away:
            self.core.goaway()
            self.flush()
        self.server.check_final_goaways()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def tasks(self) -> list[asyncio.Task[None]]:
        """The handler tasks of this connection's open rpcs."""
        return [r.task for r in self._rpcs.values() if r.task is not None and not r.task.done()]

    # -- the core's events (see _connection.Events) ---------------------------------------------

    def request(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        fields = dict(headers)  # pseudo-headers are unique (the core checked)
        content_type = fields.get(b"content-type")
        if (
            fields[b":method"] == b"POST"
            and content_type is not None
            and content_type.startswith(b"application/grpc")
        ):
            method = self.server.methods.get(fields[b":path"])
            if method is not None:
                rpc = Stream(self, stream_id, method)
                self._rpcs[stream_id] = rpc
                rpc.start(fields, end_stream)
                return
            answer = trailers_only(b"200", UNIMPLEMENTED, None)  # no message, as Triton
        else:
            answer = refusal(fields) or b""
        self.core.send_headers(stream_id, answer, end_stream=True)

    def headers_too_large(self, stream_id: int, size: int) -> None:
        limit = self.server.limits.max_header_list_size
        self.core.send_headers(
            stream_id,
            trailers_only(
                b"200", RESOURCE_EXHAUSTED, f"Header list larger than max ({size} vs. {limit})"
            ),
            end_stream=True,
        )

    def data(self, stream_id: int, data: memoryview, end_stream: bool) -> None:
        rpc = self._rpcs.get(stream_id)
        if rpc is not None:
            rpc.data(data, end_stream)
        else:
            self.core.consume(stream_id, len(data))

    def reset(self, stream_id: int) -> None:
        rpc = self._rpcs.pop(stream_id, None)
        if rpc is not None:
            rpc.reset()

    def sent(self, stream_id: int) -> None:
        rpc = self._rpcs.get(stream_id)
        if rpc is not None:
            rpc.sent()
            if rpc.answered:
                del self._rpcs[stream_id]

    def ping_ack(self, opaque: bytes) -> None:
        if self._goaway_ping is not None and opaque == self._goaway_ping:
            self._final_goaway()
            return
        if opaque == self._ping_waiting:
            self._ping_waiting = None
            if self._ping_timeout is not None:
                self._ping_timeout.cancel()
                self._ping_timeout = None

    def terminated(self, code: int, reason: str) -> None:
        log.debug("gRPC connection error %d: %s", code, reason)

    # -- keepalive ------------------------------------------------------------------------------

    def _send_keepalive(self) -> None:
        limits = self.server.limits
        loop = asyncio.get_running_loop()
        self._keepalive = loop.call_later(limits.keepalive_time_ms / 1000, self._send_keepalive)
        if self._transport is None or self._ping_waiting is not None:
            return
        if not self._rpcs and not limits.keepalive_permit_without_calls:
            return
        allowed = limits.max_pings_without_data
        if allowed and self.core.pings_without_data >= allowed:
            return
        self._ping_waiting = next(self._ping_ids).to_bytes(8, "big")
        self.core.send_ping(self._ping_waiting)
        self.flush()
        self._ping_timeout = loop.call_later(
            limits.keepalive_timeout_ms / 1000, self._keepalive_expired
        )

    def _keepalive_expired(self) -> None:
        self._ping_timeout = None
        log.debug("gRPC keepalive PING not acknowledged: closing the connection")
        self.close()


class GrpcServer:
    """Serves ``methods`` (``"/package.Service/Method" -> Method``) on a listening socket."""

    def __init__(
        self,
        methods: dict[str, Method],
        *,
        max_message_bytes: int,
        limits: Http2Limits | None = None,
    ) -> None:
        self.methods = {path.encode(): method for path, method in methods.items()}
        self.max_message_bytes = max_message_bytes
        self.limits = limits or Http2Limits()
        self.connections: set[ServerConnection] = set()
        self.closing = False
        self._listener: asyncio.Server | None = None
        self._idle: asyncio.Event | None = None
        self._final_goaways: asyncio.Event | None = None

    async def start(self, sock: Any, ssl: SSLContext | None = None) -> None:
        """Accept connections on ``sock`` (bound, not yet listening) from now on, over TLS
        when ``ssl`` is given."""
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: ServerConnection(self), sock=sock, ssl=ssl
        )

    def begin_stop(self) -> None:
        """Accept nothing new from now on: close the listener and send every connection GOAWAY
        (once), whose last stream id tells a client or proxy which streams will still be
        served and which it may send elsewhere."""
        if self.closing:
            return
        self.closing = True
        if self._listener is not None:
            self._listener.close()
        for connection in list(self.connections):
            connection.go_away()

    async def stop(self, grace: float) -> None:
        """Accept nothing new (GOAWAY), give open streams ``grace`` seconds, then close every
        connection and wait until the rpcs still running there unwound."""
        self.begin_stop()
        self._idle = asyncio.Event()
        self.check_idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        running = [task for c in self.connections for task in c.tasks()]
        for connection in list(self.connections):
            connection.close()
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=max(grace, 1.0))

    async def wait_final_goaways(self) -> None:
        """Return once every connection sent its final GOAWAY (see
        :meth:`ServerConnection.go_away`): no stream can open after that."""
        self._final_goaways = asyncio.Event()
        self.check_final_goaways()
        await self._final_goaways.wait()

    def check_final_goaways(self) -> None:
        if self._final_goaways is not None and all(c.refusing for c in self.connections):
            self._final_goaways.set()

    def check_idle(self) -> None:
        if self._idle is not None and all(c.idle for c in self.connections):
            self._idle.set()

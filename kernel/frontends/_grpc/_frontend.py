"""The gRPC endpoint: the kernel's HTTP/2 server (:mod:`._server`) on its port, and its stop."""

from __future__ import annotations

import socket

import anyio

from kernel._server import InferenceServer
from kernel.frontends._grpc._health import HealthServicer
from kernel.frontends._grpc._in_flight import InFlight
from kernel.frontends._grpc._limits import Http2Limits
from kernel.frontends._grpc._method_table import methods
from kernel.frontends._grpc._server import GOAWAY_ACK_SECS, GrpcServer
from kernel.frontends._grpc._service import InferenceServicer
from kernel.frontends._tls import listener_context

__all__ = ["GrpcFrontend"]

_STREAMS_END_SECS = 2.0
"""How long a stop waits, after the in-flight work is done, for the open streams to end."""


class GrpcFrontend:
    """Serves ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health``."""

    def __init__(self) -> None:
        self._grpc: GrpcServer | None = None
        self._in_flight: InFlight | None = None

    async def start(self, server: InferenceServer, sock: socket.socket) -> None:
        """Serve on ``sock`` (bound by the kernel) in the background and return."""
        tls = listener_context(server.options.grpc_tls, "grpc", sock)
        self._in_flight = InFlight()
        inference = InferenceServicer(server, self._in_flight)
        health = HealthServicer(server)
        options = server.options
        limits = Http2Limits(
            max_concurrent_streams=options.grpc_max_concurrent_streams,
            max_header_list_size=options.grpc_max_header_list_size,
            keepalive_time_ms=options.grpc_keepalive_time_ms,
            keepalive_timeout_ms=options.grpc_keepalive_timeout_ms,
            keepalive_permit_without_calls=options.grpc_keepalive_permit_without_calls,
            max_pings_without_data=options.grpc_http2_max_pings_without_data,
            min_recv_ping_interval_without_data_ms=(
                options.grpc_http2_min_recv_ping_interval_without_data_ms
            ),
            max_ping_strikes=options.grpc_http2_max_ping_strikes,
        )
        self._grpc = GrpcServer(
            methods([inference.__mapping__(), inference.restrict(health.__mapping__())]),
            max_message_bytes=options.grpc_max_message_bytes,
            limits=limits,
        )
        await self._grpc.start(sock, ssl=tls)

    async def stop(self, timeout: float) -> None:
        """Stop accepting new rpcs and stream requests, let the work in progress finish for up
        to ``timeout`` seconds, then cancel what is left and close every connection."""
        grpc_server, in_flight = self._grpc, self._in_flight
        if grpc_server is None or in_flight is None:
            return
        self._grpc = None
        # GOAWAY before anything is refused: an rpc on a stream opened before it is served (a
        # client or proxy sends the streams past it elsewhere); refusing those instead would
        # answer UNAVAILABLE to requests a proxy cannot retry
        grpc_server.begin_stop()
        stopped = anyio.Event()

        async def stop_streams() -> None:
            await grpc_server.stop(timeout)
            stopped.set()

        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as tg:
                # GrpcServer.stop closes the listening socket and sends GOAWAY at once, then
                # waits for open streams; once the in-flight work is done, the ModelStreamInfer
                # streams end themselves (UNAVAILABLE): give them a moment to, then cut the wait
                # short (a stream whose client never sends may stay open) and close below.
                tg.start_soon(stop_streams)
                await in_flight.drain()
                # rpcs on streams opened before the final GOAWAY are served too
                with anyio.move_on_after(GOAWAY_ACK_SECS + 0.5):
                    await grpc_server.wait_final_goaways()
                await in_flight.drain()
                with anyio.move_on_after(_STREAMS_END_SECS):
                    await stopped.wait()
                tg.cancel_scope.cancel()
        await grpc_server.stop(grace=0.1)

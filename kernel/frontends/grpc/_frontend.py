"""The gRPC endpoint: the kernel's HTTP/2 server (:mod:`._http2`) on its port, and its stop."""

from __future__ import annotations

import socket

import anyio

from kernel.frontends.grpc._health import HealthServicer
from kernel.frontends.grpc._http2 import GrpcServer
from kernel.frontends.grpc._in_flight import InFlight
from kernel.frontends.grpc._service import InferenceServicer
from kernel.frontends.grpc._transport import methods
from kernel.server import InferenceServer

__all__ = ["GrpcFrontend"]


class GrpcFrontend:
    """Serves ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health``."""

    def __init__(self) -> None:
        self._grpc: GrpcServer | None = None
        self._in_flight: InFlight | None = None

    async def start(self, server: InferenceServer, sock: socket.socket) -> None:
        """Serve on ``sock`` (bound by the kernel) in the background and return."""
        self._in_flight = InFlight()
        inference = InferenceServicer(server, self._in_flight)
        health = HealthServicer(server)
        self._grpc = GrpcServer(
            methods([inference.__mapping__(), health.__mapping__()]),
            max_message_bytes=server.options.grpc_max_message_bytes,
        )
        await self._grpc.start(sock)

    async def stop(self, timeout: float) -> None:
        """Stop accepting new rpcs and stream requests, let the work in progress finish for up
        to ``timeout`` seconds, then cancel what is left and close every connection."""
        grpc_server, in_flight = self._grpc, self._in_flight
        if grpc_server is None or in_flight is None:
            return
        self._grpc = None
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as tg:
                # GrpcServer.stop closes the listening socket and sends GOAWAY at once, then
                # waits for open streams; cut that wait short once the in-flight work is done
                # (an idle bidi stream may stay open) and close with a short grace below.
                tg.start_soon(grpc_server.stop, timeout)
                await in_flight.drain()
                tg.cancel_scope.cancel()
        await grpc_server.stop(grace=0.1)

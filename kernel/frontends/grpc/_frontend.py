"""The gRPC endpoint: a grpclib server on the socket the kernel bound, and its graceful stop."""

from __future__ import annotations

import asyncio
import socket
import weakref
from typing import Any

import anyio
from grpclib.const import Status as GrpcStatus
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from grpclib.server import Server

from kernel.frontends.grpc._health import HealthServicer
from kernel.frontends.grpc._in_flight import InFlight
from kernel.frontends.grpc._service import InferenceServicer
from kernel.server import InferenceServer

__all__ = ["GrpcFrontend"]


class _SizeLimitedCodec(ProtoCodec):
    """Protobuf decoding that refuses messages over the server's limit, as gRPC servers do."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    def decode(self, data: bytes, message_type: Any) -> Any:
        if len(data) > self._max_bytes:
            raise GRPCError(
                GrpcStatus.RESOURCE_EXHAUSTED,
                f"Received message larger than max ({len(data)} vs. {self._max_bytes})",
            )
        return super().decode(data, message_type)


class _Server(Server):
    """A grpclib server that knows its connections, so a stop can close idle ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        self.connections.add(protocol)
        return protocol

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()

    def close_connections(self) -> None:
        for protocol in list(self.connections):
            connection = getattr(protocol, "connection", None)
            if connection is not None:
                connection.close()


class GrpcFrontend:
    """Serves ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health``."""

    def __init__(self) -> None:
        self._grpc: _Server | None = None
        self._in_flight: InFlight | None = None

    async def start(self, server: InferenceServer, sock: socket.socket) -> None:
        """Serve on ``sock`` (bound and listening) in the background and return."""
        self._in_flight = InFlight()
        self._grpc = _Server(
            [InferenceServicer(server, self._in_flight), HealthServicer(server)],
            codec=_SizeLimitedCodec(server.options.grpc_max_message_bytes),
        )
        await self._grpc.start(sock=sock)

    async def stop(self, timeout: float) -> None:
        """Stop accepting connections and new work, let the work in progress finish for up to
        ``timeout`` seconds, then cancel what is left and close every connection."""
        grpc, in_flight = self._grpc, self._in_flight
        if grpc is None or in_flight is None:
            return
        self._grpc = None
        deadline = anyio.current_time() + timeout
        grpc.stop_listening()
        with anyio.move_on_after(timeout):
            await in_flight.drain()
        grpc.close()
        grpc.close_connections()
        remaining = max(deadline - anyio.current_time(), 0.1)
        with anyio.move_on_after(remaining):
            await grpc.wait_closed()
        await asyncio.sleep(0)  # let the closed transports report connection_lost

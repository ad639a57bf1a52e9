"""The gRPC endpoint: grpcio's asyncio server on the kernel's port, and its graceful stop."""

from __future__ import annotations

import socket

import anyio
import grpc

from kernel.errors import KernelError, Status
from kernel.frontends.grpc._health import HealthServicer
from kernel.frontends.grpc._in_flight import InFlight
from kernel.frontends.grpc._service import InferenceServicer
from kernel.frontends.grpc._transport import generic_handlers
from kernel.server import InferenceServer

__all__ = ["GrpcFrontend"]


class GrpcFrontend:
    """Serves ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health``."""

    def __init__(self) -> None:
        self._grpc: grpc.aio.Server | None = None
        self._in_flight: InFlight | None = None

    async def start(self, server: InferenceServer, sock: socket.socket) -> None:
        """Serve on the address of ``sock`` in the background and return.

        grpcio binds its own listening socket, so the kernel's is closed and its address
        taken over at once (port reuse is off: a clash fails loudly instead of sharing it).
        """
        host, port = sock.getsockname()[:2]
        sock.close()
        limit = server.options.grpc_max_message_bytes
        self._in_flight = InFlight()
        self._grpc = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ]
        )
        inference = InferenceServicer(server, self._in_flight)
        health = HealthServicer(server)
        self._grpc.add_generic_rpc_handlers(
            generic_handlers([inference.__mapping__(), health.__mapping__()])
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self._grpc.add_insecure_port(address) == 0:
                raise RuntimeError("port taken")
        except RuntimeError as exc:
            raise KernelError(Status.UNAVAILABLE, f"cannot listen on {address}: {exc}") from exc
        await self._grpc.start()

    async def stop(self, timeout: float) -> None:
        """Stop accepting new rpcs and stream requests, let the work in progress finish for up
        to ``timeout`` seconds, then cancel what is left and close every connection."""
        grpc_server, in_flight = self._grpc, self._in_flight
        if grpc_server is None or in_flight is None:
            return
        self._grpc = None
        with anyio.move_on_after(timeout):
            await in_flight.drain()
        await grpc_server.stop(grace=0.1)

"""The HTTP endpoint's lifecycle: serve on the server's socket, drain and close on stop."""

from __future__ import annotations

import asyncio
import logging
import socket
from ssl import SSLContext

from kernel.frontends._tls import listener_context
from kernel.server import InferenceServer

from ._app import HttpApp
from ._connection import HttpConnection, RequestHandler

__all__ = ["HttpFrontend", "HttpListener"]

log = logging.getLogger("kernel.frontends.http")


class HttpListener:
    """Accepts HTTP/1.1 connections on a socket and hands their requests to ``handler``."""

    def __init__(self, handler: RequestHandler) -> None:
        self._handler = handler
        self._listener: asyncio.Server | None = None
        self._connections: set[HttpConnection] = set()

    async def start(self, sock: socket.socket, ssl: SSLContext | None = None) -> None:
        handler, connections = self._handler, self._connections
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: HttpConnection(handler, connections), sock=sock, ssl=ssl
        )

    async def stop(self, timeout: float) -> None:
        """Stop accepting; let responses in progress finish for up to ``timeout`` s; close."""
        listener = self._listener
        if listener is None:
            return
        self._listener = None
        listener.close()
        for connection in list(self._connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        busy = {c.task for c in self._connections if c.task is not None}
        if busy:
            await asyncio.wait(busy, timeout=timeout)
        for connection in list(self._connections):
            if connection.task is not None:
                log.warning("closing an HTTP connection whose request did not finish in time")
                connection.abort()
        # Python 3.12+ also waits here for every connection to close.
        try:
            await asyncio.wait_for(listener.wait_closed(), max(deadline - loop.time(), 0.1))
        except TimeoutError:
            for connection in list(self._connections):
                connection.abort()


class HttpFrontend:
    """KServe v2 REST with Triton's extensions (routes in :mod:`kernel.frontends.http._app`)."""

    def __init__(self) -> None:
        self._app: HttpApp | None = None
        self._listener: HttpListener | None = None

    async def start(self, server: InferenceServer, sock: socket.socket) -> None:
        """Serve on ``sock`` (bound and listening) until :meth:`stop`."""
        tls = listener_context(server.options.http_tls, "http", sock)
        self._app = HttpApp(server)
        self._listener = HttpListener(self._app)
        await self._listener.start(sock, ssl=tls)

    async def stop(self, timeout: float) -> None:
        """Stop accepting; let requests in progress finish for up to ``timeout`` s; close."""
        if self._listener is not None:
            await self._listener.stop(timeout)
            self._listener = None
        if self._app is not None:
            self._app.close()
            self._app = None

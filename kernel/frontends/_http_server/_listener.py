"""The HTTP/1.1 listener: accepts connections on a socket and drains them on stop."""

from __future__ import annotations

import asyncio
import logging
import socket
from ssl import SSLContext

from ._connection import HttpConnection
from ._types import HttpLimits, RequestHandler

__all__ = ["HttpListener"]

log = logging.getLogger("kernel.frontends.http")


class HttpListener:
    """Accepts HTTP/1.1 connections on a socket and hands their requests to ``handler``."""

    def __init__(self, handler: RequestHandler, limits: HttpLimits | None = None) -> None:
        self._handler = handler
        self._limits = limits or HttpLimits(max_body=handler.max_body)
        self._listener: asyncio.Server | None = None
        self._connections: set[HttpConnection] = set()

    async def start(self, sock: socket.socket, ssl: SSLContext | None = None) -> None:
        handler, limits, connections = self._handler, self._limits, self._connections
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: HttpConnection(handler, limits, connections), sock=sock, ssl=ssl
        )

    async def stop(self, timeout: float) -> None:
        """Graceful stop: refuse new connections at once (the listening socket closes); let
        requests in progress finish for up to ``timeout`` s, answering any new request on an
        open connection 503 with ``Connection: close``; then close every connection."""
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
        await asyncio.sleep(0)  # let 503 answers to requests that just arrived be written
        for connection in list(self._connections):
            if connection.handling:
                log.warning("closing an HTTP connection whose request did not finish in time")
                connection.abort()
            else:
                connection.close()
        # Python 3.12+ also waits here for every connection to close.
        try:
            await asyncio.wait_for(listener.wait_closed(), max(deadline - loop.time(), 0.1))
        except TimeoutError:
            for connection in list(self._connections):
                connection.abort()

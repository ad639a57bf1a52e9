"""The HTTP endpoint's lifecycle: serve on the server's socket, drain and close on stop."""

from __future__ import annotations

import socket

from kernel._server import InferenceServer
from kernel.frontends._http_server import HttpLimits, HttpListener
from kernel.frontends._tls import listener_context

from ._app import HttpApp

__all__ = ["HttpFrontend"]


class HttpFrontend:
    """KServe v2 REST with Triton's extensions (routes in :mod:`kernel.frontends._http._app`)."""

    def __init__(self) -> None:
        self._app: HttpApp | None = None
        self._listener: HttpListener | None = None

    async def start(self, server: InferenceServer, sock: socket.socket) -> None:
        """Serve on ``sock`` (bound and listening) until :meth:`stop`."""
        tls = listener_context(server.options.http_tls, "http", sock)
        self._app = HttpApp(server)
        self._listener = HttpListener(self._app, HttpLimits.from_options(server.options))
        await self._listener.start(sock, ssl=tls)

    async def stop(self, timeout: float) -> None:
        """Stop accepting; let requests in progress finish for up to ``timeout`` s; close."""
        if self._listener is not None:
            await self._listener.stop(timeout)
            self._listener = None
        if self._app is not None:
            self._app.close()
            self._app = None

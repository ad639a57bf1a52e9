"""The OpenAI frontend's lifecycle and its ``kernel.frontends`` plugin object.

This module is what the entry point loads, also for ``kernel serve --help`` and ``kernel
frontends``: it imports only the standard library at module level; the server stack comes in
with :meth:`OpenAIFrontend.start`.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kernel import InferenceServer
    from kernel.frontends import HttpListener

__all__ = ["OpenAIFrontend", "OpenAIFrontendPlugin"]

API_KEY_ENVIRONMENT = "OPENAI_FRONTEND_API_KEY"


class OpenAIFrontend:
    """Serves the OpenAI routes on the kernel's HTTP/1.1 transport."""

    def __init__(self, *, api_key: str | None = None) -> None:
        self._api_key = api_key
        self._listener: HttpListener | None = None

    async def start(self, server: InferenceServer, sock: socket.socket) -> None:
        """Serve on ``sock`` (bound and listening) until :meth:`stop`, with the limits and
        timeouts of the server's HTTP flags (``--http-max-input-size``, ...)."""
        from kernel.frontends import HttpLimits, HttpListener

        from ._app import OpenAIApp

        limits = HttpLimits.from_options(server.options)
        app = OpenAIApp(server, max_body=limits.max_body, api_key=self._api_key)
        self._listener = HttpListener(app, limits)
        await self._listener.start(sock)

    async def stop(self, timeout: float) -> None:
        """Stop accepting; let requests (streams too) finish for up to ``timeout`` s; close."""
        if self._listener is not None:
            await self._listener.stop(timeout)
            self._listener = None


class OpenAIFrontendPlugin:
    """``--openai-port PORT`` turns on ``/v1/models``, ``/v1/completions`` and
    ``/v1/chat/completions`` (off by default; Triton's own OpenAI frontend uses 9000)."""

    name = "openai"
    default_port: int | None = None
    description = "OpenAI-compatible /v1/completions, /v1/chat/completions, /v1/models (HTTP/1.1)"

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        group.add_argument(
            "--openai-api-key",
            default=None,
            metavar="KEY",
            help="Require 'Authorization: Bearer KEY' on /v1 routes (default: the"
            f" {API_KEY_ENVIRONMENT} environment variable; unset: no key)",
        )

    def create(self, args: argparse.Namespace) -> OpenAIFrontend:
        key = getattr(args, "openai_api_key", None) or os.environ.get(API_KEY_ENVIRONMENT)
        return OpenAIFrontend(api_key=key or None)

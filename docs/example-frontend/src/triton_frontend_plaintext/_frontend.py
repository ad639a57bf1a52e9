"""The frontend itself: an :class:`~kernel.frontends.HttpListener` with a small app that talks
to the server only through its public API (``prepare``, ``infer``, ``is_ready``)."""

from __future__ import annotations

import socket
from collections.abc import AsyncGenerator, AsyncIterator

import numpy as np

from kernel import InferenceRequest, InferenceResponse, InferenceServer, KernelError
from kernel.frontends import (
    HttpLimits,
    HttpListener,
    HttpRequest,
    Reply,
    StreamingReply,
    http_status,
)

_TEXT = (b"content-type", b"text/plain; charset=utf-8")


class _PlainTextApp:
    max_body = 64 * 1024

    def __init__(self, server: InferenceServer, input_name: str, output_name: str) -> None:
        self._server = server
        self._input = input_name
        self._output = output_name

    async def handle(self, request: HttpRequest) -> Reply | StreamingReply:
        if request.path == "/health":
            ready = self._server.is_ready()
            return Reply(200 if ready else 503, [_TEXT], [b"ready" if ready else b"not ready"])
        model = request.path.strip("/")
        if request.method != "POST" or not model or "/" in model:
            return Reply(404, [_TEXT], [b"POST /{model} with a text body\n"])
        try:
            target = self._server.prepare(model)
            text = np.array([bytes(request.body)], dtype=np.object_)
            call = InferenceRequest(model, {self._input: text}, model_version=target.version)
            request.watch = call  # the transport cancels it if the client leaves
            responses = self._server.infer(call, target)
            first = await anext(responses)  # refusals become an error status, not a stream
        except KernelError as exc:
            return Reply(http_status(exc.status), [_TEXT], [exc.message.encode() + b"\n"])
        if first.error is not None:
            await responses.aclose()
            message = first.error.message.encode() + b"\n"
            return Reply(http_status(first.error.status), [_TEXT], [message])
        return StreamingReply(200, [_TEXT], self._chunks(first, responses))

    async def _chunks(
        self, first: InferenceResponse, responses: AsyncGenerator[InferenceResponse, None]
    ) -> AsyncIterator[bytes]:
        try:
            response: InferenceResponse | None = first
            while response is not None:
                if response.error is not None:
                    yield b"\n[error: " + response.error.message.encode() + b"]\n"
                else:
                    yield self._text(response)
                response = None if response.final else await anext(responses, None)
        finally:
            await responses.aclose()

    def _text(self, response: InferenceResponse) -> bytes:
        array = response.outputs.get(self._output)
        if array is None:
            return b""
        return b"".join(v if isinstance(v, bytes) else str(v).encode() for v in array.flat)


class PlainTextFrontend:
    """Serves :class:`_PlainTextApp` on the socket the kernel bound for it."""

    def __init__(self, input_name: str, output_name: str) -> None:
        self._input = input_name
        self._output = output_name
        self._listener: HttpListener | None = None

    async def start(self, server: InferenceServer, sock: socket.socket) -> None:
        app = _PlainTextApp(server, self._input, self._output)
        limits = HttpLimits.from_options(server.options, max_body=app.max_body)
        self._listener = HttpListener(app, limits)
        await self._listener.start(sock)

    async def stop(self, timeout: float) -> None:
        if self._listener is not None:
            await self._listener.stop(timeout)
            self._listener = None

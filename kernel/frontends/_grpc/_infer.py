"""The two inference rpcs, ``ModelInfer`` and ``ModelStreamInfer``, on grpclib-style streams.

They use the fast message classes of :mod:`._messages`. On a stream, requests run concurrently
and their responses go out as they come (one writer at a time); an error answers only the
request it belongs to, inside the stream (``error_message``), and the stream carries on.
Responses of decoupled models carry Triton's ``triton_final_response`` parameter; a bare final
flag becomes an empty response only when the request asked for it with
``triton_enable_empty_final_response``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from kernel._errors import KernelError, Status
from kernel._inference import InferenceResponse
from kernel._server import InferenceServer
from kernel._tracing import RequestTrace, Tracer
from kernel.frontends._access import HeaderForwarding
from kernel.frontends._grpc._in_flight import InFlight
from kernel.frontends._grpc._messages import StreamInferResponsePb
from kernel.frontends._grpc._rpc import Framed
from kernel.frontends._grpc._tensors import FINAL_FLAG, DecodedRequest, TensorCodec

STREAM_UNREAD_RESPONSES = 16
"""Responses of a decoupled request on a stream that may wait unsent before the model's sender
waits (see :meth:`InferenceRequest.limit_unread_responses`); as generate_stream's."""

__all__ = ["InferenceRpcs"]

_Send = Callable[[Any], Awaitable[None]]


def _stream_error(error: KernelError, request_id: str) -> Any:
    message = StreamInferResponsePb(error_message=error.message)
    message.infer_response.id = request_id
    return message


def _continued(tracer: Tracer, stream: Any) -> RequestTrace | None:
    """The client's W3C trace context from the call's metadata (OpenTelemetry mode)."""
    metadata: dict[bytes, bytes] = getattr(stream, "metadata", {})
    parent = metadata.get(b"traceparent")
    if parent is None:
        return None
    state = metadata.get(b"tracestate")
    return tracer.continued(parent.decode("latin-1"), state.decode("latin-1") if state else None)


class _StreamWork:
    """The requests one stream accepted and has not answered in full yet."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = anyio.Event()
        self.idle.set()

    def enter(self) -> None:
        if not self.count:
            self.idle = anyio.Event()
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if not self.count:
            self.idle.set()


class InferenceRpcs:
    """``ModelInfer`` and ``ModelStreamInfer`` of one server."""

    def __init__(self, server: InferenceServer, codec: TensorCodec, in_flight: InFlight) -> None:
        self._server = server
        self._codec = codec
        self._in_flight = in_flight
        self._forwarding = HeaderForwarding.compile(
            server.options.grpc_header_forward_pattern, "--grpc-header-forward-pattern"
        )

    def _forwarded(self, stream: Any) -> list[tuple[str, str]]:
        """The stream's metadata as text pairs, for header forwarding."""
        metadata: dict[bytes, bytes] = getattr(stream, "metadata", {})
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in metadata.items()]

    async def model_infer(self, stream: Any) -> None:
        """One request, one response; every refusal is raised as a :class:`KernelError`."""
        message = await stream.recv_message()
        decoded = self._codec.decode(message, unary=True)
        if self._forwarding is not None:
            self._forwarding.forward(self._forwarded(stream), decoded.request.parameters)
        tracer = self._server.tracer
        if tracer.propagates:  # OpenTelemetry mode: continue the client's trace
            decoded.request.trace = _continued(tracer, stream)
        request = decoded.request
        stream.answer_ready = lambda: request.answered
        response = await self._server.infer_once(request, decoded.target)
        if response.error is not None:
            raise response.error
        framed = self._codec.encode_framed(decoded, response)
        if framed is not None:
            await stream.send_message(Framed(framed))
        else:
            await stream.send_message(self._codec.encode(decoded, response))

    async def model_stream_infer(self, stream: Any) -> None:
        """Any number of requests; returns once the client closed its side and all answered.

        When the server stops, requests that arrive are refused in the stream (``UNAVAILABLE``),
        and once every request this stream accepted is answered in full the stream ends with
        ``UNAVAILABLE`` ("the server is shutting down"): a stream cannot move to another
        replica, so the client must open a new one (a proxy picks a live replica) and resend
        what got no answer. Ending it here, rather than by closing the connection, lets a
        proxy pass the status on instead of a reset.
        """
        lock = anyio.Lock()
        forwarding = self._forwarding
        headers = self._forwarded(stream) if forwarding is not None else []
        own = _StreamWork()
        stopped = False

        async def send(message: Any) -> None:
            async with lock:
                await stream.send_message(message)

        async def end_when_stopping(scope: anyio.CancelScope) -> None:
            nonlocal stopped
            await self._in_flight.stopping.wait()
            await own.idle.wait()
            async with lock:  # not in the middle of a message
                stopped = True
                scope.cancel()

        async with anyio.create_task_group() as outer:
            outer.start_soon(end_when_stopping, outer.cancel_scope)
            async with anyio.create_task_group() as tg:
                async for message in stream:
                    try:
                        self._in_flight.enter()
                    except KernelError as exc:
                        await send(_stream_error(exc, message.id))
                        continue
                    try:
                        decoded = self._codec.decode(message, unary=False)
                        if forwarding is not None:
                            forwarding.forward(headers, decoded.request.parameters)
                    except KernelError as exc:
                        self._in_flight.leave()
                        await send(_stream_error(exc, message.id))
                        continue
                    own.enter()
                    tg.start_soon(self._answer, decoded, send, own, stream)
            outer.cancel_scope.cancel()  # the client closed its side and all was answered
        if stopped:
            raise KernelError(Status.UNAVAILABLE, "the server is shutting down")

    async def _answer(
        self, decoded: DecodedRequest, send: _Send, own: _StreamWork, stream: Any
    ) -> None:
        request = decoded.request
        tracer = self._server.tracer
        try:
            if tracer.propagates:  # OpenTelemetry mode: continue the client's trace
                request.trace = _continued(tracer, stream)  # taken by the infer call below
            if not decoded.target.decoupled:
                response = await self._server.infer_once(request, decoded.target)
                await send(self._stream_message(decoded, response))
                return
            # A client that does not read fills the stream's window (``send`` waits): the
            # model is then held too, after a bounded number of responses (flow control).
            request.limit_unread_responses(STREAM_UNREAD_RESPONSES)
            async for response in self._server.infer(request, decoded.target):
                if response.final and not (
                    response.outputs or response.parameters or response.error
                ):
                    if decoded.empty_final:
                        await send(self._empty_final(decoded))
                    continue
                await send(self._stream_message(decoded, response))
        except KernelError as exc:
            await send(_stream_error(exc, request.id))
        finally:
            own.leave()
            self._in_flight.leave()

    def _stream_message(self, decoded: DecodedRequest, response: InferenceResponse) -> Any:
        if response.error is not None:
            return _stream_error(response.error, decoded.request.id)
        message = StreamInferResponsePb()
        try:
            self._codec.encode(decoded, response, response.final, into=message.infer_response)
        except KernelError as exc:
            return _stream_error(exc, decoded.request.id)
        return message

    @staticmethod
    def _empty_final(decoded: DecodedRequest) -> Any:
        # Triton's empty final response names the model but no version
        message = StreamInferResponsePb()
        infer = message.infer_response
        infer.model_name = decoded.request.model_name
        infer.id = decoded.request.id
        infer.parameters[FINAL_FLAG].bool_param = True
        return message

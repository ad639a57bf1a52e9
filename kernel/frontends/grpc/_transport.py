"""Serving grpclib-style handlers on grpcio's asyncio server.

The services are written against grpclib's handler mapping (``path -> Handler(func(stream),
cardinality, request type, reply type)``), which the betterproto2-generated base classes produce.
They are served by ``grpc.aio`` (gRPC's C core) instead of grpclib's pure-Python HTTP/2 stack:
on this project's benchmark the C core carries about 1.7x the inferences per second at
concurrency 4 to 8 (bench/RESULTS.md). This module is the only place that knows both: it
adapts each handler to a grpcio method handler, with a small stream object offering the part of
grpclib's ``Stream`` the handlers use (``recv_message``, ``send_message``, async iteration).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpclib.const import Cardinality, Handler
from grpclib.exceptions import GRPCError

__all__ = ["generic_handlers"]

_Func = Callable[[Any], Awaitable[None]]


class _Stream:
    """What a grpclib handler sees of its rpc, over a grpcio call."""

    __slots__ = ("_context", "_request", "_requests", "reply")

    def __init__(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        request: Any = None,
        requests: AsyncIterator[Any] | None = None,
    ) -> None:
        self._context = context
        self._request = request
        self._requests = requests
        self.reply: Any = None

    async def recv_message(self) -> Any:
        if self._requests is None:
            return self._request
        try:
            return await anext(self._requests)
        except StopAsyncIteration:
            return None

    async def send_message(self, message: Any) -> None:
        if self._streams_replies:
            await self._context.write(message)
        else:
            self.reply = message  # a unary rpc's one reply, returned by the grpcio handler

    _streams_replies = False

    def __aiter__(self) -> AsyncIterator[Any]:
        assert self._requests is not None
        return self._requests


class _StreamingStream(_Stream):
    __slots__ = ()
    _streams_replies = True


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: GRPCError) -> None:
    await context.abort(grpc.StatusCode[error.status.name], error.message or "")


def _serializer(message_type: Any) -> Callable[[Any], bytes]:
    if hasattr(message_type, "SerializeToString"):  # protobuf runtime (upb) classes
        return message_type.SerializeToString  # type: ignore[no-any-return]
    return bytes  # betterproto2 messages


def _deserializer(message_type: Any) -> Callable[[bytes], Any]:
    if hasattr(message_type, "FromString"):
        return message_type.FromString  # type: ignore[no-any-return]
    return message_type.parse  # type: ignore[no-any-return]


def _method_handler(handler: Handler) -> grpc.RpcMethodHandler:
    func: _Func = handler.func
    request_deserializer = _deserializer(handler.request_type)
    response_serializer = _serializer(handler.reply_type)

    if handler.cardinality is Cardinality.UNARY_UNARY:

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            stream = _Stream(context, request=request)
            try:
                await func(stream)
            except GRPCError as error:
                await _abort(context, error)
            return stream.reply

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer, response_serializer
        )

    if handler.cardinality is Cardinality.UNARY_STREAM:

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            try:
                await func(_StreamingStream(context, request=request))
            except GRPCError as error:
                await _abort(context, error)

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer, response_serializer
        )

    if handler.cardinality is Cardinality.STREAM_STREAM:

        async def stream_stream(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> None:
            try:
                await func(_StreamingStream(context, requests=requests))
            except GRPCError as error:
                await _abort(context, error)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer, response_serializer
        )

    raise NotImplementedError(f"no adapter for {handler.cardinality} rpcs")


def generic_handlers(mappings: list[dict[str, Handler]]) -> list[grpc.GenericRpcHandler]:
    """One grpcio generic handler per service of the given grpclib mappings."""
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for mapping in mappings:
        for path, handler in mapping.items():
            _, service, method = path.split("/")
            services.setdefault(service, {})[method] = _method_handler(handler)
    return [
        grpc.method_handlers_generic_handler(service, methods)
        for service, methods in services.items()
    ]

"""From grpclib-style handler mappings to the methods the kernel's HTTP/2 server serves.

The services are written against grpclib's handler mapping (``path -> Handler(func(stream),
cardinality, request type, reply type)``), which the betterproto2-generated base classes
produce. :mod:`._server` serves them; this module only picks each method's (de)serializers:
the inference rpcs use protobuf runtime (upb) classes, the rest betterproto2 messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpclib.const import Cardinality, Handler

from kernel.frontends._grpc._rpc import Method

__all__ = ["methods"]

_SUPPORTED = (Cardinality.UNARY_UNARY, Cardinality.UNARY_STREAM, Cardinality.STREAM_STREAM)


def _serializer(message_type: Any) -> Callable[[Any], bytes]:
    if hasattr(message_type, "SerializeToString"):  # protobuf runtime (upb) classes
        return message_type.SerializeToString  # type: ignore[no-any-return]
    return bytes  # betterproto2 messages


def _parser(message_type: Any) -> Callable[[Any], Any]:
    if hasattr(message_type, "FromString"):
        return message_type.FromString  # type: ignore[no-any-return]
    return lambda data: message_type.parse(bytes(data))


def methods(mappings: list[dict[str, Handler]]) -> dict[str, Method]:
    """Every rpc of the given grpclib mappings, by path."""
    served: dict[str, Method] = {}
    for mapping in mappings:
        for path, handler in mapping.items():
            if handler.cardinality not in _SUPPORTED:
                raise NotImplementedError(f"{path}: {handler.cardinality} rpcs are not served")
            served[path] = Method(
                handler.func,
                handler.cardinality,
                _parser(handler.request_type),
                _serializer(handler.reply_type),
            )
    return served

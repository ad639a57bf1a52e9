"""A plain ``ModelInferResponse`` written straight to its wire bytes, framed for gRPC.

Why by hand: building the upb message (``outputs.add`` per output, ``raw_output_contents``
appends) and serializing it costs several microseconds per ModelInfer on this project's
benchmark machine, and copies every output's bytes three times (into a ``bytes``, into the
message's arena, into the serialized message) before the framing copies them again. A response
without parameters is a few length-delimited fields whose heads repeat from one request to the
next (the model's name and version, each output's name, datatype and shape): those are kept
encoded, and the outputs' memory is joined once, behind the gRPC message prefix.

The bytes are exactly what the protobuf runtime's ``SerializeToString`` writes for the same
message (fields in number order, proto3 defaults left out, shapes packed), which
tests/test_grpc_response_wire.py checks against it. Responses with parameters (a map) take the
runtime's path (:meth:`._tensors.TensorCodec.encode`).
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["ResponseWire"]

_SMALL = tuple(bytes([i]) for i in range(128))
_PREFIX = struct.Struct(">BL")  # the gRPC message prefix: compressed flag, length
_CACHED = 512
"""Encoded heads kept per kind; past it the cache starts over (a bound, never reached in
practice: one entry per model version and per output shape)."""

_MODEL_NAME, _MODEL_VERSION, _ID, _OUTPUTS, _RAW = b"\x0a", b"\x12", b"\x1a", b"\x2a", b"\x32"
_NAME, _DATATYPE, _SHAPE = b"\x0a", b"\x12", b"\x1a"
_RAW_HEADS = tuple(_RAW + _SMALL[size] for size in range(0x80))


def _varint(value: int) -> bytes:
    """A protobuf varint (negative ``int64`` values as their 64-bit two's complement)."""
    if 0 <= value < 0x80:
        return _SMALL[value]
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(tag: bytes, text: str) -> bytes:
    """A proto3 string field (nothing for the empty default)."""
    if not text:
        return b""
    data = text.encode()
    return tag + _varint(len(data)) + data


class ResponseWire:
    """Encodes plain responses for one server, keeping the repeated heads encoded."""

    __slots__ = ("_heads", "_tensors")

    def __init__(self) -> None:
        self._heads: dict[tuple[str, str], bytes] = {}
        self._tensors: dict[tuple[str, str, tuple[int, ...]], bytes] = {}

    def framed(
        self,
        model: str,
        version: str,
        request_id: str,
        outputs: list[tuple[str, str, tuple[int, ...], Any, int]],
    ) -> bytes:
        """The gRPC-framed ``ModelInferResponse``: ``outputs`` are ``(name, datatype, shape,
        data, size)`` with ``data`` the output's wire bytes as any C-contiguous buffer (``bytes``,
        a ``memoryview``, a numpy array) of ``size`` bytes."""
        head = self._heads.get((model, version))
        if head is None:
            head = self._head(model, version)
        parts: list[Any] = [b"", head]
        total = len(head)
        if request_id:
            field = _string(_ID, request_id)
            parts.append(field)
            total += len(field)
        tensors = self._tensors
        for name, datatype, shape, _, _ in outputs:
            tensor = tensors.get((name, datatype, shape))
            if tensor is None:
                tensor = self._tensor(name, datatype, shape)
            parts.append(tensor)
            total += len(tensor)
        for _, _, _, data, size in outputs:
            field = _RAW_HEADS[size] if size < 0x80 else _RAW + _varint(size)
            parts.append(field)
            parts.append(data)
            total += len(field) + size
        parts[0] = _PREFIX.pack(0, total)
        return b"".join(parts)

    def _head(self, model: str, version: str) -> bytes:
        heads = self._heads
        if len(heads) >= _CACHED:
            heads.clear()
        head = heads[model, version] = _string(_MODEL_NAME, model) + _string(
            _MODEL_VERSION, version
        )
        return head

    def _tensor(self, name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
        body = _string(_NAME, name) + _string(_DATATYPE, datatype)
        if shape:
            packed = b"".join(_varint(d) for d in shape)
            body += _SHAPE + _varint(len(packed)) + packed
        tensor = _OUTPUTS + _varint(len(body)) + body
        tensors = self._tensors
        if len(tensors) >= _CACHED:
            tensors.clear()
        tensors[name, datatype, shape] = tensor
        return tensor

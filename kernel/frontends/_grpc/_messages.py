"""Fast message classes for the inference rpcs, built from the generated descriptors.

The generated betterproto2 classes serve every rpc except the two inference ones: betterproto2
parses and builds a small ``ModelInferRequest``/``ModelInferResponse`` in about 70 us each,
the protobuf runtime's C (upb) classes in under 5 us. Both come from the same descriptors (the
generated code carries them), so the wire format is identical; only these classes are swapped in
on the hot path. upb classes are created at runtime, so they are typed ``Any`` here.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import message_factory

from kernel._proto.inference import (
    ModelInferRequest,
    ModelInferResponse,
    ModelStreamInferResponse,
)

__all__ = [
    "InferRequestPb",
    "InferRequestReader",
    "InferResponsePb",
    "StreamInferResponsePb",
    "StrictRequest",
]

InferRequestPb: Any = message_factory.GetMessageClass(ModelInferRequest.DESCRIPTOR)
InferResponsePb: Any = message_factory.GetMessageClass(ModelInferResponse.DESCRIPTOR)
StreamInferResponsePb: Any = message_factory.GetMessageClass(ModelStreamInferResponse.DESCRIPTOR)


class StrictRequest:
    """A betterproto2 request type read the protobuf runtime's way.

    betterproto2 reads a field sent with another wire type than its own as a value anyway (an
    int where a message or a string belongs), which then breaks the handler. The protobuf
    runtime keeps such a field as an unknown one, as the protobuf spec says. So the bytes are
    parsed by the upb class first (malformed bytes are refused there, with protobuf's error),
    unknown fields dropped, and only the clean bytes given to betterproto2. The transport calls
    ``FromString``, as it does for upb classes; these rpcs are off the hot path.
    """

    __slots__ = ("_betterproto", "_upb")

    def __init__(self, message_type: Any) -> None:
        self._betterproto = message_type
        self._upb: Any = message_factory.GetMessageClass(message_type.DESCRIPTOR)

    def FromString(self, data: bytes) -> Any:  # noqa: N802 - the protobuf runtime's name
        message = self._upb.FromString(data)
        message.DiscardUnknownFields()
        return self._betterproto.parse(message.SerializeToString())


LARGE_REQUEST = 64 * 1024
"""From this size on, a request's raw input contents stay views of the received bytes."""

_RAW_INPUT_CONTENTS = 7 << 3 | 2  # the tag of ``repeated bytes raw_input_contents = 7``


class _Request:
    """A parsed ``ModelInferRequest`` with its ``raw_input_contents`` and ``id`` read out (every
    other field is the upb message's). ``shape_key`` is the message without those two,
    serialized: requests with the same key differ in nothing else (``None`` when not made)."""

    __slots__ = ("_message", "id", "raw_input_contents", "shape_key")

    def __init__(
        self, message: Any, raw: list[Any], request_id: str, shape_key: bytes | None
    ) -> None:
        self._message = message
        self.raw_input_contents = raw
        self.id = request_id
        self.shape_key = shape_key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._message, name)


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]  # IndexError: cut short
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _split(data: memoryview) -> tuple[bytes, list[memoryview]] | None:
    """The message's bytes without its raw input contents, and those as views; ``None`` for
    anything but well-formed top-level fields (the protobuf runtime then reads it all)."""
    rest: list[memoryview] = []
    raw: list[memoryview] = []
    pos, end, kept = 0, len(data), 0
    try:
        while pos < end:
            start = pos
            tag, pos = _varint(data, pos)
            kind = tag & 7
            if kind == 2:
                length, pos = _varint(data, pos)
                pos += length
            elif kind == 0:
                _, pos = _varint(data, pos)
            elif kind == 1:
                pos += 8
            elif kind == 5:
                pos += 4
            else:
                return None  # groups: not in this message; let the runtime judge
            if pos > end:
                return None
            if tag == _RAW_INPUT_CONTENTS:
                if kept < start:
                    rest.append(data[kept:start])
                raw.append(data[pos - length : pos])
                kept = pos
    except (IndexError, ValueError):
        return None
    rest.append(data[kept:])
    return b"".join(rest), raw


class InferRequestReader:
    """Parses ``ModelInferRequest`` messages for the inference rpcs.

    A small one is parsed by the upb class, then its raw input contents and id are taken out
    and the rest serialized again as its ``shape_key``: a client repeats the same request with
    other data, and :class:`._tensors.TensorCodec` keeps what such a request decoded to by
    that key. A large one (:data:`LARGE_REQUEST`) keeps its ``raw_input_contents`` as views
    of the received bytes, so an input's data reaches its tensor without a copy (the upb class
    would copy each one into a new ``bytes`` when read)."""

    @staticmethod
    def FromString(data: bytes | memoryview) -> Any:  # noqa: N802 - the protobuf runtime's name
        if len(data) < LARGE_REQUEST:
            message = InferRequestPb.FromString(data)
            raw = list(message.raw_input_contents)
            request_id = message.id
            if raw:
                message.ClearField("raw_input_contents")
            if request_id:
                message.ClearField("id")
            return _Request(message, raw, request_id, message.SerializeToString())
        view = memoryview(data)
        split = _split(view)
        if split is None or not split[1]:
            message = InferRequestPb.FromString(data)
            return _Request(message, list(message.raw_input_contents), message.id, None)
        rest, raw = split
        message = InferRequestPb.FromString(rest)
        return _Request(message, raw, message.id, None)

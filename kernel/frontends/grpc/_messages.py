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

__all__ = ["InferRequestPb", "InferResponsePb", "StreamInferResponsePb", "StrictRequest"]

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

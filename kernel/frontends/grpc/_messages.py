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

__all__ = ["InferRequestPb", "InferResponsePb", "StreamInferResponsePb"]

InferRequestPb: Any = message_factory.GetMessageClass(ModelInferRequest.DESCRIPTOR)
InferResponsePb: Any = message_factory.GetMessageClass(ModelInferResponse.DESCRIPTOR)
StreamInferResponsePb: Any = message_factory.GetMessageClass(ModelStreamInferResponse.DESCRIPTOR)

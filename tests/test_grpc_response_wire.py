"""The hand-written ``ModelInferResponse`` (``kernel.frontends.grpc._response_wire``) is byte for
byte what the protobuf runtime serializes for the same message, behind gRPC's message prefix."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from kernel.frontends.grpc._messages import InferResponsePb
from kernel.frontends.grpc._response_wire import ResponseWire
from kernel.tensors import array_to_bytes, datatype_of

_CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("add_sub", "1", "", {"OUTPUT0": np.arange(4, dtype=np.float32)}),
    ("m", "12", "request-7", {"A": np.zeros((2, 3), dtype=np.int64), "B": np.array(3.5)}),
    ("módel", "1", "ïd", {"é": np.ones((1, 300, 2), dtype=np.uint8)}),
    ("m", "", "", {"EMPTY": np.zeros((0, 4), dtype=np.float16), "BOOL": np.array([True])}),
    ("m", "3", "x" * 200, {"S": np.array([b"a", b"", b"xyz" * 100], dtype=np.object_)}),
    ("big", "1", "", {"L": np.arange(3 * 128 * 128, dtype=np.float32).reshape(3, 128, 128)}),
    ("m", "1", "", {}),
]


def _runtime(model: str, version: str, rid: str, outputs: dict[str, Any]) -> bytes:
    message = InferResponsePb(model_name=model, model_version=version, id=rid)
    for name, array in outputs.items():
        message.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
        data = array_to_bytes(array)
        message.raw_output_contents.append(data if isinstance(data, bytes) else data.tobytes())
    body: bytes = message.SerializeToString()
    return struct.pack(">BL", 0, len(body)) + body


@pytest.mark.parametrize("case", _CASES, ids=lambda case: case[0] + "-" + ",".join(case[3]))
def test_same_bytes_as_the_protobuf_runtime(case: tuple[str, str, str, dict[str, Any]]) -> None:
    model, version, rid, outputs = case
    wire = ResponseWire()
    items = [(n, datatype_of(a), a.shape, array_to_bytes(a)) for n, a in outputs.items()]
    expected = _runtime(model, version, rid, outputs)
    assert wire.framed(model, version, rid, items) == expected
    assert wire.framed(model, version, rid, items) == expected  # from the cached heads


def test_the_caches_stay_bounded() -> None:
    wire = ResponseWire()
    for n in range(2000):
        shape = (n,) if n % 2 else (1,)
        data = array_to_bytes(np.zeros(shape, dtype=np.int32))
        framed = wire.framed(f"m{n}", "1", "", [(f"o{n}", "INT32", shape, data)])
        assert framed == _runtime(f"m{n}", "1", "", {f"o{n}": np.zeros(shape, dtype=np.int32)})
    assert len(wire._heads) <= 512 and len(wire._tensors) <= 512

"""The hand-written ``ModelInferResponse`` (``kernel.frontends._grpc._response_wire``) is byte for
byte what the protobuf runtime serializes for the same message, behind gRPC's message prefix."""

from __future__ import annotations

import struct
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from kernel._inference import InferenceRequest, InferenceResponse
from kernel.frontends._grpc._messages import InferResponsePb
from kernel.frontends._grpc._response_wire import ResponseWire
from kernel.frontends._grpc._tensors import DecodedRequest, TensorCodec
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


def _data(array: Any) -> tuple[Any, int]:
    data = array_to_bytes(array)
    return data, len(data) if isinstance(data, bytes) else data.nbytes


@pytest.mark.parametrize("case", _CASES, ids=lambda case: case[0] + "-" + ",".join(case[3]))
def test_same_bytes_as_the_protobuf_runtime(case: tuple[str, str, str, dict[str, Any]]) -> None:
    model, version, rid, outputs = case
    wire = ResponseWire()
    items = [(n, datatype_of(a), a.shape, *_data(a)) for n, a in outputs.items()]
    expected = _runtime(model, version, rid, outputs)
    assert wire.framed(model, version, rid, items) == expected
    assert wire.framed(model, version, rid, items) == expected  # from the cached heads


def test_the_caches_stay_bounded() -> None:
    wire = ResponseWire()
    for n in range(2000):
        shape = (n,) if n % 2 else (1,)
        array = np.zeros(shape, dtype=np.int32)
        framed = wire.framed(f"m{n}", "1", "", [(f"o{n}", "INT32", shape, array, array.nbytes)])
        assert framed == _runtime(f"m{n}", "1", "", {f"o{n}": np.zeros(shape, dtype=np.int32)})
    assert len(wire._heads) <= 512 and len(wire._tensors) <= 512


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3).T,  # not contiguous
        np.arange(4, dtype=">f4"),  # big-endian
        np.arange(4).astype(ml_dtypes.bfloat16),
        np.array([b"ab", b"", b"c" * 300], dtype=np.object_),
        np.array(7, dtype=np.int16),
        np.zeros((2, 0), dtype=np.uint8),
    ],
    ids=["transposed", "big-endian", "bf16", "bytes", "scalar", "empty"],
)
def test_the_codec_writes_what_the_runtime_path_serializes(array: Any) -> None:
    codec = TensorCodec(None)  # type: ignore[arg-type]
    request = InferenceRequest("m", {}, model_version=3, id="rid")
    decoded = DecodedRequest(request, None, None, False)  # type: ignore[arg-type]
    response = InferenceResponse(outputs={"OUT": array, "OTHER": np.ones(3, dtype=np.int8)})
    body = codec.encode(decoded, response).SerializeToString()
    assert codec.encode_framed(decoded, response) == struct.pack(">BL", 0, len(body)) + body
    assert codec.encode_framed(decoded, InferenceResponse(parameters={"p": 1})) is None

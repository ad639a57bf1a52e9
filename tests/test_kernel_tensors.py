"""Datatypes, dtypes and the wire encodings of tensors."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from kernel import DATATYPES, KernelError, datatype_of, datatype_to_dtype
from kernel.tensors import (
    array_from_bytes,
    array_to_bytes,
    config_type_to_datatype,
    datatype_to_config_type,
    deserialize_bytes_tensor,
    element_count,
    serialize_bytes_tensor,
)

FIXED = [d for d in DATATYPES if d != "BYTES"]


def test_every_triton_datatype_has_a_dtype() -> None:
    assert DATATYPES == (
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
        "FP16", "FP32", "FP64", "BYTES", "BF16",
    )  # fmt: skip
    assert datatype_to_dtype("BF16") == np.dtype(ml_dtypes.bfloat16)
    assert datatype_to_dtype("BYTES") == np.dtype(object)
    with pytest.raises(KernelError, match="invalid datatype 'FP8'"):
        datatype_to_dtype("FP8")


@pytest.mark.parametrize("datatype", FIXED)
def test_fixed_size_round_trip_is_zero_copy(datatype: str) -> None:
    array = np.arange(6).astype(datatype_to_dtype(datatype)).reshape(2, 3)
    assert datatype_of(array) == datatype
    wire = bytes(array_to_bytes(array))
    back = array_from_bytes(datatype, [2, 3], wire)
    np.testing.assert_array_equal(back, array)
    assert not back.flags.writeable  # a view of the wire bytes, never copied
    assert back.base is not None


def test_bytes_tensor_round_trip() -> None:
    array = np.array([[b"a", b""], [b"\x00\xff", "naïve".encode()]], dtype=object)
    wire = serialize_bytes_tensor(array)
    assert wire[:5] == b"\x01\x00\x00\x00a"
    back = array_from_bytes("BYTES", [2, 2], wire)
    assert back.tolist() == array.tolist()
    assert datatype_of(np.array(["x"])) == "BYTES"


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x05\x00\x00\x00ab", "runs past the end"),
        (b"\x01\x00", "inside an item's length prefix"),
        (b"\x01\x00\x00\x00a", "holds 1 elements, its shape says 2"),
    ],
)
def test_malformed_bytes_tensors_are_refused(wire: bytes, message: str) -> None:
    with pytest.raises(KernelError, match=message):
        deserialize_bytes_tensor(wire, 2)


def test_byte_size_must_match_shape() -> None:
    with pytest.raises(KernelError, match="unexpected total byte size 12"):
        array_from_bytes("FP32", [4], b"\x00" * 12)


def test_element_count_refuses_overflow_and_negative_dims() -> None:
    assert element_count([2, 3, 4]) == 24
    with pytest.raises(KernelError, match="more elements than int64"):
        element_count([2**40, 2**40])
    with pytest.raises(KernelError, match="negative dimension"):
        element_count([-1, 3])


def test_config_type_names() -> None:
    assert config_type_to_datatype("TYPE_STRING") == "BYTES"
    assert config_type_to_datatype("TYPE_FP32") == "FP32"
    assert datatype_to_config_type("BYTES") == "TYPE_STRING"
    assert datatype_to_config_type("BF16") == "TYPE_BF16"


def test_non_contiguous_and_big_endian_arrays_encode_correctly() -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]
    assert bytes(array_to_bytes(array)) == np.ascontiguousarray(array).tobytes()
    big = np.arange(3, dtype=">i4")
    assert bytes(array_to_bytes(big)) == np.arange(3, dtype="<i4").tobytes()

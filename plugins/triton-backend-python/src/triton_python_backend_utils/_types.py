"""Triton datatypes as the Python backend names them: config strings, enum numbers, numpy types.

``TYPE_*`` strings are the config's ``data_type`` names; the numbers are the ``DataType`` enum
values that ``Tensor.triton_dtype()`` returns. BYTES tensors are numpy ``object`` arrays whose
items are ``bytes``; on the wire each item is a 4-byte little-endian length and its bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "TRITON_STRING_TO_NUMPY",
    "deserialize_bytes_tensor",
    "numpy_to_triton_type",
    "serialize_byte_tensor",
    "triton_string_to_numpy",
    "triton_to_numpy_type",
]

TRITON_STRING_TO_NUMPY: dict[str, type[Any]] = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}
"""Config ``data_type`` name -> numpy scalar type (``TYPE_STRING`` is ``np.object_``)."""

# DataType enum number -> numpy type, in the enum's order (TYPE_BOOL = 1 ... TYPE_STRING = 13).
_NUMBER_TO_NUMPY: dict[int, type[Any]] = {
    1: np.bool_,
    2: np.uint8,
    3: np.uint16,
    4: np.uint32,
    5: np.uint64,
    6: np.int8,
    7: np.int16,
    8: np.int32,
    9: np.int64,
    10: np.float16,
    11: np.float32,
    12: np.float64,
    13: np.object_,
}
_DTYPE_TO_NUMBER: dict[np.dtype[Any], int] = {np.dtype(t): n for n, t in _NUMBER_TO_NUMPY.items()}


def triton_string_to_numpy(triton_type_string: str) -> type[Any]:
    """The numpy type of a config ``data_type`` name (``"TYPE_FP32"`` -> ``np.float32``).

    :raises KeyError: for a name that has no numpy type.
    """
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def triton_to_numpy_type(data_type: int) -> type[Any] | None:
    """The numpy type of a ``DataType`` enum number, or None for one without a numpy type."""
    return _NUMBER_TO_NUMPY.get(data_type)


def numpy_to_triton_type(data_type: Any) -> int | None:
    """The ``DataType`` enum number of a numpy dtype or type (``bytes_`` and ``str_`` are
    TYPE_STRING), or None when Triton has no such datatype."""
    try:
        dtype = np.dtype(data_type)
    except TypeError:
        return None
    if dtype.kind in "SU":
        return 13
    return _DTYPE_TO_NUMBER.get(dtype)


def serialize_byte_tensor(input_tensor: npt.NDArray[Any]) -> bytes | None:
    """Encode a BYTES tensor (C order) as length-prefixed items; None for other dtypes.

    ``bytes`` items are kept as they are; any other item is ``str(item)`` encoded as UTF-8.
    """
    if input_tensor.dtype != np.object_ and input_tensor.dtype.type != np.bytes_:
        return None
    pack = struct.Struct("<I").pack
    parts: list[bytes] = []
    for item in input_tensor.reshape(-1, order="C"):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(encoded_tensor: bytes | bytearray | memoryview) -> npt.NDArray[Any]:
    """Decode length-prefixed items into a 1-D ``object`` array of ``bytes``."""
    view = memoryview(encoded_tensor).cast("B")
    unpack = struct.Struct("<I").unpack_from
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        (length,) = unpack(view, offset)
        offset += 4
        items.append(bytes(view[offset : offset + length]))
        offset += length
    out = np.empty(len(items), dtype=np.object_)
    out[:] = items
    return out

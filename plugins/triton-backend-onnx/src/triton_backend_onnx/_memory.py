"""How much memory an ONNX model's weights take: its initializers, read from the file.

ONNX Runtime's Python API tells nothing about a session's memory (no allocator statistics), so
the backend reports what every session of the model holds for sure: the main graph's
initializers (``GraphProto.initializer``), each ``product(dims) x element size`` bytes (strings:
the bytes of their values), external data included (its size follows from the dims). Activation
arenas, which grow with the batches run, and initializers of subgraphs (``If``/``Loop`` bodies)
are not counted.

The file is walked in the protobuf wire format (``ModelProto.graph`` = field 7,
``GraphProto.initializer`` = 5, ``TensorProto.dims`` = 1, ``data_type`` = 2, ``string_data`` =
6), memory-mapped, so the ``onnx`` package is not needed and tensor data is skipped, not copied.
"""

from __future__ import annotations

import mmap
from pathlib import Path

__all__ = ["initializer_bytes"]

# TensorProto.DataType -> bits per element (strings, 8, are counted by their values).
_BITS = {
    1: 32,  # FLOAT
    2: 8,  # UINT8
    3: 8,  # INT8
    4: 16,  # UINT16
    5: 16,  # INT16
    6: 32,  # INT32
    7: 64,  # INT64
    9: 8,  # BOOL
    10: 16,  # FLOAT16
    11: 64,  # DOUBLE
    12: 32,  # UINT32
    13: 64,  # UINT64
    14: 64,  # COMPLEX64
    15: 128,  # COMPLEX128
    16: 16,  # BFLOAT16
    17: 8,  # FLOAT8E4M3FN
    18: 8,  # FLOAT8E4M3FNUZ
    19: 8,  # FLOAT8E5M2
    20: 8,  # FLOAT8E5M2FNUZ
    21: 4,  # UINT4
    22: 4,  # INT4
    23: 4,  # FLOAT4E2M1
}
_STRING = 8


class _MalformedError(ValueError):
    pass


def _varint(data: memoryview | bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _MalformedError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: memoryview, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """``(field number, wire type, value or start, end)`` of each field in ``data[start:end]``;
    for length-delimited fields the value is the start of the bytes."""
    out: list[tuple[int, int, int, int]] = []
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, wire, value, pos))
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise _MalformedError("field runs past its message")
            out.append((number, wire, pos, pos + length))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise _MalformedError(f"wire type {wire}")
    if pos != end:
        raise _MalformedError("message runs past its end")
    return out


def _tensor_bytes(data: memoryview, start: int, end: int) -> int:
    dims: list[int] = []
    data_type = 0
    strings = 0
    for number, wire, value, stop in _fields(data, start, end):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1 and wire == 2:  # packed dims
            pos = value
            while pos < stop:
                dim, pos = _varint(data, pos)
                dims.append(dim)
        elif number == 2 and wire == 0:
            data_type = value
        elif number == 6 and wire == 2:
            strings += stop - value
    if data_type == _STRING:
        return strings
    count = 1
    for dim in dims:
        count *= dim if dim < 2**63 else 0  # a negative int64 is no size
    return count * _BITS.get(data_type, 0) // 8


def initializer_bytes(path: Path) -> int:
    """The bytes of the main graph's initializers of the ONNX file ``path``.

    :raises ValueError: the file is not an ONNX model (a malformed protobuf).
    """
    with path.open("rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise ValueError(f"'{path}' is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            data = memoryview(mapped)
            try:
                total = 0
                for number, wire, start, end in _fields(data, 0, len(data)):
                    if number != 7 or wire != 2:
                        continue
                    for inner, inner_wire, t_start, t_end in _fields(data, start, end):
                        if inner == 5 and inner_wire == 2:
                            total += _tensor_bytes(data, t_start, t_end)
                return total
            finally:
                data.release()

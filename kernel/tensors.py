"""Triton datatypes and numpy arrays: names, dtypes, sizes and the BYTES wire encoding.

Tensors travel through the kernel as numpy arrays. Every Triton datatype has one numpy dtype:
BF16 is ``ml_dtypes.bfloat16`` and BYTES is an ``object`` array whose items are ``bytes``.
On the wire a BYTES tensor is a sequence of items, each a 4-byte little-endian length followed by
the item's bytes; every other datatype is the array's little-endian memory as is.
"""

from __future__ import annotations

import struct
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt

from kernel._errors import KernelError, Status

__all__ = [
    "DATATYPES",
    "array_from_bytes",
    "array_to_bytes",
    "config_type_to_datatype",
    "datatype_of",
    "datatype_to_config_type",
    "datatype_to_dtype",
    "deserialize_bytes_tensor",
    "element_count",
    "element_size",
    "serialize_bytes_tensor",
]

# Wire name -> numpy dtype. The order is Triton's DataType enum order (TYPE_BOOL = 1 ...).
_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}

DATATYPES: tuple[str, ...] = tuple(_DTYPES)
"""Every Triton wire datatype name, in the order of the config's ``DataType`` enum."""

_BY_DTYPE: dict[np.dtype[Any], str] = {
    dtype: name for name, dtype in _DTYPES.items() if dtype.kind not in "OSU"
}
_BY_KIND: dict[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): name for name, dt in _DTYPES.items() if name not in ("BYTES", "BF16")
}


def datatype_to_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a wire datatype name (``"FP32"`` -> ``float32``).

    :raises KernelError: ``INVALID_ARG`` for a name Triton does not define.
    """
    try:
        return _DTYPES[datatype]
    except KeyError:
        raise KernelError(Status.INVALID_ARG, f"invalid datatype '{datatype}'") from None


def datatype_of(array: npt.NDArray[Any]) -> str:
    """The wire datatype name of a numpy array (``str``/``bytes``/object arrays are BYTES).

    :raises KernelError: ``INVALID_ARG`` for a dtype no Triton datatype carries.
    """
    dt = array.dtype
    name = _BY_DTYPE.get(dt)  # the usual dtypes, native byte order
    if name is not None:
        return name
    if dt == _DTYPES["BF16"]:
        return "BF16"
    if dt.kind in "OSU":
        return "BYTES"
    name = _BY_KIND.get((dt.kind, dt.itemsize))
    if name is None:
        raise KernelError(Status.INVALID_ARG, f"numpy dtype {dt} has no Triton datatype")
    return name


def config_type_to_datatype(config_type: str) -> str:
    """``"TYPE_FP32"`` -> ``"FP32"``; ``"TYPE_STRING"`` -> ``"BYTES"``."""
    name = config_type.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def datatype_to_config_type(datatype: str) -> str:
    """``"FP32"`` -> ``"TYPE_FP32"``; ``"BYTES"`` -> ``"TYPE_STRING"``."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def element_size(datatype: str) -> int:
    """Bytes per element of a fixed-size datatype; 0 for BYTES."""
    return 0 if datatype == "BYTES" else datatype_to_dtype(datatype).itemsize


def element_count(shape: tuple[int, ...] | list[int]) -> int:
    """The number of elements of a shape, refusing negative dims and counts past int64.

    :raises KernelError: ``INVALID_ARG`` for a negative dimension or an overflowing count.
    """
    count = 1
    for dim in shape:
        if dim < 0:
            raise KernelError(
                Status.INVALID_ARG, f"invalid shape {list(shape)}: negative dimension"
            )
        count *= dim
        if count > 2**63 - 1:
            raise KernelError(
                Status.INVALID_ARG, f"shape {list(shape)} has more elements than int64 can count"
            )
    return count


def serialize_bytes_tensor(array: npt.NDArray[Any]) -> bytes:
    """Encode a BYTES tensor (C order) as length-prefixed items."""
    parts: list[bytes] = []
    pack = struct.Struct("<I").pack
    for item in array.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(
    buffer: bytes | bytearray | memoryview,
    count: int | None = None,
    *,
    input_name: str = "",
    model_name: str = "",
    request_id: str = "",
) -> list[bytes]:
    """Decode length-prefixed items; ``count`` (when given) must match the items found.

    With ``input_name`` (and ``model_name``, ``request_id``) a truncated buffer is reported in
    Triton's words for a request input, which clients may match on.

    :raises KernelError: ``INVALID_ARG`` when a length runs past the buffer or the count differs.
    """
    view = memoryview(buffer).cast("B")
    items: list[bytes] = []
    offset, end = 0, len(view)
    unpack = struct.Struct("<I").unpack_from
    while offset < end:
        if offset + 4 > end:
            if input_name:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"[request id: {request_id or '<id_unknown>'}] incomplete string length"
                    f" indicator for inference input '{input_name}' for model '{model_name}',"
                    f" expecting 4 bytes but only {end - offset} bytes available. Please make"
                    " sure the string length indicator is in one buffer.",
                )
            raise KernelError(
                Status.INVALID_ARG, "BYTES tensor ends inside an item's length prefix"
            )
        (length,) = unpack(view, offset)
        offset += 4
        if offset + length > end:
            if input_name:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"incomplete string data for inference input '{input_name}', expecting"
                    f" string of length {length} but only {end - offset} bytes available",
                )
            raise KernelError(
                Status.INVALID_ARG,
                f"BYTES tensor item of {length} bytes runs past the end of the tensor data",
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if count is not None and len(items) != count:
        raise KernelError(
            Status.INVALID_ARG,
            f"BYTES tensor holds {len(items)} elements, its shape says {count}",
        )
    return items


def array_from_bytes(
    datatype: str, shape: tuple[int, ...] | list[int], buffer: bytes | bytearray | memoryview
) -> npt.NDArray[Any]:
    """A numpy array over ``buffer`` (no copy for fixed-size types; read-only for ``bytes``).

    :raises KernelError: ``INVALID_ARG`` when the byte size disagrees with datatype and shape.
    """
    shape = tuple(shape)
    count = element_count(shape)
    if datatype == "BYTES":
        out = np.empty(count, dtype=np.object_)
        out[:] = deserialize_bytes_tensor(buffer, count)
        return out.reshape(shape)
    dtype = datatype_to_dtype(datatype)
    expected = count * dtype.itemsize
    size = memoryview(buffer).nbytes
    if size != expected:
        raise KernelError(
            Status.INVALID_ARG,
            f"unexpected total byte size {size} for {datatype} tensor of shape {list(shape)},"
            f" expecting {expected}",
        )
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


def array_to_bytes(array: npt.NDArray[Any]) -> bytes | memoryview:
    """The wire bytes of an array: a view of its memory when it is C-contiguous, else a copy."""
    if array.dtype.kind in "OSU":
        return serialize_bytes_tensor(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    flat: Any = array.reshape(-1).view(np.uint8)
    return memoryview(flat)

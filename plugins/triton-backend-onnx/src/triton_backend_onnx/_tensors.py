"""ONNX Runtime's tensor types and shapes in Triton's terms, and string tensors at the edge.

ONNX Runtime's Python API names element types as strings (``"tensor(float)"``) and reports dims
as ints, symbolic names or ``None``. Triton's configs speak ``TYPE_FP32`` and ``-1``. String
tensors differ too: the kernel carries BYTES as object arrays of ``bytes``, while ONNX Runtime
takes and returns object arrays of ``str`` (a ``bytes`` item would be fed as its ``repr``), so
they are converted here, once per batch, in each direction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from kernel import KernelError, Status
from kernel.signature import TensorSignature

ORT_TO_CONFIG_TYPE: dict[str, str] = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(string)": "TYPE_STRING",
    "tensor(bfloat16)": "TYPE_BF16",
}
"""ONNX Runtime's element type names -> Triton config data types (Triton's mapping)."""


def tensor_signature(node: Any) -> TensorSignature:
    """The :class:`~kernel.signature.TensorSignature` of an ``onnxruntime.NodeArg``: every
    unknown or symbolic dim as ``-1``, dims ``None`` when the rank is unknown."""
    shape = node.shape
    dims = (
        None if shape is None else tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)
    )
    return TensorSignature(
        name=node.name,
        config_type=ORT_TO_CONFIG_TYPE.get(node.type),
        dims=dims,
        framework_type=node.type,
    )


def bytes_to_str(array: npt.NDArray[Any], name: str) -> npt.NDArray[Any]:
    """An object array of ``str`` for ONNX Runtime from the kernel's BYTES array.

    :raises KernelError: ``INVALID_ARG`` when an element is not UTF-8 (ONNX Runtime's Python
        API only carries text strings).
    """
    out = np.empty(array.shape, dtype=np.object_)
    flat_out = out.reshape(-1)
    try:
        for index, item in enumerate(array.reshape(-1)):
            flat_out[index] = item.decode() if isinstance(item, bytes | bytearray) else str(item)
    except UnicodeDecodeError as exc:
        raise KernelError(
            Status.INVALID_ARG,
            f"input '{name}' holds an element that is not UTF-8 ({exc.reason}); ONNX Runtime"
            " string tensors carry UTF-8 text only",
        ) from None
    return out


def str_to_bytes(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The kernel's BYTES array (object array of ``bytes``) from ONNX Runtime's ``str`` one."""
    out = np.empty(array.shape, dtype=np.object_)
    flat_out = out.reshape(-1)
    for index, item in enumerate(array.reshape(-1)):
        flat_out[index] = item.encode() if isinstance(item, str) else bytes(item)
    return out

"""OpenVINO's element types and shapes in Triton's terms, and input tensors that share memory.

OpenVINO names element types ``f32``, ``i64``, ``boolean``...; Triton's configs speak
``TYPE_FP32`` and write a dynamic dimension as ``-1``. Input arrays reach OpenVINO as tensors
over the same memory (:func:`shared_tensor`), so a request's bytes are not copied on their way in.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino as ov  # type: ignore[import-untyped, unused-ignore]

from kernel.signature import TensorSignature

# OpenVINO's Python binding makes numpy's C API table on its first dtype conversion, inside a
# one-time guard that waits for the GIL while another thread holding the GIL waits on the guard:
# two instances initializing in parallel (`Type.to_dtype()` in two worker threads) then hang the
# server's loading forever (6 of 20 runs of eight threads here). Doing that first conversion
# now, while this package is imported (one thread, under the import lock), means no later call
# ever enters the guard.
ov.Type.f32.to_dtype()

OV_TO_CONFIG_TYPE: dict[str, str] = {
    "boolean": "TYPE_BOOL",
    "u8": "TYPE_UINT8",
    "u16": "TYPE_UINT16",
    "u32": "TYPE_UINT32",
    "u64": "TYPE_UINT64",
    "i8": "TYPE_INT8",
    "i16": "TYPE_INT16",
    "i32": "TYPE_INT32",
    "i64": "TYPE_INT64",
    "f16": "TYPE_FP16",
    "f32": "TYPE_FP32",
    "f64": "TYPE_FP64",
}
"""OpenVINO element type names -> Triton config data types (the numeric types numpy carries)."""

CONFIG_TO_OV_TYPE: dict[str, ov.Type] = {
    config: getattr(ov.Type, name) for name, config in OV_TO_CONFIG_TYPE.items()
}
"""Triton config data types -> OpenVINO element types, for the tensor side of pre/postprocessing."""


def tensor_signature(port: Any) -> TensorSignature:
    """The :class:`~kernel.signature.TensorSignature` of an ``ov.Output`` (a model's input or
    output port): named as Triton reports it (``get_any_name``), answering to every name the
    port carries, each dynamic dim as ``-1``, dims ``None`` when the rank is dynamic."""
    shape = port.get_partial_shape()
    dims = (
        None
        if shape.rank.is_dynamic
        else tuple(d.get_length() if d.is_static else -1 for d in shape)
    )
    element = port.get_element_type().get_type_name()
    return TensorSignature(
        name=port.get_any_name(),
        config_type=OV_TO_CONFIG_TYPE.get(element),
        dims=dims,
        framework_type=element,
        aliases=frozenset(port.get_names()),
    )


def has_batch_layout(port: Any) -> bool:
    """Whether the port's layout names a batch dimension (``N``): Triton's test for batching."""
    return bool(ov.layout_helpers.has_batch(ov.layout_helpers.get_layout(port)))


def shared_tensor(array: npt.NDArray[Any]) -> ov.Tensor:
    """An ``ov.Tensor`` over ``array``'s own memory (one copy only if it is not contiguous).

    The kernel's input arrays are often read-only views of the request's bytes, and OpenVINO
    refuses to share read-only memory (it would copy them) although it only ever reads an
    input. Such an array is shared through a writable alias of the same bytes; the caller keeps
    the original array alive until the inference that reads it has finished.
    """
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    if not array.flags.writeable:
        raw = (ctypes.c_byte * array.nbytes).from_address(array.ctypes.data)
        array = np.ctypeslib.as_array(raw).view(array.dtype).reshape(array.shape)
    return ov.Tensor(array, shared_memory=True)

"""Tensors across the numpy/torch border, and torch's element types in Triton's terms.

Inputs become tensors over the request's own memory through DLPack: unlike
``torch.from_numpy``, it accepts the read-only arrays the frontends decode from the wire without
a warning and without a copy. Outputs become arrays over the tensor's memory
(``Tensor.numpy()``), which the array keeps alive. BF16 crosses as its 16-bit pattern (neither
DLPack nor ``Tensor.numpy()`` carries it). TYPE_STRING tensors cross as Python lists of ``str``,
as Triton's PyTorch backend hands them to TorchScript (``List[str]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.dlpack import from_dlpack

from kernel import KernelError, Status, datatype_to_dtype

TORCH_TO_CONFIG_TYPE: dict[torch.dtype, str] = {
    torch.bool: "TYPE_BOOL",
    torch.uint8: "TYPE_UINT8",
    torch.uint16: "TYPE_UINT16",
    torch.uint32: "TYPE_UINT32",
    torch.uint64: "TYPE_UINT64",
    torch.int8: "TYPE_INT8",
    torch.int16: "TYPE_INT16",
    torch.int32: "TYPE_INT32",
    torch.int64: "TYPE_INT64",
    torch.float16: "TYPE_FP16",
    torch.float32: "TYPE_FP32",
    torch.float64: "TYPE_FP64",
    torch.bfloat16: "TYPE_BF16",
}
"""torch element types -> Triton config data types (TYPE_STRING is a ``List[str]``)."""

_BF16 = datatype_to_dtype("BF16")

Value = torch.Tensor | list[str]
"""What a model takes or gives for one Triton tensor."""


def to_torch(array: npt.NDArray[Any], name: str, *, copy: bool = False) -> Value:
    """A tensor sharing ``array``'s memory (a private copy when ``copy`` or when the array is
    not aligned), or a list of ``str`` for a BYTES array.

    :raises KernelError: ``INVALID_ARG`` when a BYTES element is not UTF-8 text.
    """
    if array.dtype.kind == "O":
        try:
            return [item.decode() if isinstance(item, bytes) else str(item) for item in array.flat]
        except UnicodeDecodeError as exc:
            raise KernelError(
                Status.INVALID_ARG,
                f"input '{name}' holds an element that is not UTF-8 ({exc.reason}); PyTorch"
                " models take TYPE_STRING tensors as lists of text strings",
            ) from None
    if copy or not array.flags.aligned:
        # Torch's vectorized kernels may assume element alignment, which wire bytes lack.
        array = np.array(array)
    if array.dtype == _BF16:
        return from_dlpack(array.view(np.uint16)).view(torch.bfloat16)
    return from_dlpack(array)


def to_numpy(value: Any, name: str) -> npt.NDArray[Any]:
    """The array of one model output: the tensor's memory (copied off a GPU), or an object
    array of ``bytes`` for a list of strings.

    :raises KernelError: ``INTERNAL`` for any other kind of value.
    """
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.uint16).numpy().view(_BF16)
        if tensor.dtype not in TORCH_TO_CONFIG_TYPE:
            raise KernelError(
                Status.INVALID_ARG,
                f"output '{name}' has the torch type {tensor.dtype}, which no Triton datatype"
                " carries",
            )
        return tensor.numpy()
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        out = np.empty(len(value), dtype=np.object_)
        out[:] = [item.encode() for item in value]
        return out
    raise KernelError(
        Status.INTERNAL,
        f"output '{name}' is a {type(value).__name__}; a model output must be a tensor or a"
        " list of strings",
    )


def config_type_of(tensor: torch.Tensor) -> str | None:
    """``"TYPE_FP32"`` for a float32 tensor; ``None`` when Triton has no datatype for it."""
    return TORCH_TO_CONFIG_TYPE.get(tensor.dtype)

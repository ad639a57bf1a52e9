"""``Tensor``: a named numpy array, the unit of every input and output."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from triton_python_backend_utils._bfloat16 import export_bfloat16, import_bfloat16, is_bfloat16
from triton_python_backend_utils._errors import TritonModelException
from triton_python_backend_utils._types import numpy_to_triton_type

__all__ = ["Tensor", "capsule_source"]

_CPU_DEVICE = (1, 0)  # DLPack's (kDLCPU, device 0)
_TYPE_BF16 = 14


class _Capsule:
    """Gives a bare DLPack capsule the ``__dlpack__`` protocol numpy's ``from_dlpack`` wants."""

    __slots__ = ("_capsule",)

    def __init__(self, capsule: object) -> None:
        self._capsule = capsule

    def __dlpack__(self, **_: Any) -> object:
        return self._capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return _CPU_DEVICE


def capsule_source(capsule: object) -> Any:
    """A bare DLPack capsule as something ``np.from_dlpack`` takes."""
    return _Capsule(capsule)


class Tensor:
    """A named tensor held as a numpy array (always in CPU memory here).

    Inputs handed to ``execute`` may be backed by read-only request memory; ``as_numpy`` then
    returns a private writable copy (made once), so models that modify inputs in place work.
    """

    __slots__ = ("_array", "_name")

    def __init__(self, name: str, data: Any) -> None:
        array = data if isinstance(data, np.ndarray) else np.asarray(data)
        kind = array.dtype.kind
        if kind == "U":
            array = array.astype(np.object_)
        elif (kind in "VMmc" and not is_bfloat16(array)) or (
            kind == "O" and array.dtype != np.object_
        ):
            raise TritonModelException(
                f"Tensor dtype {array.dtype} used for numpy_array is not supported by the Python"
                " backend; use np.object_ for strings"
            )
        self._name = str(name)
        self._array: npt.NDArray[Any] = array

    @classmethod
    def _wrap(cls, name: str, array: npt.NDArray[Any]) -> Tensor:
        """A tensor over an array known to be valid (no checks: the per-request fast path)."""
        tensor = cls.__new__(cls)
        tensor._name = name
        tensor._array = array
        return tensor

    def name(self) -> str:
        """The tensor's name."""
        return self._name

    def as_numpy(self) -> npt.NDArray[Any]:
        """The data as a numpy array (BYTES tensors are ``object`` arrays of ``bytes``)."""
        array = self._array
        if not array.flags.writeable:
            array = self._array = np.array(array)
        return array

    def triton_dtype(self) -> int | None:
        """The ``DataType`` enum number (``TYPE_FP32`` is 11, ``TYPE_BF16`` 14)."""
        if is_bfloat16(self._array):
            return _TYPE_BF16
        return numpy_to_triton_type(self._array.dtype)

    def shape(self) -> list[int]:
        """The tensor's dimensions."""
        return list(self._array.shape)

    def is_cpu(self) -> bool:
        """Whether the data is in CPU memory (always, in this backend)."""
        return True

    def to_dlpack(self) -> object:
        """A DLPack capsule sharing the tensor's memory (``torch.from_dlpack`` takes it).

        :raises TritonModelException: for BYTES tensors, which DLPack cannot describe.
        """
        array = self.as_numpy()
        if array.dtype == np.object_:
            raise TritonModelException("BYTES tensors cannot be exported with DLPack")
        if not array.flags.c_contiguous:
            array = self._array = np.ascontiguousarray(array)
        if is_bfloat16(array):
            return export_bfloat16(array)
        return array.__dlpack__()

    def __dlpack__(self, **kwargs: Any) -> object:
        array = self.as_numpy()
        if array.dtype == np.object_:
            raise TritonModelException("BYTES tensors cannot be exported with DLPack")
        if is_bfloat16(array):
            return export_bfloat16(array, **kwargs)
        return array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return _CPU_DEVICE

    @staticmethod
    def from_dlpack(name: str, dlpack: object) -> Tensor:
        """A tensor from a DLPack capsule or any object with ``__dlpack__`` (a torch tensor...).

        :raises TritonModelException: when the data is not C-contiguous CPU memory.
        """
        try:
            if hasattr(dlpack, "__dlpack__"):
                try:
                    array = np.from_dlpack(dlpack)
                except (BufferError, RuntimeError) as exc:
                    bf16 = import_bfloat16(dlpack.__dlpack__())  # numpy has no bfloat16
                    if bf16 is None:
                        raise exc from None
                    array = bf16
            else:
                bf16 = import_bfloat16(dlpack)
                array = np.from_dlpack(capsule_source(dlpack)) if bf16 is None else bf16
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            raise TritonModelException(f"Tensor.from_dlpack('{name}'): {exc}") from exc
        if not array.flags.c_contiguous:
            raise TritonModelException(
                f"Tensor.from_dlpack('{name}'): only C-contiguous tensors are supported"
            )
        return Tensor._wrap(str(name), array)

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, shape={list(self._array.shape)}, dtype={self._array.dtype})"

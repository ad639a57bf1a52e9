"""BF16 tensors through DLPack, the route Triton documents for them (numpy has no bfloat16).

Here a BF16 tensor is a numpy array of ``ml_dtypes.bfloat16`` (the kernel's type for ``BF16``).
numpy's own DLPack refuses that dtype (``BufferError``), and refuses a DLPack ``kDLBfloat``
tensor (a torch ``bfloat16`` one) too. Both directions therefore go through ``uint16``, the
same 16 bits: the capsule numpy makes for the ``uint16`` view gets its type code rewritten to
``kDLBfloat`` (export), and a ``kDLBfloat`` capsule gets it rewritten to ``kDLUInt`` before
numpy reads it, then viewed as ``bfloat16`` (import). No copy either way.

The code is rewritten in the capsule's ``DLTensor`` (``dlpack.h``: ``data``, ``device``,
``ndim``, then the 4-byte ``dtype`` at offset 20), found behind a ``dltensor`` capsule at
offset 0 of ``DLManagedTensor``, behind a ``dltensor_versioned`` one at offset 32 of
``DLManagedTensorVersioned`` (version, manager context, deleter, flags before it).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["bfloat16", "export_bfloat16", "import_bfloat16", "is_bfloat16"]

try:
    import ml_dtypes

    bfloat16: np.dtype[Any] | None = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # a model environment without ml_dtypes: no BF16 tensors there
    bfloat16 = None

_KDL_UINT = 1
_KDL_BFLOAT = 4
_DTYPE_OFFSET = 20
_VERSIONED_OFFSET = 32

_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype = ctypes.c_char_p
_get_name.argtypes = [ctypes.py_object]
_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def is_bfloat16(array: npt.NDArray[Any]) -> bool:
    """Whether ``array`` holds ``ml_dtypes.bfloat16``."""
    return bfloat16 is not None and array.dtype == bfloat16


def _dtype_field(capsule: object) -> tuple[ctypes.c_uint8, ctypes.c_uint8] | None:
    """The (type code, bits) bytes of an unconsumed DLPack capsule's dtype, or None."""
    if type(capsule).__name__ != "PyCapsule":
        return None
    name = _get_name(capsule)
    if name not in (b"dltensor", b"dltensor_versioned"):
        return None
    pointer = _get_pointer(capsule, name)
    if not pointer:
        return None
    address = pointer + _DTYPE_OFFSET + (_VERSIONED_OFFSET if name == b"dltensor_versioned" else 0)
    return ctypes.c_uint8.from_address(address), ctypes.c_uint8.from_address(address + 1)


def export_bfloat16(array: npt.NDArray[Any], **kwargs: Any) -> object:
    """A ``kDLBfloat`` DLPack capsule sharing the memory of a bfloat16 ``array``."""
    capsule = np.ascontiguousarray(array).view(np.uint16).__dlpack__(**kwargs)
    field = _dtype_field(capsule)
    if field is None:
        raise BufferError("cannot export a bfloat16 tensor with DLPack")
    code, bits = field
    if code.value != _KDL_UINT or bits.value != 16:
        raise BufferError("unexpected DLPack type for the uint16 view of a bfloat16 tensor")
    code.value = _KDL_BFLOAT
    return capsule


def import_bfloat16(capsule: object) -> npt.NDArray[Any] | None:
    """The bfloat16 array of a ``kDLBfloat`` capsule (consumed), or None for another type."""
    field = _dtype_field(capsule)
    if field is None or bfloat16 is None:
        return None
    code, bits = field
    if code.value != _KDL_BFLOAT or bits.value != 16:
        return None
    code.value = _KDL_UINT
    from triton_python_backend_utils._tensor import capsule_source

    try:
        array = np.from_dlpack(capsule_source(capsule))
    except BaseException:
        code.value = _KDL_BFLOAT  # still the producer's: leave it as it was
        raise
    return array.view(bfloat16)

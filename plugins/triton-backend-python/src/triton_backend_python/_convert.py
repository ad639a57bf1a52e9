"""Responses and errors between the kernel's types and the model API's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy.typing as npt
import triton_python_backend_utils as pb_utils
from triton_python_backend_utils._errors import ERROR_CODE_NAMES

from kernel import InferenceResponse, KernelError, Status

__all__ = [
    "CODE_BY_STATUS",
    "STATUS_BY_CODE",
    "kernel_error",
    "kernel_response",
    "model_response",
    "refused",
    "shielded",
]

STATUS_BY_CODE = [Status[name] for name in ERROR_CODE_NAMES]
CODE_BY_STATUS = {status: code for code, status in enumerate(STATUS_BY_CODE)}


def kernel_error(error: pb_utils.TritonError) -> KernelError:
    """A model's ``TritonError`` as the kernel's error."""
    return KernelError(STATUS_BY_CODE[error._code], error._message)


def kernel_response(response: pb_utils.InferenceResponse) -> InferenceResponse:
    """A model's response as the kernel's."""
    error = response._error
    if error is not None:
        return InferenceResponse(parameters=response._parameters or {}, error=kernel_error(error))
    return InferenceResponse(outputs=response._outputs(), parameters=response._parameters or {})


def shielded(arrays: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """Read-only views of arrays one model hands another in-process (BLS inputs and outputs):
    a model writing into what it received then gets its own copy (``Tensor.as_numpy``) instead
    of changing the other model's data, as with Triton's process boundary."""
    views: dict[str, npt.NDArray[Any]] = {}
    for name, array in arrays.items():
        view = array.view()
        view.flags.writeable = False
        views[name] = view
    return views


def model_response(response: InferenceResponse) -> pb_utils.InferenceResponse:
    """A kernel response (to a BLS call) as the model sees it."""
    tensors = [pb_utils.Tensor._wrap(n, a) for n, a in shielded(response.outputs).items()]
    error = response.error
    failure = (
        None if error is None else pb_utils.TritonError(error.message, CODE_BY_STATUS[error.status])
    )
    return pb_utils.InferenceResponse._make(tensors, failure, dict(response.parameters) or None)


def refused(error: KernelError) -> pb_utils.InferenceResponse:
    """The response a BLS caller gets for a request the server refused."""
    failure = pb_utils.TritonError(error.message, CODE_BY_STATUS[error.status])
    return pb_utils.InferenceResponse._make([], failure, None)

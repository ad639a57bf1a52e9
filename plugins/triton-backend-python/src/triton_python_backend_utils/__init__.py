"""The Python-backend API of Triton Inference Server, for models served by triton-kernel.

``model.py`` files written for Triton's Python backend import this module by its Triton name::

    import triton_python_backend_utils as pb_utils

and run unchanged: tensors, requests and responses, decoupled response senders, BLS calls to
other models (``exec`` / ``async_exec``), model loading, logging, custom metrics and the
auto-complete ``ModelConfig``. Everything here works without the kernel imported, so the same
module serves models in the server process and in isolated model processes.
"""

from __future__ import annotations

from collections.abc import Mapping

from triton_python_backend_utils._config import ModelConfig as ModelConfig
from triton_python_backend_utils._config import (
    get_input_config_by_name as get_input_config_by_name,
)
from triton_python_backend_utils._config import (
    get_output_config_by_name as get_output_config_by_name,
)
from triton_python_backend_utils._config import (
    using_decoupled_model_transaction_policy as using_decoupled_model_transaction_policy,
)
from triton_python_backend_utils._constants import (
    TRITONSERVER_MEMORY_CPU as TRITONSERVER_MEMORY_CPU,
)
from triton_python_backend_utils._constants import (
    TRITONSERVER_MEMORY_GPU as TRITONSERVER_MEMORY_GPU,
)
from triton_python_backend_utils._constants import (
    TRITONSERVER_REQUEST_FLAG_SEQUENCE_END as TRITONSERVER_REQUEST_FLAG_SEQUENCE_END,
)
from triton_python_backend_utils._constants import (
    TRITONSERVER_REQUEST_FLAG_SEQUENCE_START as TRITONSERVER_REQUEST_FLAG_SEQUENCE_START,
)
from triton_python_backend_utils._constants import (
    TRITONSERVER_REQUEST_RELEASE_ALL as TRITONSERVER_REQUEST_RELEASE_ALL,
)
from triton_python_backend_utils._constants import (
    TRITONSERVER_REQUEST_RELEASE_RESCHEDULE as TRITONSERVER_REQUEST_RELEASE_RESCHEDULE,
)
from triton_python_backend_utils._constants import (
    TRITONSERVER_RESPONSE_COMPLETE_FINAL as TRITONSERVER_RESPONSE_COMPLETE_FINAL,
)
from triton_python_backend_utils._constants import MemoryType as MemoryType
from triton_python_backend_utils._errors import TritonError as TritonError
from triton_python_backend_utils._errors import TritonModelException as TritonModelException
from triton_python_backend_utils._inference import InferenceRequest as InferenceRequest
from triton_python_backend_utils._inference import InferenceResponse as InferenceResponse
from triton_python_backend_utils._inference import (
    InferenceResponseSender as InferenceResponseSender,
)
from triton_python_backend_utils._inference import InferenceTrace as InferenceTrace
from triton_python_backend_utils._inference import PreferredMemory as PreferredMemory
from triton_python_backend_utils._inference import ResponseIterator as ResponseIterator
from triton_python_backend_utils._inference import as_name as _as_name
from triton_python_backend_utils._logging import Logger as Logger
from triton_python_backend_utils._logging import LogLevel as LogLevel
from triton_python_backend_utils._metrics import Metric as Metric
from triton_python_backend_utils._metrics import MetricFamily as MetricFamily
from triton_python_backend_utils._metrics import MetricKind as MetricKind
from triton_python_backend_utils._runtime import current_runtime as _current_runtime
from triton_python_backend_utils._tensor import Tensor as Tensor
from triton_python_backend_utils._types import TRITON_STRING_TO_NUMPY as TRITON_STRING_TO_NUMPY
from triton_python_backend_utils._types import deserialize_bytes_tensor as deserialize_bytes_tensor
from triton_python_backend_utils._types import numpy_to_triton_type as numpy_to_triton_type
from triton_python_backend_utils._types import serialize_byte_tensor as serialize_byte_tensor
from triton_python_backend_utils._types import triton_string_to_numpy as triton_string_to_numpy
from triton_python_backend_utils._types import triton_to_numpy_type as triton_to_numpy_type

__all__ = [
    "TRITONSERVER_MEMORY_CPU",
    "TRITONSERVER_MEMORY_GPU",
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END",
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_START",
    "TRITONSERVER_REQUEST_RELEASE_ALL",
    "TRITONSERVER_REQUEST_RELEASE_RESCHEDULE",
    "TRITONSERVER_RESPONSE_COMPLETE_FINAL",
    "TRITON_STRING_TO_NUMPY",
    "InferenceRequest",
    "InferenceResponse",
    "InferenceResponseSender",
    "InferenceTrace",
    "LogLevel",
    "Logger",
    "MemoryType",
    "Metric",
    "MetricFamily",
    "MetricKind",
    "ModelConfig",
    "PreferredMemory",
    "ResponseIterator",
    "Tensor",
    "TritonError",
    "TritonModelException",
    "deserialize_bytes_tensor",
    "get_input_config_by_name",
    "get_input_tensor_by_name",
    "get_model_dir",
    "get_output_config_by_name",
    "get_output_tensor_by_name",
    "is_model_ready",
    "load_model",
    "numpy_to_triton_type",
    "serialize_byte_tensor",
    "triton_string_to_numpy",
    "triton_to_numpy_type",
    "unload_model",
    "using_decoupled_model_transaction_policy",
]


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    """The input tensor ``name`` of a request, or None when the request has no such input."""
    if isinstance(inference_request, InferenceRequest):
        return inference_request._input_tensor(name)
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    """The output tensor ``name`` of a response, or None when it has no such output."""
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def get_model_dir() -> str:
    """The folder of the model's version (``<repository>/<model>/<version>``), as Triton's
    stub gives it: where ``model.py`` and the model's own files are.

    :raises TritonModelException: when called outside a model served by triton-kernel.
    """
    return _current_runtime().model_dir()


def load_model(
    model_name: str | bytes, config: str = "", files: Mapping[str, bytes] | None = None
) -> None:
    """Load (or reload) a model, as the repository API does.

    ``config`` is a JSON model configuration overriding the model's; ``files`` maps
    ``"file:<path in the model folder>"`` to contents and needs ``config``.

    :raises TritonModelException: when the load fails.
    """
    _current_runtime().load_model(_as_name(model_name), config or "", files)


def unload_model(model_name: str | bytes, unload_dependents: bool = False) -> None:
    """Unload a model; with ``unload_dependents``, an ensemble's composing models too.

    :raises TritonModelException: when the unload fails.
    """
    _current_runtime().unload_model(_as_name(model_name), bool(unload_dependents))


def is_model_ready(model_name: str | bytes, model_version: str = "") -> bool:
    """Whether a model (the given version, or any) is loaded and ready."""
    return _current_runtime().is_model_ready(_as_name(model_name), str(model_version))

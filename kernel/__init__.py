"""triton-kernel: a small asyncio inference server for Triton model repositories.

The public surface for plugin authors and embedders. Everything not re-exported here is
private and may change without notice.
"""

__version__ = "0.1.0"

from kernel._proto.inference import ModelConfig as ModelConfig
from kernel.backend import Backend as Backend
from kernel.backend import BackendAttributes as BackendAttributes
from kernel.backend import BackendContext as BackendContext
from kernel.backend import InstanceContext as InstanceContext
from kernel.backend import Model as Model
from kernel.backend import ModelContext as ModelContext
from kernel.backend import ModelInstance as ModelInstance
from kernel.backend import ServerHandle as ServerHandle
from kernel.errors import KernelError as KernelError
from kernel.errors import Status as Status
from kernel.inference import InferenceRequest as InferenceRequest
from kernel.inference import InferenceResponse as InferenceResponse
from kernel.inference import ParameterValue as ParameterValue
from kernel.inference import RequestFlags as RequestFlags
from kernel.inference import ResponseSender as ResponseSender
from kernel.options import ServerOptions as ServerOptions
from kernel.server import InferenceServer as InferenceServer
from kernel.tensors import DATATYPES as DATATYPES
from kernel.tensors import datatype_of as datatype_of
from kernel.tensors import datatype_to_dtype as datatype_to_dtype

__all__ = [
    "DATATYPES",
    "Backend",
    "BackendAttributes",
    "BackendContext",
    "InferenceRequest",
    "InferenceResponse",
    "InferenceServer",
    "InstanceContext",
    "KernelError",
    "Model",
    "ModelConfig",
    "ModelContext",
    "ModelInstance",
    "ParameterValue",
    "RequestFlags",
    "ResponseSender",
    "ServerHandle",
    "ServerOptions",
    "Status",
    "__version__",
    "datatype_of",
    "datatype_to_dtype",
]

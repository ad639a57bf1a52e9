"""triton-kernel: a small asyncio inference server for Triton model repositories.

The public surface for plugin authors and embedders: the names re-exported here and the
modules in :data:`PUBLIC_MODULES` (docs/plugin-authoring.md lists the same, a test pins both).
Every other module has a ``_`` name somewhere in its path, is private and may change without
notice; a test fails when a plugin, or a plugin's tests, imports one.

The names are imported on first use (PEP 562), not when ``kernel`` is: the ``kernel`` command
lives in ``kernel._cli``, and ``kernel --help`` or ``kernel backends`` must not pay for the
server stack, numpy and the generated protobuf code that importing this package would
otherwise pull in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

PUBLIC_MODULES = (
    "kernel",
    "kernel.batching",
    "kernel.config",
    "kernel.frontends",
    "kernel.signature",
    "kernel.tensors",
    "kernel.testing",
    "kernel.testing.clients",
    "kernel.testing.pytest_plugin",
)
"""The modules plugins and embedders may import; each one's ``__all__`` is its public names."""

if TYPE_CHECKING:
    from kernel._backend import Backend as Backend
    from kernel._backend import BackendAttributes as BackendAttributes
    from kernel._backend import BackendContext as BackendContext
    from kernel._backend import InstanceContext as InstanceContext
    from kernel._backend import MemoryUsage as MemoryUsage
    from kernel._backend import Model as Model
    from kernel._backend import ModelContext as ModelContext
    from kernel._backend import ModelInstance as ModelInstance
    from kernel._backend import ServerHandle as ServerHandle
    from kernel._errors import KernelError as KernelError
    from kernel._errors import Status as Status
    from kernel._inference import InferenceRequest as InferenceRequest
    from kernel._inference import InferenceResponse as InferenceResponse
    from kernel._inference import ParameterValue as ParameterValue
    from kernel._inference import RequestFlags as RequestFlags
    from kernel._inference import ResponseSender as ResponseSender
    from kernel._options import ModelControlMode as ModelControlMode
    from kernel._options import ServerOptions as ServerOptions
    from kernel._proto.inference import ModelConfig as ModelConfig
    from kernel._server import InferenceServer as InferenceServer
    from kernel.tensors import DATATYPES as DATATYPES
    from kernel.tensors import datatype_of as datatype_of
    from kernel.tensors import datatype_to_dtype as datatype_to_dtype

__all__ = [
    "DATATYPES",
    "PUBLIC_MODULES",
    "Backend",
    "BackendAttributes",
    "BackendContext",
    "InferenceRequest",
    "InferenceResponse",
    "InferenceServer",
    "InstanceContext",
    "KernelError",
    "MemoryUsage",
    "Model",
    "ModelConfig",
    "ModelContext",
    "ModelControlMode",
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

_LAZY = {
    "ModelConfig": "kernel._proto.inference",
    "Backend": "kernel._backend",
    "BackendAttributes": "kernel._backend",
    "BackendContext": "kernel._backend",
    "InstanceContext": "kernel._backend",
    "MemoryUsage": "kernel._backend",
    "Model": "kernel._backend",
    "ModelContext": "kernel._backend",
    "ModelInstance": "kernel._backend",
    "ServerHandle": "kernel._backend",
    "KernelError": "kernel._errors",
    "Status": "kernel._errors",
    "InferenceRequest": "kernel._inference",
    "InferenceResponse": "kernel._inference",
    "ParameterValue": "kernel._inference",
    "RequestFlags": "kernel._inference",
    "ResponseSender": "kernel._inference",
    "ModelControlMode": "kernel._options",
    "ServerOptions": "kernel._options",
    "InferenceServer": "kernel._server",
    "DATATYPES": "kernel.tensors",
    "datatype_of": "kernel.tensors",
    "datatype_to_dtype": "kernel.tensors",
}

if not TYPE_CHECKING:  # mypy sees the imports above; a typo'd name stays a type error

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'kernel' has no attribute '{name}'")
        import importlib

        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})

"""triton-backend-onnx: ONNX Runtime models for triton-kernel.

Installed, it registers the backend ``onnxruntime`` in the entry-point group
``kernel.backends``; models select it with ``backend: "onnxruntime"`` or
``platform: "onnxruntime_onnx"``, or by holding only a ``model.onnx`` (auto-complete).
"""

from triton_backend_onnx._backend import OnnxRuntimeBackend as OnnxRuntimeBackend
from triton_backend_onnx._backend import OnnxRuntimeInstance as OnnxRuntimeInstance
from triton_backend_onnx._backend import OnnxRuntimeModel as OnnxRuntimeModel

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeInstance", "OnnxRuntimeModel"]

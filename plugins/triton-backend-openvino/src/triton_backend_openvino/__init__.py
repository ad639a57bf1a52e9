"""triton-backend-openvino: OpenVINO models for triton-kernel.

Installed, it registers the backend ``openvino`` in the entry-point group ``kernel.backends``;
models select it with ``backend: "openvino"``, or by holding only a ``model.xml`` (with its
``model.bin``) without a ``config.pbtxt``. ONNX files are read by OpenVINO too.
"""

from triton_backend_openvino._backend import OpenVinoBackend as OpenVinoBackend
from triton_backend_openvino._backend import OpenVinoInstance as OpenVinoInstance
from triton_backend_openvino._backend import OpenVinoModel as OpenVinoModel

__all__ = ["OpenVinoBackend", "OpenVinoInstance", "OpenVinoModel"]

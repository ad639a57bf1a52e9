"""triton-backend-torch: PyTorch models for triton-kernel.

Installed, it registers the backend ``pytorch`` in the entry-point group ``kernel.backends``;
models select it with ``backend: "pytorch"`` or ``platform: "pytorch_libtorch"``, or by holding
only a ``model.pt`` (TorchScript) or ``model.pt2`` (exported program).
"""

# First: torch loads here, with the OpenMP wait policy the plugin chooses (see _openmp).
from triton_backend_torch import _openmp as _openmp  # isort: skip
from triton_backend_torch._backend import PyTorchBackend as PyTorchBackend
from triton_backend_torch._backend import PyTorchInstance as PyTorchInstance
from triton_backend_torch._backend import PyTorchModel as PyTorchModel

__all__ = ["PyTorchBackend", "PyTorchInstance", "PyTorchModel"]

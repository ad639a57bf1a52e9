"""triton-backend-fil: tree models (XGBoost, LightGBM, scikit-learn forests) for triton-kernel.

Installed, it registers the backend ``fil`` in the entry-point group ``kernel.backends``;
models select it with ``backend: "fil"`` and Triton FIL's ``parameters`` (``model_type``,
``output_class``, ``predict_proba``, ``threshold``, ``cpu_nthread``).
"""

from triton_backend_fil._backend import FilBackend as FilBackend
from triton_backend_fil._backend import FilInstance as FilInstance
from triton_backend_fil._backend import FilModel as FilModel

__all__ = ["FilBackend", "FilInstance", "FilModel"]

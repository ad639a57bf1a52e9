"""triton-backend-python: the ``python`` backend of triton-kernel.

Serves ``model.py`` files written for Triton's Python backend, unchanged: they import
``triton_python_backend_utils`` (shipped by this distribution) and run one process per
instance, as under Triton (default; a dead process is restarted), or, with
``parameters { key: "EXECUTION_MODE" value { string_value: "in_process" } }``, in the server
process. See the README for the parameters honoured.

Public names:

* :class:`PythonBackend` -- the backend class (entry point ``python`` in ``kernel.backends``).
* :func:`metric_text` -- the custom metrics Python models of a server created, as Prometheus
  text (the metrics endpoint also finds them in ``server.metric_families``).

Imports are lazy: the model processes import this package's kernel-free modules only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from triton_backend_python._backend import PythonBackend as PythonBackend
    from triton_backend_python._registry import metric_text as metric_text

__all__ = ["PythonBackend", "metric_text"]

_LAZY = {
    "PythonBackend": "triton_backend_python._backend",
    "metric_text": "triton_backend_python._registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'triton_backend_python' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

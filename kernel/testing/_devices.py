"""GPUs a test makes the kernel see, for device placement tests on machines without one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

__all__ = ["simulated_gpus"]

# The modules that ask which GPUs are visible (each imported the function by name).
_ASKING = ("kernel._manager", "kernel._models")


@contextlib.contextmanager
def simulated_gpus(ids: Sequence[int]) -> Iterator[None]:
    """Inside the block, the kernel places instances as if the GPUs ``ids`` were visible.

    Only the kernel's placement changes (``KIND_AUTO`` groups, configs without
    ``instance_group``, a backend's preferred kind): no device appears to CUDA or to a
    backend's framework, so a model that really starts on a GPU still fails its load.
    """
    import importlib

    modules = [importlib.import_module(name) for name in _ASKING]
    saved = [getattr(module, "visible_gpus") for module in modules]  # noqa: B009
    fixed = list(ids)
    for module in modules:
        setattr(module, "visible_gpus", lambda: list(fixed))  # noqa: B010
    try:
        yield
    finally:
        for module, original in zip(modules, saved, strict=True):
            setattr(module, "visible_gpus", original)  # noqa: B010

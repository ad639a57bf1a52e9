"""Backends found through the ``kernel.backends`` entry points, imported only when needed.

A backend's module is imported, and its :meth:`~kernel.backend.Backend.initialize` run, when the
first model that names it loads: serving one ONNX model imports no torch. Import and initialize
failures are the failures of the models that need the backend, never of the server; they are
retried at the next load (the user may have installed the missing piece meanwhile).

Each load looks afresh: a plugin pip-installed into the server's environment while it runs (a
wheel, or an editable install's new ``.pth`` file) is found by the next load of a model that
needs it, with no restart (see :class:`kernel._discovery.SitePackages`).
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint

import anyio

from kernel._discovery import (
    ENTRY_POINT_GROUP,
    PROJECT_DISTRIBUTIONS,
    BackendInfo,
    SitePackages,
    backend_entry_points,
    installed_backends,
    missing_backend_message,
)
from kernel._hooks import call_hook
from kernel.backend import Backend, BackendContext
from kernel.errors import KernelError, Status

__all__ = [
    "ENTRY_POINT_GROUP",
    "PLATFORM_BACKENDS",
    "PROJECT_DISTRIBUTIONS",
    "BackendInfo",
    "BackendRegistry",
    "backend_settings",
]

PLATFORM_BACKENDS = {
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
}
"""Triton ``platform`` values served by a backend (``ensemble`` is the kernel's own)."""

log = logging.getLogger("kernel.registry")


def backend_settings(backend_config: dict[str, dict[str, str]], name: str) -> dict[str, str]:
    """The ``--backend-config`` settings backend ``name`` gets, as tritonserver resolves them:
    the global ones (given without a backend name, kept under ``""``) first, then the backend's
    own, which win where both set a key."""
    return {**backend_config.get("", {}), **backend_config.get(name, {})}


class BackendRegistry:
    """Finds, imports, initializes and finalizes backends for one server."""

    def __init__(self, backend_config: dict[str, dict[str, str]] | None = None) -> None:
        self._backend_config = backend_config or {}
        self._backends: dict[str, Backend] = {}
        self._order: list[str] = []
        self._locks: dict[str, anyio.Lock] = {}
        self._site = SitePackages()

    @staticmethod
    def installed() -> dict[str, BackendInfo]:
        """Every backend installed in this environment, by name.

        :raises KernelError: ``INTERNAL`` when two distributions claim one backend name.
        """
        return installed_backends()

    @staticmethod
    def missing_backend_message(name: str, installed: dict[str, BackendInfo]) -> str:
        """What to tell a user whose model names a backend that is not installed."""
        return missing_backend_message(name, installed)

    async def get(self, name: str) -> Backend:
        """The initialized backend ``name``, importing and initializing it on first use.

        :raises KernelError: ``UNAVAILABLE`` when it is not installed or fails to import or
            initialize; the message says why.
        """
        backend = self._backends.get(name)
        if backend is not None:
            return backend
        lock = self._locks.setdefault(name, anyio.Lock())
        async with lock:
            backend = self._backends.get(name)
            if backend is None:
                backend = await self._load(name)
                self._backends[name] = backend
                self._order.append(name)
            return backend

    def _find(self, name: str) -> tuple[EntryPoint, BackendInfo]:
        # Reading .pth files and every distribution's metadata touches the disk: a worker thread.
        self._site.refresh()
        found = backend_entry_points(name)
        if not found:
            raise KernelError(
                Status.UNAVAILABLE, missing_backend_message(name, installed_backends())
            )
        return found[0]

    async def _load(self, name: str) -> Backend:
        ep, info = await anyio.to_thread.run_sync(self._find, name)
        try:
            # Importing a framework can take seconds: keep it off the loop.
            cls = await anyio.to_thread.run_sync(ep.load)
        except Exception as exc:
            log.exception("backend '%s' (%s) failed to import", name, info.distribution)
            raise KernelError(
                Status.UNAVAILABLE,
                f"backend '{name}' from '{info.distribution}' failed to import: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise KernelError(
                Status.UNAVAILABLE,
                f"backend '{name}' from '{info.distribution}': entry point {ep.value} is not a"
                " kernel.Backend subclass",
            )
        try:
            backend = cls()
            context = BackendContext(
                name=name,
                config=backend_settings(self._backend_config, name),
                logger=logging.getLogger(f"kernel.backend.{name}"),
            )
            await call_hook(backend.initialize, context, default=Backend.initialize)
        except Exception as exc:
            log.exception("backend '%s' failed to initialize", name)
            raise KernelError(
                Status.UNAVAILABLE,
                f"backend '{name}' failed to initialize: {KernelError.wrap(exc).message}",
            ) from exc
        log.info("backend '%s' %s initialized", name, info.version)
        return backend

    def loaded(self) -> list[str]:
        """Names of the initialized backends, in initialization order."""
        return list(self._order)

    async def finalize(self) -> None:
        """Finalize every initialized backend, last initialized first."""
        while self._order:
            name = self._order.pop()
            backend = self._backends.pop(name)
            try:
                await call_hook(backend.finalize, default=Backend.finalize)
            except Exception:
                log.exception("backend '%s' failed to finalize", name)

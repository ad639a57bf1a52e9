"""Backends found through the ``kernel.backends`` entry points, imported only when needed.

A backend's module is imported, and its :meth:`~kernel.backend.Backend.initialize` run, when the
first model that names it loads: serving one ONNX model imports no torch. Import and initialize
failures are the failures of the models that need the backend, never of the server; they are
retried at the next load (the user may have installed the missing piece meanwhile).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

import anyio

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

ENTRY_POINT_GROUP = "kernel.backends"

PROJECT_DISTRIBUTIONS = {
    "onnxruntime": "triton-backend-onnx",
    "pytorch": "triton-backend-torch",
    "openvino": "triton-backend-openvino",
    "fil": "triton-backend-fil",
    "python": "triton-backend-python",
}
"""Backends this repository ships, by the distribution that installs each."""

PLATFORM_BACKENDS = {
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
}
"""Triton ``platform`` values served by a backend (``ensemble`` is the kernel's own)."""

log = logging.getLogger("kernel.registry")


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """An installed backend as its entry point declares it."""

    name: str
    value: str
    """The entry point's ``module:Class``."""
    distribution: str
    version: str


def _info(ep: EntryPoint) -> BackendInfo:
    dist = ep.dist
    return BackendInfo(
        name=ep.name,
        value=ep.value,
        distribution=dist.name if dist is not None else "?",
        version=dist.version if dist is not None else "?",
    )


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

    @staticmethod
    def installed() -> dict[str, BackendInfo]:
        """Every backend installed in this environment, by name.

        :raises KernelError: ``INTERNAL`` when two distributions claim one backend name.
        """
        found: dict[str, BackendInfo] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            info = _info(ep)
            other = found.get(ep.name)
            if other is not None and other.distribution != info.distribution:
                raise KernelError(
                    Status.INTERNAL,
                    f"backend '{ep.name}' is installed twice: by '{other.distribution}'"
                    f" ({other.value}) and by '{info.distribution}' ({info.value})",
                )
            found[ep.name] = info
        return found

    @staticmethod
    def missing_backend_message(name: str, installed: dict[str, BackendInfo]) -> str:
        """What to tell a user whose model names a backend that is not installed."""
        names = ", ".join(sorted(installed)) or "none"
        text = f"backend '{name}' is not installed (installed backends: {names})"
        dist = PROJECT_DISTRIBUTIONS.get(name)
        if dist is not None:
            text += f"; install it with: pip install {dist}"
        return text

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

    async def _load(self, name: str) -> Backend:
        eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not eps:
            raise KernelError(
                Status.UNAVAILABLE, self.missing_backend_message(name, self.installed())
            )
        ep = eps[0]
        info = _info(ep)
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

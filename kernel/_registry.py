"""Backends found through the ``kernel.backends`` entry points, imported only when needed.

A backend's module is imported, and its :meth:`~kernel._backend.Backend.initialize` run, when the
first model that names it loads: serving one ONNX model imports no torch. Import and initialize
failures are the failures of the models that need the backend, never of the server; they are
retried at the next load (the user may have installed the missing piece meanwhile).

Each load looks afresh: a plugin pip-installed into the server's environment while it runs (a
wheel, or an editable install's new ``.pth`` file) is found by the next load of a model that
needs it, with no restart (see :class:`kernel._discovery.SitePackages`).

Python-based backends (Triton's name: a ``TritonPythonModel`` shared by every model that names
it) are served by the ``python`` plugin; :meth:`BackendRegistry.resolve` finds which plugin and
which Python source serve a model, in tritonserver's order (see its docstring).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path

import anyio

from kernel._backend import Backend, BackendContext
from kernel._discovery import (
    ENTRY_POINT_GROUP,
    PROJECT_DISTRIBUTIONS,
    PYTHON_BACKEND,
    PYTHON_MODEL_FILE,
    BackendInfo,
    SitePackages,
    backend_entry_points,
    directory_backends,
    entry_point_kind,
    find_runtime_file,
    installed_backends,
    missing_backend_message,
    runtime_backend_name,
)
from kernel._errors import KernelError, Status
from kernel._hooks import call_hook
from kernel._proto.inference import ModelConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "PLATFORM_BACKENDS",
    "PROJECT_DISTRIBUTIONS",
    "BackendInfo",
    "BackendRegistry",
    "ResolvedBackend",
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


@dataclass(frozen=True, slots=True)
class ResolvedBackend:
    """What serves one model version: a kernel plugin, and for a Python-based backend, the
    Python source of its ``TritonPythonModel``."""

    name: str
    """The plugin's backend name (``python`` for every Python-based backend)."""
    backend: Backend
    python_model: str = ""
    """A ``.py`` file's path or an entry point's ``module:Class``; ``""``: the plugin's own
    (for ``python``, the version folder's ``model.py``)."""
    where: str = ""
    """Where it was found, for logs (``entry point vllm (dist 1.0)``, a file path)."""


def _python_class(cls: object) -> bool:
    """Whether an entry point's object is a ``TritonPythonModel`` rather than a plugin."""
    return isinstance(cls, type) and not issubclass(cls, Backend) and hasattr(cls, "execute")


class BackendRegistry:
    """Finds, imports, initializes and finalizes backends for one server."""

    def __init__(
        self,
        backend_config: dict[str, dict[str, str]] | None = None,
        backend_directories: Sequence[Path] = (),
    ) -> None:
        self._backend_config = backend_config or {}
        self.backend_directories = list(backend_directories)
        """tritonserver's ``--backend-directory``: Python-based backends as
        ``DIR/<backend>/model.py``."""
        self._backends: dict[str, Backend] = {}
        self._order: list[str] = []
        self._locks: dict[str, anyio.Lock] = {}
        self._site = SitePackages()
        self._python_models: dict[str, tuple[str, BackendInfo]] = {}
        """Entry points found to declare a ``TritonPythonModel``: name -> (value, info)."""

    async def resolve(
        self, config: ModelConfig, backend: str, model_dir: Path, version: int
    ) -> ResolvedBackend:
        """What serves version ``version`` of the model in ``model_dir`` whose config names
        ``backend`` (tritonserver's search, with entry points where it has shared libraries):

        * ``runtime: "<file>.py"``: a Python-based backend in that file, looked for in the
          version folder, the model folder, then ``DIR/<backend>/`` of each backend directory;
        * ``runtime: "<name>"`` (or Triton's ``libtriton_<name>.so``): backend ``<name>``
          instead of ``backend``, found as below;
        * a backend name: the installed plugin of that name (``kernel.backends`` entry point),
          which may declare a ``TritonPythonModel`` class instead of a plugin (a Python-based
          backend shipped as a pip distribution); else ``DIR/<name>/model.py``.

        :raises KernelError: ``INVALID_ARG`` for a runtime that names nothing, listing what
            was looked for; ``UNAVAILABLE`` for a backend that is not installed or fails.
        """
        runtime = str(config.runtime or "")
        if runtime.endswith(".py"):
            found = await anyio.to_thread.run_sync(
                lambda: find_runtime_file(
                    runtime,
                    version_dir=model_dir / str(version),
                    model_dir=model_dir,
                    backend=backend,
                    directories=self.backend_directories,
                )
            )
            if found.path is None:
                looked = ", ".join(f"'{p}'" for p in found.searched) or "nowhere (it escapes)"
                raise KernelError(
                    Status.INVALID_ARG,
                    f"model '{config.name}': runtime '{runtime}' names no Python file;"
                    f" looked for {looked}",
                )
            python = await self.get(PYTHON_BACKEND)
            return ResolvedBackend(PYTHON_BACKEND, python, str(found.path), str(found.path))
        if runtime:
            return await self._by_name(
                runtime_backend_name(runtime), config, f"runtime '{runtime}'"
            )
        return await self._by_name(backend, config, "")

    async def _by_name(self, name: str, config: ModelConfig, via: str) -> ResolvedBackend:
        loaded = self._backends.get(name)
        if loaded is not None:
            return ResolvedBackend(name, loaded)
        entry = self._python_models.get(name)
        if entry is None:
            found = await anyio.to_thread.run_sync(self._find_quietly, name)
            if found is not None:
                entry = await self._classify(*found)
                if entry is None:  # a plugin: its import and initialize errors are the model's
                    return ResolvedBackend(name, await self.get(name))
        if entry is not None:
            value, info = entry
            python = await self.get(PYTHON_BACKEND)
            where = f"entry point {name} = {value} ({info.distribution} {info.version})"
            return ResolvedBackend(PYTHON_BACKEND, python, value, where)
        folder = await anyio.to_thread.run_sync(directory_backends, self.backend_directories)
        if name in folder:
            path = str(folder[name].path)
            return ResolvedBackend(PYTHON_BACKEND, await self.get(PYTHON_BACKEND), path, path)
        looked = [f"entry point '{name}' in group {ENTRY_POINT_GROUP}"]
        looked += [f"'{d / name / PYTHON_MODEL_FILE}'" for d in self.backend_directories]
        missing = await anyio.to_thread.run_sync(
            lambda: missing_backend_message(name, installed_backends())
        )
        if via:
            raise KernelError(
                Status.INVALID_ARG,
                f"model '{config.name}': {via} names no backend: {missing};"
                f" looked for {', '.join(looked)}",
            )
        raise KernelError(Status.UNAVAILABLE, f"{missing}; looked for {', '.join(looked)}")

    async def _classify(self, ep: EntryPoint, info: BackendInfo) -> tuple[str, BackendInfo] | None:
        """``(value, info)`` when entry point ``ep`` declares a ``TritonPythonModel`` (then
        remembered), else None (a plugin)."""
        name = ep.name
        try:
            kind = await anyio.to_thread.run_sync(entry_point_kind, ep.value)
        except Exception:  # reading a plugin's source never fails its model: import to tell
            log.exception("backend '%s': cannot read the source of %s", name, ep.value)
            kind = ""
        if kind == "":  # the source does not say: import it to tell
            try:
                kind = "python" if _python_class(await anyio.to_thread.run_sync(ep.load)) else ""
            except Exception:
                kind = ""  # get() reports the import failure with its usual message
        if kind != "python":
            return None
        self._python_models[name] = (ep.value, info)
        log.info(
            "backend '%s': a Python-based backend (%s from %s %s), served by the %s backend",
            name,
            ep.value,
            info.distribution,
            info.version,
            PYTHON_BACKEND,
        )
        return self._python_models[name]

    def _find_quietly(self, name: str) -> tuple[EntryPoint, BackendInfo] | None:
        self._site.refresh()
        found = backend_entry_points(name)
        return found[0] if found else None

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

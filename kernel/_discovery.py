"""Which backends are installed, read from package metadata without importing any of them.

Kept apart from :mod:`kernel._registry` (which imports anyio and the plugin contract) so that
``kernel backends`` and ``kernel --help`` stay light: nothing here imports more than the
standard library.

It also makes a plugin installed *after* the server started findable (hot-add): a wheel lands in
a ``site-packages`` folder already on ``sys.path``, where only the import system's caches hide
it; an editable install adds a ``.pth`` file, which the interpreter reads only at startup.
:class:`SitePackages` re-reads the ``.pth`` files that appeared or changed since it last looked.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import logging
import os
import site
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from kernel._errors import KernelError, Status

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECT_DISTRIBUTIONS",
    "PYTHON_BACKEND",
    "PYTHON_MODEL_FILE",
    "BackendInfo",
    "DirectoryBackend",
    "RuntimeFile",
    "SitePackages",
    "backend_entry_points",
    "directory_backends",
    "entry_point_kind",
    "find_runtime_file",
    "installed_backends",
    "missing_backend_message",
    "runtime_backend_name",
]

PYTHON_BACKEND = "python"
"""The plugin that serves every Python-based backend (Triton's: the Python backend)."""
PYTHON_MODEL_FILE = "model.py"
"""The file a Python-based backend's folder holds (``DIR/<backend>/model.py``), as Triton."""

ENTRY_POINT_GROUP = "kernel.backends"

PROJECT_DISTRIBUTIONS = {
    "onnxruntime": "triton-backend-onnx",
    "pytorch": "triton-backend-torch",
    "openvino": "triton-backend-openvino",
    "fil": "triton-backend-fil",
    "python": "triton-backend-python",
}
"""Backends this repository ships, by the distribution that installs each."""

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


def backend_entry_points(name: str) -> list[tuple[EntryPoint, BackendInfo]]:
    """The entry points that declare backend ``name`` (normally one)."""
    return [(ep, _info(ep)) for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]


def installed_backends() -> dict[str, BackendInfo]:
    """Every backend installed in this environment, by name, without importing any.

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


def missing_backend_message(name: str, installed: dict[str, BackendInfo]) -> str:
    """What to tell a user whose model names a backend that is not installed."""
    names = ", ".join(sorted(installed)) or "none"
    text = f"backend '{name}' is not installed (installed backends: {names})"
    dist = PROJECT_DISTRIBUTIONS.get(name)
    if dist is not None:
        text += f"; install it with: pip install {dist}"
    return text


@dataclass(frozen=True, slots=True)
class DirectoryBackend:
    """A Python-based backend found in a ``--backend-directory``: ``DIR/<name>/model.py``."""

    name: str
    path: Path


def directory_backends(directories: Sequence[Path]) -> dict[str, DirectoryBackend]:
    """Every ``DIR/<name>/model.py`` of the backend directories (the first directory wins)."""
    found: dict[str, DirectoryBackend] = {}
    for directory in directories:
        try:
            children = sorted(directory.iterdir())
        except OSError:
            continue
        for child in children:
            model = child / PYTHON_MODEL_FILE
            if child.name not in found and model.is_file():
                found[child.name] = DirectoryBackend(child.name, model)
    return found


@dataclass(frozen=True, slots=True)
class RuntimeFile:
    """Where a Python-based backend's ``.py`` file was found, or everywhere it was looked for."""

    path: Path | None
    searched: tuple[Path, ...]


def _inside(folder: Path, name: str) -> Path | None:
    """``folder / name`` when it stays inside ``folder`` (a runtime never escapes it)."""
    candidate = (folder / name).resolve()
    try:
        candidate.relative_to(folder.resolve())
    except ValueError:
        return None
    return folder / name


def find_runtime_file(
    name: str, *, version_dir: Path, model_dir: Path, backend: str, directories: Sequence[Path]
) -> RuntimeFile:
    """Find a Python-based backend's file ``name`` (``runtime: "model.py"``) in tritonserver's
    order: the model's version folder, the model's folder, then ``DIR/<backend>/`` of each
    backend directory. A name that would leave its folder (``../x.py``) is never found.
    """
    searched: list[Path] = []
    folders = [version_dir, model_dir, *(d / backend for d in directories)]
    for folder in folders:
        candidate = _inside(folder, name)
        if candidate is None:
            continue
        searched.append(candidate)
        if candidate.is_file():
            return RuntimeFile(candidate, tuple(searched))
    return RuntimeFile(None, tuple(searched))


def runtime_backend_name(runtime: str) -> str:
    """The backend a non-Python ``runtime`` names: Triton's ``libtriton_<name>.so`` (as a
    Triton config spells a C++ backend's library) is backend ``<name>``; anything else is a
    backend name as it is."""
    if runtime.startswith("libtriton_") and runtime.endswith(".so"):
        return runtime.removeprefix("libtriton_").removesuffix(".so")
    return runtime


def _module_source(module: str) -> str | None:
    """The source text of ``module``, found without running it or its parent packages."""
    search: list[str] | None = None
    spec = None
    for part in module.split("."):
        try:
            spec = importlib.machinery.PathFinder.find_spec(part, search)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    try:
        return Path(spec.origin).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


_parse_lock = threading.Lock()


def entry_point_kind(value: str) -> str:
    """What an entry point ``module:Class`` declares, read from its source without importing
    it: ``"python"`` for a ``TritonPythonModel`` (a class with ``execute`` that is no kernel
    ``Backend``), ``"plugin"`` for a kernel ``Backend`` subclass, ``""`` when the source does
    not say (a re-exported class: import it to tell).

    A Python-based backend's module may import a heavy framework at its top (torch, vllm): the
    server that runs its models in processes of their own never needs to import it itself.
    """
    module, _, attr = value.partition(":")
    attr = attr.strip()
    if not attr or "." in attr:
        return ""
    source = _module_source(module.strip())
    if source is None:
        return ""
    try:
        with _parse_lock:  # CPython 3.11's parser is not safe in concurrent threads
            tree = ast.parse(source)
    except (SyntaxError, ValueError, SystemError, RecursionError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == attr:
            bases = [ast.unparse(base) for base in node.bases]
            if any(base.split(".")[-1].endswith("Backend") for base in bases):
                return "plugin"
            methods = {
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            return "python" if "execute" in methods else ""
    return ""


def _site_dirs() -> list[str]:
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _pth_files(sitedir: str) -> dict[str, int]:
    try:
        names = os.listdir(sitedir)
    except OSError:
        return {}
    found: dict[str, int] = {}
    for name in names:
        if name.endswith(".pth") and not name.startswith("."):
            try:
                found[name] = os.stat(os.path.join(sitedir, name)).st_mtime_ns
            except OSError:
                continue
    return found


class SitePackages:
    """The ``site-packages`` folders of this interpreter, as the import system must see them.

    Created when the server starts: the ``.pth`` files present then were read by the
    interpreter at its own startup (or by an earlier :meth:`refresh`). Each :meth:`refresh`
    reads the ``.pth`` files added or rewritten since, with the interpreter's own
    ``site.addpackage`` (path lines join ``sys.path`` once; ``import`` lines run, as at
    startup), and drops the import system's caches of folder listings and distribution metadata.
    Backends load in worker threads, so :meth:`refresh` takes a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen = {d: _pth_files(d) for d in _site_dirs()}

    def refresh(self) -> list[str]:
        """Make packages installed since the last look importable; returns the ``.pth`` read."""
        with self._lock:
            read = self._refresh()
        for path in read:
            log.info("read %s (installed after the server started)", Path(path).name)
        return read

    def _refresh(self) -> list[str]:
        read: list[str] = []
        for sitedir in _site_dirs():
            before = self._seen.get(sitedir)
            now = _pth_files(sitedir)
            self._seen[sitedir] = now
            if before is None:  # a site folder that did not exist at startup (user site)
                if sitedir not in sys.path:
                    site.addsitedir(sitedir)
                    read.extend(os.path.join(sitedir, name) for name in sorted(now))
                continue
            for name in sorted(now):
                if before.get(name) == now[name]:
                    continue
                # known_paths=None: addpackage skips path lines already on sys.path itself.
                site.addpackage(sitedir, name, None)
                read.append(os.path.join(sitedir, name))
        importlib.invalidate_caches()
        return read

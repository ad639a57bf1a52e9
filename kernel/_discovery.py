"""Which backends are installed, read from package metadata without importing any of them.

Kept apart from :mod:`kernel.registry` (which imports anyio and the plugin contract) so that
``kernel backends`` and ``kernel --help`` stay light: nothing here imports more than the
standard library.

It also makes a plugin installed *after* the server started findable (hot-add): a wheel lands in
a ``site-packages`` folder already on ``sys.path``, where only the import system's caches hide
it; an editable install adds a ``.pth`` file, which the interpreter reads only at startup.
:class:`SitePackages` re-reads the ``.pth`` files that appeared or changed since it last looked.
"""

from __future__ import annotations

import importlib
import logging
import os
import site
import sys
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from kernel.errors import KernelError, Status

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECT_DISTRIBUTIONS",
    "BackendInfo",
    "SitePackages",
    "backend_entry_points",
    "installed_backends",
    "missing_backend_message",
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

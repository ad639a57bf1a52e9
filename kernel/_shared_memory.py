"""System shared memory regions registered by clients (Triton's shared-memory extension).

A client creates a POSIX shared memory object (``/dev/shm/<key>``), registers part of it under a
name, and then names the region (with an offset and size) instead of sending tensor bytes. Reads
and writes go straight to the mapping; every access is bounds-checked against the registered
part, so a bad offset or size is refused with a clear error, never an out-of-bounds access.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
import threading
from dataclasses import dataclass

from kernel._errors import KernelError, Status

__all__ = ["Region", "SystemSharedMemory"]

_SHM_DIR = "/dev/shm"


@dataclass(frozen=True, slots=True)
class Region:
    """A registered region: ``byte_size`` bytes at ``offset`` of shared memory object ``key``."""

    name: str
    key: str
    offset: int
    byte_size: int


class _Mapping:
    __slots__ = ("mm", "region")

    def __init__(self, region: Region, mm: mmap.mmap) -> None:
        self.region = region
        self.mm = mm


class SystemSharedMemory:
    """The regions registered on one server, by name. Thread-safe."""

    def __init__(self) -> None:
        self._regions: dict[str, _Mapping] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map ``byte_size`` bytes at ``offset`` of ``/dev/shm/<key>`` as region ``name``.

        The key names one object directly in ``/dev/shm``: no path separator, no ``..``, no
        symbolic link followed, a regular file only -- a client cannot map other files.

        :raises KernelError: ``ALREADY_EXISTS`` for a taken name, ``INVALID_ARG`` for a bad
            name, key, offset or size, and ``INTERNAL`` (Triton's answer, which clients test
            for) when the key does not exist.
        """
        if not name or offset < 0 or byte_size <= 0:
            raise KernelError(
                Status.INVALID_ARG,
                f"failed to register shared memory region '{name}': invalid offset {offset}"
                f" or byte size {byte_size}"
                if name
                else "failed to register shared memory region: the region name is empty",
            )
        bare = key[1:] if key.startswith("/") else key
        if not bare or "/" in bare or bare in (".", "..") or not key.isprintable():
            raise KernelError(
                Status.INVALID_ARG,
                f"failed to register shared memory region '{name}': bad key {key!r}",
            )
        path = os.path.join(_SHM_DIR, bare)
        with self._lock:
            if name in self._regions:
                raise KernelError(
                    Status.ALREADY_EXISTS,
                    f"shared memory region '{name}' already in manager",
                )
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR):  # links are never followed
                    raise KernelError(
                        Status.INVALID_ARG,
                        f"failed to register shared memory region '{name}': '{key}' is not a"
                        " shared memory object",
                    ) from None
                raise KernelError(
                    Status.INTERNAL,
                    f"Unable to open shared memory region: '{key}' ({exc.strerror})",
                ) from exc
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise KernelError(
                        Status.INVALID_ARG,
                        f"failed to register shared memory region '{name}': '{key}' is not a"
                        " shared memory object",
                    )
                size = info.st_size
                if offset + byte_size > size:
                    raise KernelError(
                        Status.INVALID_ARG,
                        f"failed to register shared memory region '{name}': offset {offset} +"
                        f" byte size {byte_size} exceeds the {size} bytes of '{key}'",
                    )
                try:
                    mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                except (OSError, ValueError) as exc:
                    raise KernelError(
                        Status.INTERNAL,
                        f"failed to register shared memory region '{name}': cannot map"
                        f" '{key}': {exc}",
                    ) from exc
            finally:
                os.close(fd)
            self._regions[name] = _Mapping(Region(name, key, offset, byte_size), mm)

    def unregister(self, name: str) -> None:
        """Forget region ``name`` (a no-op for an unknown name, as in Triton)."""
        with self._lock:
            mapping = self._regions.pop(name, None)
        if mapping is not None:
            _close(mapping.mm)

    def unregister_all(self) -> None:
        with self._lock:
            mappings = list(self._regions.values())
            self._regions.clear()
        for mapping in mappings:
            _close(mapping.mm)

    def status(self, name: str = "") -> list[Region]:
        """Every region, or the one named (``NOT_FOUND`` when it is not registered)."""
        with self._lock:
            if not name:
                return [m.region for m in self._regions.values()]
            mapping = self._regions.get(name)
        if mapping is None:
            raise KernelError(
                Status.NOT_FOUND, f"Unable to find system shared memory region: '{name}'"
            )
        return [mapping.region]

    def view(self, name: str, offset: int, byte_size: int) -> memoryview:
        """A writable view of ``byte_size`` bytes at ``offset`` inside region ``name``.

        :raises KernelError: ``INVALID_ARG`` for an unknown region or a range outside it.
        """
        with self._lock:
            mapping = self._regions.get(name)
        if mapping is None:
            raise KernelError(Status.NOT_FOUND, f"Unable to find shared memory region: '{name}'")
        region = mapping.region
        if offset < 0 or byte_size < 0 or offset + byte_size > region.byte_size:
            raise KernelError(
                Status.INVALID_ARG,
                f"Invalid offset + byte size for shared memory region: '{name}'"
                f" (offset {offset}, byte size {byte_size}, region size {region.byte_size})",
            )
        start = region.offset + offset
        return memoryview(mapping.mm)[start : start + byte_size]


def _close(mm: mmap.mmap) -> None:
    # A view still exported (a request in flight reads it) keeps the mapping alive; it is
    # released when that view goes away.
    with contextlib.suppress(BufferError):
        mm.close()

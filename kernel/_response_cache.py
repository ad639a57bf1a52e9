"""Triton's response cache (``--cache-config local,size=N``, ``response_cache { enable: true }``).

One in-process LRU per server, bounded in bytes: the sum of the cached outputs' data (plus a
fixed per-entry overhead) never exceeds ``size``; inserting evicts the least recently used
entries first, and a response larger than the whole cache is not cached. The key is a hash of
what decides the answer, as Triton's: the model's name and version, every input (name, datatype,
shape and bytes, by name) and the requested outputs. Only successful, final responses of
non-decoupled, non-sequence models are cached (a decoupled model that enables the cache fails
to load, as in Triton); a hit answers without touching the model, a miss runs it. An ensemble
that enables it caches its own final answers; its steps cache theirs if they enable it.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kernel._inference import InferenceRequest, InferenceResponse, ParameterValue
from kernel.tensors import datatype_of

if TYPE_CHECKING:
    from kernel._models import ModelVersion

__all__ = ["CacheStatistics", "ResponseCache", "ResponseCaching", "parse_cache_config"]

ENTRY_OVERHEAD_BYTES = 64
"""What an entry costs besides its output data (its key and bookkeeping), so a flood of empty
responses is bounded too."""


@dataclass(slots=True)
class CacheStatistics:
    """Server-wide figures (``nv_cache_*``)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    lookups: int = 0
    lookup_ns: int = 0
    insertions: int = 0
    insertion_ns: int = 0


@dataclass(frozen=True, slots=True)
class _Entry:
    outputs: dict[str, npt.NDArray[Any]]
    parameters: dict[str, ParameterValue]
    size: int


def parse_cache_config(settings: dict[str, dict[str, str]]) -> int | None:
    """The byte size of the ``local`` cache from ``--cache-config`` settings, else ``None``.

    :raises ValueError: for a cache other than ``local`` or a size that is not a whole number.
    """
    for name in settings:
        if name != "local":
            raise ValueError(
                f"cache '{name}' is not available: only the in-process 'local' cache is"
            )
    local = settings.get("local")
    if local is None:
        return None
    size = local.get("size")
    if size is None or not size.isdigit():
        raise ValueError(f"--cache-config local,size=<bytes> needs a whole number, got {size!r}")
    return int(size)


def _copy(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A private, read-only copy: what a backend returned may be a view of memory it reuses."""
    copied = np.array(array, copy=True)
    copied.flags.writeable = False
    return copied


def _nbytes(array: npt.NDArray[Any]) -> int:
    if array.dtype == np.dtype(np.object_):
        return sum(len(x) if isinstance(x, bytes | str) else 8 for x in array.reshape(-1))
    return int(array.nbytes)


class ResponseCache:
    """The LRU itself. Thread-safe (a lock around each operation), and never blocks for long:
    hashing happens outside the lock."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.used = 0
        self.stats = CacheStatistics()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(request: InferenceRequest, version: int) -> bytes:
        """Triton's key: model, version, inputs (by name) and requested outputs."""
        digest = hashlib.blake2b(digest_size=32)
        digest.update(request.model_name.encode() + b"\0" + str(version).encode() + b"\0")
        for name in sorted(request.inputs):
            array = request.inputs[name]
            digest.update(name.encode() + b"\0" + datatype_of(array).encode() + b"\0")
            digest.update(repr(array.shape).encode())
            if array.dtype == np.dtype(np.object_):
                for item in array.reshape(-1):
                    data = item.encode() if isinstance(item, str) else bytes(item)
                    digest.update(len(data).to_bytes(8, "little") + data)
            else:
                digest.update(np.ascontiguousarray(array).data)
        for name in sorted(request.requested_output_names):
            digest.update(b"\1" + name.encode())
        return digest.digest()

    def lookup(self, key: bytes) -> InferenceResponse | None:
        """The cached response for ``key`` (now most recently used), or ``None``."""
        start = time.monotonic_ns()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.stats.hits += 1
            else:
                self.stats.misses += 1
            self.stats.lookups += 1
            self.stats.lookup_ns += time.monotonic_ns() - start
        if entry is None:
            return None
        return InferenceResponse(outputs=dict(entry.outputs), parameters=dict(entry.parameters))

    def insert(self, key: bytes, response: InferenceResponse) -> bool:
        """Cache a successful response; ``False`` when it is larger than the whole cache."""
        start = time.monotonic_ns()
        outputs = {name: _copy(array) for name, array in response.outputs.items()}
        size = ENTRY_OVERHEAD_BYTES + sum(_nbytes(a) for a in outputs.values())
        if size > self.capacity:
            return False
        entry = _Entry(outputs, dict(response.parameters), size)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.used -= old.size
            while self._entries and self.used + size > self.capacity:
                _, evicted = self._entries.popitem(last=False)
                self.used -= evicted.size
                self.stats.evictions += 1
            self._entries[key] = entry
            self.used += size
            self.stats.insertions += 1
            self.stats.insertion_ns += time.monotonic_ns() - start
        return True


class ResponseCaching:
    """Where the server meets the cache: answers hits before a request is queued, and keeps
    the final responses of misses. Statistics go to the model (``cache_hit``/``cache_miss``:
    count and lookup (+ insertion) time, as Triton reports them) and to the cache."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache
        self._misses: weakref.WeakKeyDictionary[InferenceRequest, tuple[bytes, int]] = (
            weakref.WeakKeyDictionary()
        )

    @staticmethod
    def enabled(version: ModelVersion) -> bool:
        """Whether ``version`` asks for the cache and can use it: a decoupled model cannot (its
        load fails), nor a sequence model, whose answers depend on state the key misses."""
        config = version.config
        setting = config.response_cache
        return bool(
            setting is not None
            and setting.enable
            and not version.decoupled
            and config.sequence_batching is None
        )

    def answer(self, version: ModelVersion, request: InferenceRequest) -> bool:
        """Answer ``request`` (validated, not yet queued) from the cache; ``True`` on a hit."""
        if not self.enabled(version):
            return False
        start = time.monotonic_ns()
        key = self.cache.key(request, version.version)
        cached = self.cache.lookup(key)
        if cached is None:
            self._misses[request] = (key, time.monotonic_ns() - start)
            return False
        request.respond(cached.outputs, parameters=cached.parameters)
        version.stats.cache_hit.add(time.monotonic_ns() - start)
        return True

    def remember(
        self, version: ModelVersion, request: InferenceRequest, response: InferenceResponse
    ) -> None:
        """Keep the final, successful response of a request that missed."""
        if not response.final:
            return
        missed = self._misses.pop(request, None)
        if missed is None or response.error is not None:
            return
        key, lookup_ns = missed
        start = time.monotonic_ns()
        self.cache.insert(key, response)
        version.stats.cache_miss.add(lookup_ns + time.monotonic_ns() - start)

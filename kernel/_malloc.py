"""glibc's malloc tuned for a server that moves large tensors through Python buffers.

A request's tensor bytes pass through buffers of a few hundred KB (the reassembled gRPC
message, an HTTP body, the copy a model process takes out of shared memory). glibc serves
blocks above its mmap threshold (128 KB at start) with a fresh ``mmap`` and returns the heap's
free top to the system past its trim threshold (twice the mmap threshold), so a request that
frees such buffers gives their pages back and the next one faults them in again, zeroed: on this
project's 2-core machine a 196 KB input cost about 80 us of a Python model process's CPU per
request (bench/RESULTS.md, issue 22). Raising both thresholds keeps the pages in the process.
glibc's own dynamic threshold would settle at most at 32 MB for mmap; these are the same bounds,
fixed from the start.

Settings a user gives glibc (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
``GLIBC_TUNABLES`` naming ``glibc.malloc``) win: nothing is changed then.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import MutableMapping

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

MMAP_THRESHOLD = 32 << 20
"""Blocks from this size up get their own mapping (glibc's largest dynamic threshold)."""
TRIM_THRESHOLD = 64 << 20
"""Free heap top kept before it is returned to the system (twice the mmap threshold)."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
}


def tune_malloc(environ: MutableMapping[str, str] | None = None) -> bool:
    """Raise glibc's thresholds in this process (``mallopt``) and, through ``environ``
    (``os.environ`` by default), in the processes it starts (Python model processes read
    the variables when they start, whatever their interpreter).

    Returns whether this process's allocator was tuned (False: not glibc, or the user's
    settings were found and left alone).
    """
    env = os.environ if environ is None else environ
    if any(name in env for name in _ENV) or "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
        return False
    env.update(_ENV)
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    )

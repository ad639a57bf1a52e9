"""Inflating gzip and deflate data with a size bound: both frontends' compressed requests.

Each frontend words its own errors (Triton's HTTP and gRPC answers differ); the zlib mechanics,
the bound (never inflate past ``limit + 1`` bytes, so a small body cannot expand without end)
and the truncation check live here once.
"""

from __future__ import annotations

import zlib

__all__ = ["InflateError", "TooLargeError", "inflate"]

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class InflateError(Exception):
    """The data does not inflate (corrupt or truncated); the message says how."""


class TooLargeError(Exception):
    """The data inflates past the limit; ``size`` is how far it got (``limit + 1``)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def inflate(encoding: str, data: bytes | bytearray | memoryview, limit: int) -> bytes:
    """``data`` inflated (``encoding`` is ``"gzip"`` or ``"deflate"``, zlib-wrapped), at most
    ``limit`` bytes.

    :raises InflateError: corrupt or truncated data.
    :raises TooLargeError: more than ``limit`` bytes once inflated.
    """
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InflateError(str(exc)) from None
    if len(out) > limit:
        raise TooLargeError(len(out))
    if not inflater.eof:
        raise InflateError("truncated data")
    return out

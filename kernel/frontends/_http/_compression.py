"""gzip and deflate bodies, as tritonclient sends and accepts them.

Requests: ``Content-Encoding: gzip|deflate`` bodies are inflated before parsing (an unknown
encoding is refused with Triton's ``UNSUPPORTED`` error). Responses: ``Accept-Encoding`` is
weighed as Triton weighs it (the best ``q`` among identity, gzip and deflate wins) and the
inference response body is compressed accordingly.
"""

from __future__ import annotations

import zlib

from kernel._errors import KernelError, Status
from kernel.frontends._inflate import InflateError, TooLargeError, inflate

__all__ = ["compress", "decompress", "response_encoding"]

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS


def decompress(encoding: str, body: bytes | bytearray | memoryview, limit: int) -> bytes:
    """Inflate ``body`` sent with ``Content-Encoding: encoding`` (at most ``limit`` bytes out).

    :raises KernelError: ``UNSUPPORTED`` for an encoding other than gzip/deflate/identity,
        ``INVALID_ARG`` for a body that does not inflate, ``TOO_LARGE`` (413) for one that
        inflates past ``limit``.
    """
    if encoding not in ("gzip", "deflate"):
        raise KernelError(Status.UNSUPPORTED, "Unsupported compression type")
    try:
        return inflate(encoding, body, limit)
    except InflateError as exc:
        raise KernelError(
            Status.INVALID_ARG, f"failed to decompress the {encoding} request body: {exc}"
        ) from None
    except TooLargeError:
        raise KernelError(
            Status.TOO_LARGE,
            f"the decompressed request body is larger than the {limit} bytes allowed",
        ) from None


def response_encoding(accept_encoding: str) -> str:
    """The encoding to answer with: ``"gzip"``, ``"deflate"`` or ``"identity"``."""
    best, weight = "identity", 0.0
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip()
        if name not in ("identity", "gzip", "deflate"):
            continue
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
        if q > weight:
            best, weight = name, q
    return best


def compress(encoding: str, body: bytes) -> bytes:
    """``body`` compressed with ``encoding`` (``"gzip"`` or ``"deflate"``)."""
    wbits = _GZIP_WBITS if encoding == "gzip" else _ZLIB_WBITS
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return compressor.compress(body) + compressor.flush()

"""What the sans-IO HTTP/2 core (:mod:`._connection`) hands up, and the HTTP semantics it checks.

:class:`Events` is the listener the core reports to (the gRPC adapter implements it; the tests
record it). :func:`request_error` holds RFC 9113 section 8.3's rules for a request header list
(field names and values were checked by the HPACK decoder as it decoded them).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Events", "request_error"]

_CONNECTION_SPECIFIC = (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding")
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority"))
_SPECIAL = frozenset((*_CONNECTION_SPECIFIC, b"upgrade", b"te"))


class Events(Protocol):
    """What the connection reports; calls happen inside :meth:`Connection.receive` (and
    :meth:`Events.sent` inside the send methods)."""

    def request(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        """A new stream with a valid request header list."""

    def headers_too_large(self, stream_id: int, size: int) -> None:
        """A new stream whose header list exceeds the limits: answer it (the stream is open)."""

    def data(self, stream_id: int, data: memoryview, end_stream: bool) -> None:
        """Request data (``data`` may be empty when only the end of the stream is reported, e.g.
        by trailers). The application calls :meth:`Connection.consume` as it uses it."""

    def reset(self, stream_id: int) -> None:
        """The stream is gone: reset by the client, or by us for a stream error."""

    def sent(self, stream_id: int) -> None:
        """Every DATA queued on the stream went out (its window had room)."""

    def ping_ack(self, opaque: bytes) -> None:
        """The client acknowledged one of our PINGs."""

    def terminated(self, code: int, reason: str) -> None:
        """A connection error: GOAWAY is queued, nothing more is read."""


def request_error(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request header list is malformed (RFC 9113 section 8.3.1), or ``None``.

    Names are non-empty and lowercase here (the HPACK decoder checked them).
    """
    pseudo: dict[bytes, bytes] = {}
    count = 0
    for name, value in headers:  # pseudo-headers come first
        if name[0] != 0x3A:
            break
        if name not in _REQUEST_PSEUDO:
            return f"unknown pseudo-header {name!r}"
        if name in pseudo:
            return f"duplicate {name.decode()}"
        pseudo[name] = value
        count += 1
    for index in range(count, len(headers)):
        name, value = headers[index]
        if name[0] == 0x3A:
            return "pseudo-header after a regular header"
        if name in _SPECIAL:
            if name != b"te":
                return f"connection-specific header {name!r}"
            if value != b"trailers":
                return "te other than trailers"
    if b":method" not in pseudo or b":scheme" not in pseudo or not pseudo.get(b":path"):
        return "missing :method, :scheme or :path"
    return None

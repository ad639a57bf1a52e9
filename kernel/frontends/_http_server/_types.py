"""What HTTP/1.1 endpoints exchange with their transport: requests in, replies out, and limits.

These live below both the REST app (:mod:`kernel.frontends._http`) and the metrics endpoint
(:mod:`kernel.frontends._metrics`), so the transport that moves the bytes depends on neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kernel._options import ServerOptions

__all__ = ["Cancellable", "HttpLimits", "HttpRequest", "Reply", "RequestHandler", "StreamingReply"]


class Cancellable(Protocol):
    """Work a request started (an inference) that the transport cancels if the client leaves."""

    def cancel(self) -> None: ...


class HttpRequest:
    """One HTTP request as an app sees it; ``headers`` have lower-case names.

    A ``HEAD`` request reaches the app as ``GET``: the transport sends the reply's headers
    (``Content-Length`` included) without its body.
    """

    __slots__ = ("body", "headers", "method", "path", "watch")

    def __init__(
        self, method: str, path: str, headers: dict[str, str], body: bytes | bytearray
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.watch: Cancellable | None = None
        """The inference in flight for this request: the transport cancels it when the
        client disconnects."""


class Reply:
    """Status, headers and body buffers (written in order, never joined by the app)."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: list[bytes | memoryview],
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def length(self) -> int:
        total = 0
        for b in self.body:  # a loop, without a memoryview per bytes: once per reply
            kind = type(b)
            if kind is bytes:
                total += len(b)
            elif kind is memoryview:
                total += b.nbytes  # type: ignore[union-attr]
            else:
                total += memoryview(b).nbytes
        return total


class StreamingReply:
    """A reply whose body is produced while it is sent: Server-Sent Events, token streams.

    The transport sends the status and headers at once, then each chunk as the iterator yields
    it, with ``Transfer-Encoding: chunked`` (HTTP/1.0 clients get the raw bytes and the end of
    the connection as the end of the body). It awaits the socket's drain before asking for the
    next chunk, so a client that reads slowly slows the producer down: buffering per request is
    the socket's write buffer plus one chunk. The iterator is always closed (``aclose``): after
    its last chunk, and at once when the client disconnects, when the ``request.watch`` it
    registered is cancelled too. A ``HEAD`` request gets the headers only (the iterator is
    closed unread). Empty chunks are skipped (an empty chunk would end a chunked body).

    If the iterator raises, the body is cut short (the connection closes without the final
    chunk, so the client sees an incomplete reply rather than a clean end): report errors
    in-band (an SSE ``error`` event) before that.
    """

    __slots__ = ("chunks", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        chunks: AsyncIterator[bytes],
    ) -> None:
        self.status = status
        self.headers = headers
        """Never ``Content-Length`` or ``Transfer-Encoding``: the transport sets framing."""
        self.chunks = chunks


class RequestHandler(Protocol):
    """What a connection hands complete requests to (the REST app, the metrics endpoint)."""

    max_body: int
    """Requests with a larger body are refused from their headers."""

    async def handle(self, request: HttpRequest) -> Reply | StreamingReply:
        """The reply to ``request``; must not raise."""
        ...


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one HTTP/1.1 client may cost: sizes (bytes), counts and timeouts (seconds).

    Every buffer a client can grow is bounded by one of these, and every wait on a client by a
    timeout, so slow or hostile clients cannot hold memory or connection slots.
    """

    max_body: int = 64 * 1024 * 1024
    """Larger request bodies are refused with 400 (tritonserver's ``--http-max-input-size``)."""
    max_url: int = 8 * 1024
    """Longer request targets are refused with 414."""
    max_header_bytes: int = 64 * 1024
    """Larger header sections (request target and header fields) are refused with 431."""
    max_headers: int = 100
    """Requests with more header fields are refused with 431."""
    header_timeout: float = 30.0
    """A request whose header section has not fully arrived this long after its first byte is
    answered 408 and the connection closed."""
    idle_timeout: float = 75.0
    """A keep-alive connection with nothing to do this long is closed; a request body (or a
    reader of our response) that makes no progress this long ends the connection too."""

    @classmethod
    def from_options(cls, options: ServerOptions, *, max_body: int | None = None) -> HttpLimits:
        """The limits ``kernel serve``'s flags set (``max_body`` overrides the input size)."""
        return cls(
            max_body=options.http_max_input_bytes if max_body is None else max_body,
            max_url=options.http_max_url_bytes,
            max_header_bytes=options.http_max_header_bytes,
            max_headers=options.http_max_header_count,
            header_timeout=options.http_header_timeout_secs,
            idle_timeout=options.http_idle_timeout_secs,
        )
